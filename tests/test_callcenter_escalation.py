"""Escalation hysteresis (streamlogic/escalation.py) and the call's overall sentiment
(streamlogic/call_summary.py): pure logic, the same code the evaluation and the monitor run."""

from __future__ import annotations

import numpy as np
import pytest

from streamlogic.call_summary import overall_sentiment, overall_weights
from streamlogic.escalation import EscalationRule
from streamlogic.event_lifecycle import EventLifecycle, ScoredWindow

RULE = EscalationRule(open_threshold=0.6, close_threshold=0.4, open_after=3, close_after=4)


def _run(life, scores, asset="call-1"):
    changes = []
    for k, s in enumerate(scores):
        changes += [(k, c.change) for c in life.update(ScoredWindow(asset, 100.0 + k, 102.0 + k, s, 0.6, "m"))]
    return changes


# an angry customer, whose estimated frustration dips whenever the agent answers
ANGRY = [0.2, 0.7, 0.8, 0.75, 0.5, 0.45, 0.55, 0.8, 0.9, 0.3, 0.5, 0.85, 0.7, 0.7]


def test_one_event_per_episode_where_one_threshold_flaps():
    flapping = EventLifecycle(open_after=3, close_after=2)
    assert sum(c == "opened" for _, c in _run(flapping, ANGRY)) > 1  # the single-threshold lifecycle re-opens
    changes = _run(RULE.lifecycle(), ANGRY)
    assert [c for _, c in changes if c in ("opened", "closed")] == ["opened"]
    assert changes[0][0] == 3  # after 3 windows at or over 0.6


def test_closes_only_after_enough_windows_below_the_lower_threshold():
    calm_again = [0.7, 0.7, 0.7, 0.35, 0.35, 0.35, 0.5, 0.35, 0.35, 0.35, 0.35, 0.1]
    changes = _run(RULE.lifecycle(), calm_again)
    # the 0.5 (between the thresholds) restarts the count: 4 below from index 7 close it at index 10
    assert [(k, c) for k, c in changes if c in ("opened", "closed")] == [(2, "opened"), (10, "closed")]


def test_between_the_thresholds_never_opens_and_state_round_trips():
    life = RULE.lifecycle()
    assert _run(life, [0.59] * 20) == []
    _run(life, [0.7, 0.7, 0.7, 0.1])
    restored = RULE.lifecycle()
    restored.restore("call-1", life.state("call-1"))  # JSON state, as the monitor commits it
    assert [c for _, c in _run(restored, [0.1, 0.1, 0.1])] == ["closed"]


def test_rule_is_read_from_the_monitor_settings_and_validated():
    from services.settings import MonitorSettings

    cfg = MonitorSettings(escalation_threshold=0.7, escalation_close_threshold=0.3, escalation_open_after=2,
                          escalation_close_after=6)
    assert EscalationRule.from_settings(cfg) == EscalationRule(0.7, 0.3, 2, 6)
    with pytest.raises(ValueError):
        EscalationRule(open_threshold=0.5, close_threshold=0.6)


def test_overall_follows_how_the_call_ends():
    neg, pos = [0.8, 0.15, 0.05], [0.05, 0.25, 0.7]
    # a long angry middle and a satisfied end: the mean says negative, the call ended positive
    probs = [neg] * 40 + [pos] * 10
    assert np.mean(probs, axis=0).argmax() == 0
    assert overall_sentiment(probs) == 2
    assert overall_sentiment([pos] * 40 + [neg] * 10) == 0
    w = overall_weights(20)
    assert w.sum() == pytest.approx(1.0) and (np.diff(w) > 0).all()
    with pytest.raises(ValueError):
        overall_sentiment([])
