"""Profiles: the registry the CLI picks from, and what a window means under each."""

from __future__ import annotations

import pytest

from models.inputs import WindowInputs
from schemas.envelope import LogPayload
from schemas.errors import ConfigError
from services.profiles import PROFILES, get_profile
from services.settings import MonitorSettings
from streamlogic.event_lifecycle import EventLifecycle
from tests.support.scorers import BrightnessScore
from tests.test_cli_errors import fusionwatch, one_sentence


def _score(**kw) -> BrightnessScore:
    return BrightnessScore(score=kw.pop("score", 2.0), threshold=kw.pop("threshold", 1.5), raw=0.0,
                           present={"frames": True, "audio": True, "logs": True}, **kw)


def _window() -> WindowInputs:
    win = WindowInputs(asset="A", start=10.0, end=12.0)
    win.logs.extend([(10.5, LogPayload(msg="belt ok", level="INFO")),
                     (11.0, LogPayload(msg="jam", level="ERROR", code="E17", speaker="customer"))])
    return win


def test_the_registry_names_every_profile_and_refuses_others():
    assert set(PROFILES) == {"factory", "callcenter"}
    assert all(p.summary and p.name == name for name, p in PROFILES.items())
    with pytest.raises(ConfigError, match="unknown profile 'warehouse'; use one of factory, callcenter"):
        get_profile("warehouse")


def test_a_station_is_judged_against_its_threshold_and_guard():
    policy = get_profile("factory").window_policy(MonitorSettings())
    assert type(policy.lifecycle()) is EventLifecycle and policy.reports_baseline
    watching = policy.judge(_window(), _score(), 1.5)
    assert (watching.score, watching.threshold, watching.learning, watching.judged) == (2.0, 1.5, False, True)
    # while the station learns its baseline, an operator's override is scaled by the guard as the model's is
    learning = policy.judge(_window(), _score(baseline="learning", guard=2.0, judged=False), 1.2)
    assert (learning.threshold, learning.learning, learning.judged) == (2.4, True, False)
    assert policy.evidence_lines(_window()) == ["jam"]  # warnings and coded lines only
    assert policy.call_point(_window(), _score(frustration=0.9, sentiment={"negative": 1.0})) is None


def test_a_call_is_judged_on_the_customers_frustration():
    cfg = MonitorSettings()
    policy = get_profile("callcenter").window_policy(cfg)
    life = policy.lifecycle()  # the event lifecycle with the escalation's two thresholds
    assert life.close_ratio == pytest.approx(cfg.escalation_close_threshold / cfg.escalation_threshold)
    assert (life.open_after, life.close_after) == (cfg.escalation_open_after, cfg.escalation_close_after)
    assert not policy.reports_baseline
    angry = policy.judge(_window(), _score(frustration=0.8, sentiment={"negative": 0.9}), 1.5)
    assert (angry.score, angry.threshold, angry.kind, angry.judged) == (0.8, cfg.escalation_threshold, "escalation", True)
    # a stereo window where only the agent speaks is scored, not judged: the escalation holds its counts
    answer = policy.judge(_window(), _score(frustration=0.1, sentiment={"neutral": 0.9},
                                            speech_s={"agent": 1.9, "customer": 0.0}), 1.5)
    assert not answer.judged
    point = policy.call_point(_window(), _score(frustration=0.1, sentiment={"neutral": 0.9},
                                                speech_s={"agent": 1.9, "customer": 0.0}))
    assert point is not None and not point.heard
    assert policy.evidence_lines(_window()) == ["belt ok", "customer: jam"]  # everything said, by whom
    point = policy.call_point(_window(), _score(frustration=0.8, sentiment={"negative": 0.9}))
    assert point is not None and (point.start, point.time, point.frustration) == (10.0, 12.0, 0.8)


def test_the_call_centre_profile_refuses_the_factorys_training_options(tmp_path):
    line = one_sentence(fusionwatch(tmp_path, "train", "--profile", "callcenter", "--since", "2026-01-05T06:00:00Z",
                                    "--budget", "2"))
    assert "--budget, --since do not apply to the callcenter profile" in line
    line = one_sentence(fusionwatch(tmp_path, "eval", "--profile", "callcenter", "--per-asset"))
    assert "--per-asset does not apply to the callcenter profile" in line
