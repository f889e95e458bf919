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


def test_windows_that_do_not_hear_the_customer_hold_the_counts():
    """The agent's answers between angry turns (windows not judged: the customer is silent) neither
    break the run that opens an escalation nor count towards closing it; a station's lifecycle
    counts them as under the threshold."""
    def run(life, windows):
        changes = []
        for k, (score, heard) in enumerate(windows):
            w = ScoredWindow("call-1", 100.0 + k, 102.0 + k, score, 0.6, "m", judged=heard)
            changes += [(k, c.change) for c in life.update(w) if c.change != "updated"]
        return changes

    # two angry windows, the agent's answer (model guesses low), one more angry window
    angry_turns = [(0.7, True), (0.75, True), (0.1, False), (0.1, False), (0.8, True)]
    assert run(EventLifecycle(3, 4, 0.4 / 0.6), angry_turns) == []  # "under": the answer breaks the run
    life = RULE.lifecycle()
    assert run(life, angry_turns) == [(4, "opened")]
    # the customer then listens for a long time: nothing closes until four heard windows are calm
    assert run(life, [(0.1, False)] * 20 + [(0.2, True)] * 3) == []
    assert run(life, [(0.2, True)]) == [(0, "closed")]


def test_a_window_counts_when_it_hears_enough_of_the_customer():
    assert RULE.hears_customer(None)  # a mono call: every window counts
    assert RULE.hears_customer({"agent": 0.0, "customer": 0.5})
    assert not RULE.hears_customer({"agent": 1.8, "customer": 0.4})


def test_speech_is_measured_per_channel_from_the_log_mel():
    """`speech_seconds` from the featurizer's own per-channel log-mel: 1 s of a -20 dBFS tone on the
    customer's channel in a 2 s window, a -60 dBFS line hiss on both."""
    from models.features import CHANNELS, FeatureConfig, Featurizer, speech_seconds
    from models.inputs import WindowInputs

    cfg = FeatureConfig(max_frames=2, sample_rate=8000, n_fft=256, hop_length=160, n_mels=40, f_max=4000.0)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 8000
    hiss = lambda: rng.normal(0, 10 ** (-60 / 20), 16000).astype(np.float32)  # noqa: E731
    customer = hiss()
    customer[:8000] += (np.sqrt(2) * 10 ** (-20 / 20) * np.sin(2 * np.pi * 440 * t[:8000])).astype(np.float32)
    agent = hiss()
    win = WindowInputs("call-1", 0.0, 2.0, audio=[(0.0, (agent + customer) / 2)], sample_rate=8000,
                       channels={"agent": [(0.0, agent)], "customer": [(0.0, customer)]})
    f = Featurizer(cfg).featurize_many([win])[0]
    assert f.channel_mel is not None and f.channel_mask is not None
    speech = dict(zip(CHANNELS, speech_seconds(f.channel_mel, f.channel_mask, cfg)))
    assert speech["customer"] == pytest.approx(1.0, abs=0.06) and speech["agent"] == 0.0
    # the level: the same tone 30 dB down is line noise, not speech
    quiet = speech_seconds(f.channel_mel[1] - np.log(1000.0), f.channel_mask[1], cfg)
    assert float(quiet) == 0.0


def test_a_long_silence_of_the_customer_counts_as_calm():
    """Up to `silence_after` windows without the customer are held; beyond that their silence counts
    as calm, so an escalation closes though the customer never speaks again."""
    rule = EscalationRule(open_threshold=0.6, close_threshold=0.4, open_after=3, close_after=4, silence_after=5)
    life = rule.lifecycle()
    changes = []
    for k, (score, heard) in enumerate([(0.8, True)] * 3 + [(0.1, False)] * 12):
        changes += [(k, c.change) for c in life.update(ScoredWindow("call-1", 100.0 + k, 102.0 + k, score, 0.6, "m",
                                                                    judged=heard)) if c.change != "updated"]
    # opened at the 3rd window; 5 silent windows held (3..7), then 4 counted as calm (8..11)
    assert changes == [(2, "opened"), (11, "closed")]


def test_a_call_that_ends_mid_escalation_closes_it_and_a_count_starts_again():
    """`stop` (the monitor's aligner saw the call's records stop): the open escalation closes at
    its last window over the threshold; an asset without an open event only loses its count."""
    life = RULE.lifecycle()
    opened = _run(life, [0.7, 0.7, 0.7, 0.7, 0.3])
    assert [c for _, c in opened] == ["opened"]
    [closed] = life.stop("call-1")
    assert closed.change == "closed" and closed.data.status == "closed"
    assert closed.data.closed_by == "stream_stopped"  # not "the customer calmed down"
    assert closed.data.end_time.timestamp() == 102.0 + 3  # the window [103, 105) was its last over 0.6
    assert life.stop("call-1") == [] and life.stop("never-seen") == []
    _run(life, [0.7, 0.7], asset="call-2")
    assert life.stop("call-2") == []  # two windows over: not an event, and the count starts again
    assert [c for _, c in _run(life, [0.7, 0.7], asset="call-2")] == []
    life = RULE.lifecycle()
    changes = [c.data for k, s in enumerate([0.7] * 3 + [0.1] * 4)
               for c in life.update(ScoredWindow("call-3", 100.0 + k, 102.0 + k, s, 0.6, "m"))]
    assert [(d.status, d.closed_by) for d in changes] == [("open", None), ("closed", "scores")]
