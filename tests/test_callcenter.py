"""Call-centre profile: window labels, the supervised recipe, the evaluation rows, and the whole
path — simulated calls → embedded broker → monitor (profile callcenter, a tiny model trained
here) → escalation events and call summaries in SQL."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from models.features import FeatureConfig
from services.training import callcenter as cc

T0 = 1767600000.0


# ── labels (pure functions, hand-made calls) ───────────────────────────────────────────────────

@dataclass
class _Windows:
    """The few WindowArrays fields the labeller reads (a fake for one pure function)."""

    assets: list[str]
    asset_idx: np.ndarray
    start: np.ndarray
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __len__(self) -> int:
        return len(self.start)


def _seg(start, end, speaker, text, sentiment, frustration):
    return {"start": T0 + start, "end": T0 + end, "speaker": speaker, "text": text, "sentiment": sentiment,
            "frustration": frustration}


def test_window_label_is_the_majority_of_customer_speech_heard():
    from services.simulator.callcenter import LINES

    held_out = LINES["sarc_more"][1][0]  # "Perfect. Amazing service as always. Really, thank you so much."
    call = {"call_id": "call-000001", "call_type": "sarcastic", "segments": [
        _seg(0.0, 3.0, "agent", "Thank you for calling.", "positive", 0.0),
        _seg(3.2, 4.0, "customer", "Okay, no rush.", "neutral", 0.05),
        _seg(4.0, 6.5, "customer", held_out, "negative", 0.8),
        _seg(6.5, 9.5, "agent", "I am really sorry about that.", "neutral", 0.0),
        _seg(9.8, 10.0, "customer", "Hm.", "neutral", 0.1),
    ]}
    starts = T0 + np.arange(0, 10, 1.0)  # windows [k, k+2)
    data = _Windows(["call-000001"], np.zeros(len(starts), np.int32), starts)
    lab = cc.call_window_labels(data, [call], min_speech_s=0.5)
    neg, neu = cc.SENTIMENT_CLASSES.index("negative"), cc.SENTIMENT_CLASSES.index("neutral")
    # [0,2) [1,3): agent only; [2,4): 0.8 s neutral; [3,5): 0.8 neutral + 1.0 negative; [4,6) [5,7)
    # negative; [6,8): 0.5 s negative; [7,9): agent only; [8,10) [9,11): 0.2 s of "Hm.": too little speech
    assert lab["sentiment"].tolist() == [-1, -1, neu, neg, neg, neg, neg, -1, -1, -1]
    assert np.isnan(lab["frustration"][[0, 1, 7, 8, 9]]).all()
    assert lab["frustration"][2] == pytest.approx(0.05)
    assert lab["frustration"][3] == pytest.approx(0.8)  # the highest of the window's utterances
    assert lab["held_out"].tolist() == [False] * 3 + [True] * 4 + [False] * 3
    assert lab["has_line"].tolist() == [False, False, True, True, True, False, False, False, True, True]
    assert (lab["call_type"] == 3).all()
    # the call's mood where the customer is silent: their latest utterance (neutral before any)
    assert lab["mood_sentiment"].tolist() == [neu, neu, neu, neg, neg, neg, neg, neg, neu, neu]
    assert lab["mood_held_out"].tolist() == [False] * 7 + [True, False, False]  # its mood is the held-out line
    assert lab["mood_frustration"][0] == 0.0 and lab["mood_frustration"][7] == pytest.approx(0.8)


def test_held_out_phrasings_are_one_variant_of_each_sarcastic_stage():
    from services.simulator.callcenter import LINES

    slots = {"company": "Northwind", "agent": "Dana", "order": "12345", "days": "3", "minutes": "42",
             "product": "washing machine", "times": "four"}
    for stage, variants in LINES.items():
        for k, (template, _, _) in enumerate(variants):
            text = template.format(**slots)
            # plus the third phrasing of every customer stage, said only by an "unseen" test spec
            assert cc.is_held_out_phrasing(text) == ((stage in cc.HELD_OUT_STAGES and k == 1) or k >= 2), text


def test_late_fusion_weight_is_chosen_on_validation_and_mixes_probabilities():
    y = np.array([0, 0, 1, 1, 2, 2])
    data = _LabelledStub({"sentiment": y})
    onehot = np.eye(3)[y] * 0.9 + 0.1 / 3
    wrong = np.eye(3)[(y + 1) % 3] * 0.9 + 0.1 / 3
    text = cc.Predictions(onehot, np.zeros(6))
    audio = cc.Predictions(wrong, np.ones(6))
    assert cc.pick_late_weight(data, text, audio) > 0.5  # text is the right one here
    mixed = cc.late_fusion(text, audio, 0.5)
    np.testing.assert_allclose(mixed.probs.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed.frustration, 0.5)
    assert (cc.late_fusion(text, audio, 1.0).probs.argmax(1) == y).all()
    assert (cc.late_fusion(text, audio, 0.0).probs.argmax(1) == (y + 1) % 3).all()


@dataclass
class _LabelledStub:
    labels: dict


# ── real simulated calls and a tiny trained model (built once for this module) ─────────────────

TINY = cc.get_call_recipe("tiny")  # what `fusionwatch train --profile callcenter --recipe tiny` trains
TINY_TRAIN, TINY_VALIDATION = TINY.train[0], TINY.validation


@pytest.fixture(scope="module")
def call_data(tmp_path_factory):
    cache = tmp_path_factory.mktemp("call-datasets")
    return {"train": cc.simulate_calls(TINY_TRAIN, cc.CALL_FEATURES, cache),
            "validation": cc.simulate_calls(TINY_VALIDATION, cc.CALL_FEATURES, cache), "cache": cache}


@pytest.fixture(scope="module")
def tiny_checkpoint(call_data, tmp_path_factory):
    import torch

    torch.set_num_threads(1)  # faster than 2 on a shared 2-core box
    path = tmp_path_factory.mktemp("call-model") / "model"
    trained = cc.train_call_checkpoint(TINY, path, data={k: call_data[k] for k in ("train", "validation")})
    return trained


def test_simulated_call_windows_are_labelled_by_call_type(call_data):
    from services.simulator.callcenter import CALL_TYPES

    data = call_data["train"]
    lab = data.labels
    types = {c["call_id"]: c["call_type"] for c in data.meta["calls"]}
    assert set(types.values()) >= {"calm", "escalating"}
    assert (lab["call_type"] >= 0).all() and set(np.array(CALL_TYPES)[lab["call_type"]]) == set(types.values())
    labelled = lab["sentiment"] >= 0
    assert 0.2 < labelled.mean() < 0.8  # agents talk too, and there are pauses
    assert np.isnan(lab["frustration"][~labelled]).all() and not np.isnan(lab["frustration"][labelled]).any()
    neg = cc.SENTIMENT_CLASSES.index("negative")
    for t in ("calm",):
        sel = labelled & (lab["call_type"] == CALL_TYPES.index(t))
        assert sel.any() and (lab["sentiment"][sel] != neg).all() and lab["frustration"][sel].max() <= 0.3
    for t in ("frustrated", "sarcastic"):
        sel = labelled & (lab["call_type"] == CALL_TYPES.index(t))
        assert (lab["sentiment"][sel] == neg).all()
    # a held-out sarcastic phrasing is never trained on, directly or through a window's mood
    assert not lab["held_out"][cc.trainable_windows(data)].any()
    mood = cc.mood_windows(data)
    assert len(mood) and not (lab["sentiment"][mood] >= 0).any() and not lab["mood_held_out"][mood].any()
    # the dataset is cached: a second request loads the same arrays
    again = cc.simulate_calls(TINY_TRAIN, cc.CALL_FEATURES, call_data["cache"])
    np.testing.assert_array_equal(again.labels["sentiment"], lab["sentiment"])


def test_single_modality_rows_mask_the_other_modality(call_data):
    data = call_data["train"]
    idx = np.flatnonzero(data.log_mask.any(1) & data.audio_mask.any(1))[:8]
    assert len(idx) == 8
    text = cc.keep_modalities(data.batch(idx), cc.MODALITY_SETS["text"])
    audio = cc.keep_modalities(data.batch(idx), cc.MODALITY_SETS["audio"])
    fused = cc.keep_modalities(data.batch(idx), cc.MODALITY_SETS["fused"])
    assert not text.audio_mask.any() and text.log_mask.any() and text.log_present.all()
    assert audio.audio_mask.any() and not audio.log_mask.any() and not audio.log_present.any()
    assert fused.audio_mask.any() and fused.log_mask.any()
    assert not fused.frame_mask.any()  # audio calls: the video slots are masked, not black frames


def test_the_windows_an_escalation_counts_are_the_ones_that_hear_the_customer(call_data):
    """The scorer's speech measure on the customer's channel (what the live policy and the
    evaluation judge by) picks exactly the windows the simulator labels as hearing the customer."""
    from services.training.callcenter_eval import customer_heard
    from streamlogic.escalation import EscalationRule

    val = call_data["validation"]
    heard = customer_heard(val, EscalationRule(min_customer_speech_s=TINY_VALIDATION.min_speech_s))
    labelled = val.labels["sentiment"] >= 0
    assert labelled.any() and (~labelled).any()
    assert (heard == labelled).mean() >= 0.97, (heard != labelled).sum()


def test_tiny_model_learns_tone_and_saves_a_monitor_checkpoint(tiny_checkpoint, call_data):
    from models import checkpoint
    from services.simulator.callcenter import CALL_TYPES

    trained = tiny_checkpoint
    model, calibration, config = checkpoint.load(trained.path)
    assert model.cfg.sentiment_classes == list(cc.SENTIMENT_CLASSES) and model.cfg.frustration_head
    assert config["callcenter"]["modalities"] == ["frames", "audio", "logs", "channels"]
    assert model.cfg.speaker_embedding and model.cfg.channel_audio and model.cfg.features.sample_rate == 8000
    assert "call-centre model" in (trained.path / "model_card.md").read_text()
    val = call_data["validation"]
    probs, frus = cc.predict(model, val)
    assert probs.shape == (len(val), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    lab = val.labels["sentiment"] >= 0
    angry = lab & (val.labels["frustration"] >= 0.6)
    calm = lab & (val.labels["call_type"] == CALL_TYPES.index("calm"))
    assert angry.any() and calm.any()
    assert frus[angry].mean() > frus[calm].mean() + 0.3
    row = cc.score_row("cross_attention", val, cc.Predictions(probs, frus))
    assert row.window_accuracy > 0.6  # a tiny model, 90 s of other calls: only sanity here
    assert row.escalated["calm"] == 0.0


def test_score_row_and_report(call_data, tmp_path):
    import json

    from rich.console import Console

    val = call_data["validation"]
    y = val.labels["sentiment"]
    perfect = cc.Predictions(np.eye(3)[np.clip(y, 0, 2)], np.nan_to_num(val.labels["frustration"]))
    row = cc.score_row("oracle", val, perfect)
    assert row.window_accuracy == 1.0 and row.window_macro_f1 == 1.0 and row.call_accuracy == 1.0
    assert row.frustration_mae == 0.0
    assert np.trace(np.array(row.confusion)) == (y >= 0).sum()
    # "text says positive" everywhere: every negative window is wrong
    naive = cc.Predictions(np.tile([0.1, 0.2, 0.7], (len(val), 1)), np.zeros(len(val)))
    bad = cc.score_row("positive", val, naive)
    assert bad.window_accuracy < 0.5 and all(v == 0.0 for v in bad.escalated.values() if np.isfinite(v))
    report = cc.CallEvalReport([row, bad], list(cc.SENTIMENT_CLASSES), int((y >= 0).sum()), {"calm": 1}, 0, 0,
                               test={}, train=[], validation={}, train_config={})
    report.save(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["oracle", "positive"]
    console = Console(record=True, width=200)
    console.print(cc.render_call_report(report))
    assert "window macro-F1" in console.export_text()


# ── end to end: calls → broker → monitor → SQL ────────────────────────────────────────────────

@pytest.mark.slow
def test_calls_escalate_through_the_monitor(tiny_checkpoint, broker, make_topics, unique_group, db_url):
    from sqlalchemy import select

    from models.scorer import AnomalyScorer
    from schemas.envelope import parse_time
    from schemas.tables import CallSummary, Event
    from services import db
    from services.kafka import make_producer
    from services.monitor.service import Monitor
    from services.settings import Settings
    from services.simulator.callcenter import CallCenter
    from streamlogic.escalation import EscalationRule
    from streamlogic.event_lifecycle import ScoredWindow
    from tests.support.streams import produce
    from tests.test_monitor import run_until

    duration = 80.0
    start = time.time() - duration - 30
    centre = CallCenter(2, seed=7, start_time=start, mix={"calm": 0.5, "escalating": 0.3, "frustrated": 0.2})
    records = list(centre.records(duration))
    calls = {c.call_id: c for c in centre.calls}
    kinds = {c.call_type for c in calls.values()}
    assert "calm" in kinds and kinds & {"escalating", "frustrated"}, kinds  # the seed gives both

    ks, topics = make_topics(partitions=2)
    produce(make_producer(ks, broker.bootstrap), topics, records)
    settings = Settings(kafka=ks, profile="callcenter")
    engine = db.make_engine(db_url)
    scorer = AnomalyScorer.load(tiny_checkpoint.path, device="cpu")
    monitor = Monitor(settings, broker.bootstrap, engine, scorer, topics, group_id=unique_group())
    factory = db.session_factory(engine)
    state = {"windows": -1, "since": time.monotonic()}

    def settled() -> bool:  # every record read, and no new window scored for a few seconds
        if monitor.stats.windows != state["windows"]:
            state["windows"], state["since"] = monitor.stats.windows, time.monotonic()
        return monitor.stats.records >= len(records) and monitor.stats.windows > 0 \
            and time.monotonic() - state["since"] > 4.0

    run_until(monitor, settled, timeout_s=150)
    assert monitor.stats.records == len(records) and monitor.stats.rejected == 0
    with factory() as s:
        events = s.scalars(select(Event)).all()
        summaries = {r.call_id: r for r in s.scalars(select(CallSummary)).all()}
    engine.dispose()

    assert set(summaries) == set(calls)
    escalated = {e.asset_id for e in events}
    assert all(e.kind == "escalation" and e.threshold == pytest.approx(settings.monitor.escalation_threshold)
               for e in events)
    # the monitor ran the escalation rule on the frustration it stored: replaying the stored curve
    # through the same rule gives the same calls. (Which angry calls a *tiny* model escalates moves
    # with its training data and with eSpeak's utterance lengths — its frustration often crosses
    # 0.6 for two windows of a turn, not three — so the model's quality is asserted below as a
    # ranking, and the rule's own recall on the standard model is the evaluation's: docs/callcenter.md.)
    rule = EscalationRule.from_settings(settings.monitor)
    replayed = set()
    for call_id, row in summaries.items():
        life = rule.lifecycle()
        for t, _neg, _neu, _pos, frustration, heard in row.sentiment_curve:
            ts = parse_time(t)
            if life.update(ScoredWindow(call_id, ts, ts + settings.monitor.window_s, frustration, rule.open_threshold,
                                        "replay", judged=heard)):
                replayed.add(call_id)
    assert escalated == replayed and escalated, (escalated, replayed)
    peaks = {"calm": [], "angry": []}
    for call_id, call in calls.items():
        row = summaries[call_id]
        heard = [u for u in call.utterances if u.speaker == "customer" and u.end <= start + duration]
        assert len(row.sentiment_curve) >= 5 and row.peak_time is not None
        if call.call_type == "calm":
            assert call_id not in escalated, f"calm call {call_id} escalated"
            peaks["calm"].append(row.peak_frustration)
        elif any(u.frustration >= 0.7 for u in heard):  # the angry part was streamed
            assert row.peak_frustration >= settings.monitor.escalation_threshold, (call_id, row.peak_frustration)
            # (row.overall follows how the call ENDS, which may be calm again; not asserted)
            peaks["angry"].append(row.peak_frustration)
        if call_id in escalated:
            assert call.call_type != "calm" and any(u.frustration >= 0.7 for u in heard), call_id
    assert peaks["calm"] and peaks["angry"], peaks
    assert max(peaks["calm"]) < min(peaks["angry"]), peaks  # the curve ranks the calls
    # evidence of an escalation is the transcript, speaker-tagged
    assert events and any(line.startswith("customer: ") for e in events for line in e.log_lines)
