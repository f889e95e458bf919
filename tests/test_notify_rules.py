"""The notifier's pure parts: transitions, routing rules, backoff, the signature, and the `notify`
settings as the environment and the TOML file give them."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from services.notify import rules
from services.notify.delivery import backoff_s
from services.notify.webhook import sign, verify
from services.settings import NotifyRetrySettings, NotifyRule, NotifySettings, Settings, check_environment

SECRET = "0123456789abcdef-secret"


def test_transitions_from_fw_events_changes():
    assert rules.transition("opened", "low", None) == "opened"
    assert rules.transition("closed", "low", "critical") == "closed"
    assert rules.transition("updated", "high", "medium") == "escalated"
    assert rules.transition("updated", "high", "high") is None  # a periodic republication, no news
    assert rules.transition("updated", "low", None) == "escalated"  # never seen: news to every receiver


def _rule(**kw) -> NotifyRule:
    return NotifyRule(channels=kw.pop("channels", ["ops"]), **kw)


def test_rules_match_on_asset_glob_kind_severity_and_transition():
    pager = _rule(name="pager", assets=["L1-*"], min_severity="high", transitions=["opened", "escalated"],
                  channels=["pager"])
    acoustic = _rule(name="acoustic", kinds=["acoustic"], channels=["maintenance"])
    everything = _rule(name="all", channels=["plant"])
    rs = [pager, acoustic, everything]
    assert rules.route(rs, "L1-S2", "acoustic", "critical", "opened") == ["maintenance", "pager", "plant"]
    assert rules.route(rs, "L1-S2", "visual", "medium", "opened") == ["plant"]  # below the pager's minimum
    assert rules.route(rs, "L2-S1", "visual", "critical", "opened") == ["plant"]  # asset outside L1-*
    assert rules.route(rs, "L1-S2", "visual", "critical", "closed") == ["plant"]  # pager: no closed transition
    # the pager was told the event opened, so it hears that it closed
    assert rules.route(rs, "L1-S2", "visual", "critical", "closed", told_of_open={"pager"}) == ["pager", "plant"]
    assert rules.route([], "L1-S2", "visual", "critical", "opened") == []


def test_globs_are_case_sensitive_like_asset_ids():
    assert rules.route([_rule(assets=["l1-*"])], "L1-S2", "visual", "low", "opened") == []
    assert rules.route([_rule(assets=["L1-S?", "press-*"])], "press-07", "visual", "low", "opened") == ["ops"]


def test_backoff_grows_exponentially_to_its_cap_with_jitter():
    retry = NotifyRetrySettings(initial_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        pauses = {backoff_s(attempt, retry, rng) for _ in range(50)}
        assert all(ceiling / 2 <= p <= ceiling for p in pauses), attempt
        assert len(pauses) > 40  # jittered, not one fixed value


def test_signature_verifies_and_refuses_tampering_and_old_timestamps():
    body = b'{"id":"e:1"}'
    sig = sign(SECRET.encode(), 1_000_000, body)
    assert verify(SECRET.encode(), "1000000", body, sig, now=1_000_010)
    assert not verify(SECRET.encode(), "1000000", body + b" ", sig, now=1_000_010)
    assert not verify(b"another-secret-0123456", "1000000", body, sig, now=1_000_010)
    assert not verify(SECRET.encode(), "1000001", body, sig, now=1_000_010)  # timestamp is signed too
    assert not verify(SECRET.encode(), "1000000", body, sig, now=1_000_000 + 3600)  # a replay an hour later


def test_settings_refuse_unknown_channels_bad_names_misspelt_keys_and_short_secrets():
    hook = {"url": "https://ops.example/hook", "secret": SECRET}
    with pytest.raises(ValidationError, match="unknown channel"):
        NotifySettings(webhooks={"ops": hook}, rules=[{"channels": ["pager"]}])
    with pytest.raises(ValidationError, match="lower-case"):
        NotifySettings(webhooks={"Ops Team": hook})
    with pytest.raises(ValidationError, match="Extra inputs"):
        NotifySettings(webhooks={"ops": hook | {"secrte": "x"}})
    with pytest.raises(ValidationError, match="at least 16"):
        NotifySettings(webhooks={"ops": hook | {"secret": "short"}})
    with pytest.raises(ValidationError, match="both"):
        NotifySettings(webhooks={"ops": hook}, mqtt={"ops": {"host": "mqtt"}})
    with pytest.raises(ValidationError, match="min_severity"):
        NotifySettings(webhooks={"ops": hook}, rules=[{"channels": ["ops"], "min_severity": "urgent"}])


def test_toml_file_with_the_secret_from_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "fusionwatch.toml"
    config.write_text('''
[notify]
base_url = "https://fusionwatch.plant.example"

[notify.webhooks.ops]
url = "https://ops.example/hooks/fusionwatch"

[notify.mqtt.plant]
host = "mqtt.plant.example"
site = "plant-a"
homeassistant_discovery = true

[[notify.rules]]
name = "line 1 to ops"
assets = ["L1-*"]
min_severity = "high"
channels = ["ops", "plant"]

[[notify.rules]]
transitions = ["opened"]
channels = ["plant"]
''')
    for key in [k for k in __import__("os").environ if k.startswith("FW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FW_CONFIG", str(config))
    monkeypatch.setenv("FW_NOTIFY__WEBHOOKS__OPS__SECRET", SECRET)
    monkeypatch.setenv("FW_NOTIFY__MQTT__PLANT__PASSWORD", "mqtt-password")
    check_environment()  # channel variables one level deeper are settings too
    n = Settings().notify
    assert n.channels == ["ops", "plant"] and n.base_url == "https://fusionwatch.plant.example"
    assert n.webhooks["ops"].secret.get_secret_value() == SECRET
    assert n.webhooks["ops"].url == "https://ops.example/hooks/fusionwatch"
    assert n.mqtt["plant"].password.get_secret_value() == "mqtt-password" and n.mqtt["plant"].site == "plant-a"
    assert [r.min_severity for r in n.rules] == ["high", "low"] and n.rules[1].transitions == ["opened"]


def test_a_misspelt_notify_variable_is_refused_by_name():
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="FW_NOTIFY__WEBHOKS"):
        check_environment({"FW_NOTIFY__WEBHOKS": "{}"})
    check_environment({"FW_NOTIFY__RULES": "[]", "FW_NOTIFY__WEBHOOKS__OPS__URL": "https://x"})
