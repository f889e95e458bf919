"""Training and evaluation end to end with real parts: the plant simulator, the monitor's aligner,
the MiniLM text encoder, a real broker for the Kafka source, checkpoints on disk, the CLI.

Uses the 'tiny' recipe (hidden size 32, a few steps): the point is the plumbing, not the quality;
quality figures come from `fusionwatch eval` (see docs/model.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.features import FeatureConfig
from models.text import TextEncoder, normalise_line
from services.training.dataset import SimSpec, simulate_dataset

FC = FeatureConfig()
START = 1767600000.0


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    from models.text import shared_text_encoder

    return shared_text_encoder()


def test_normalised_lines_share_one_cached_embedding(text_encoder):
    assert normalise_line("Cycle 87407 complete,  part L1S4-0000007") == "cycle # complete, part l#s#-#"
    enc = TextEncoder(cache_size=3)
    enc._model, enc._tokenizer = text_encoder._model or _loaded(text_encoder), text_encoder._tokenizer
    a = enc.embed(["cycle 1 complete", "CYCLE 22 complete", "motor temp 40 C"])
    assert np.allclose(a[0], a[1]) and not np.allclose(a[0], a[2])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert enc.misses == 3 and enc.hits == 0 and len(enc) == 2  # two distinct normalised lines encoded
    enc.embed(["cycle 3 complete"])
    assert enc.hits == 1
    enc.embed(["a", "b", "c", "d"])
    assert len(enc) == 3  # bounded LRU
    # semantic: an E-STOP line is nearer to another stop line than to a cycle line
    e = enc.embed(["E-STOP pressed at panel P2", "line stopped: emergency stop", "cycle 12 complete, part 7"])
    assert e[0] @ e[1] > e[0] @ e[2]


def _loaded(enc: TextEncoder):
    enc.embed(["warm up"])
    return enc._model


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    from services.training.recipes import RECIPES

    r = RECIPES["tiny"]
    cache = tmp_path_factory.mktemp("datasets")
    return r, cache, simulate_dataset(r.train, FC, cache_dir=cache), simulate_dataset(r.calib, FC, cache_dir=cache)


def test_simulated_dataset_is_cached_and_labelled(tiny_train, tmp_path):
    r, cache, train_data, _ = tiny_train
    assert len(train_data) >= r.train.assets * (r.train.duration_s - 2)
    assert (train_data.frame_idx >= 0).sum(1).max() == FC.max_frames  # 4 fps x 2 s
    assert train_data.audio_mask.mean() > 0.9 and train_data.log_present.all()
    assert (train_data.labels["fault_kind"] == -1).all()  # normal operation only
    again = simulate_dataset(r.train, FC, cache_dir=cache)  # from the cache
    assert np.array_equal(again.mel, train_data.mel) and again.assets == train_data.assets
    # the labels of a faulty run mark the windows overlapping each fault
    spec = SimSpec(assets=4, seed=77, duration_s=100, faults="all")
    faulty = simulate_dataset(spec, FC)
    kinds = faulty.meta["fault_kinds"]
    for f in faulty.meta["ground_truth"]:
        a = faulty.assets.index(f["asset"])
        inside = (faulty.asset_idx == a) & (faulty.start >= f["start"]) & (faulty.start + 2 <= f["end"])
        assert inside.any() and (faulty.labels["fault_kind"][inside] == kinds.index(f["kind"])).all()


def test_train_score_round_trip(tiny_train, tmp_path):
    """Tiny recipe -> checkpoint -> AnomalyScorer scores live windows from the monitor's aligner."""
    from models.scorer import AnomalyScorer
    from services.simulator.plant import Fault, Plant
    from services.training.recipes import run_recipe
    from streamlogic.windows import offline_windows

    r, cache, train_data, calib_data = tiny_train
    out = tmp_path / "model"
    res = run_recipe(r, out, "cross", train_data=train_data, calib_data=calib_data)
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "calibration.json", "model_card.md"}
    card = (out / "model_card.md").read_text()
    assert res.info["version"] in card and "Calibration" in card
    scorer = AnomalyScorer.load(out, device="cpu")
    plant = Plant(2, seed=5, start_time=START, faults=[Fault("L1-S1", "belt_squeal", START + 5, START + 15)])
    windows = list(offline_windows(plant.records(20), options=scorer.decode_options))
    scores = scorer.score(windows)
    assert len(scores) == len(windows) > 30
    for w, s in zip(windows, scores):
        assert np.isfinite(s.score) and s.threshold > 0 and s.threshold == scorer.threshold(w.asset) * s.guard
        present = [m for m, ok in s.present.items() if ok]
        if present:
            assert set(s.modality_shares) == set(present)
            assert sum(s.modality_shares.values()) == pytest.approx(1.0, abs=1e-3)
            assert 0.0 <= s.cross_modal_share <= 1.0
        if s.frame_region:
            x0, y0, x1, y1 = s.frame_region
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert all(w.start <= t < w.end for t in s.top_frame_times), (w.start, w.end, s.top_frame_times, [t for t, _ in w.frames])
        if s.audio_band_hz:
            assert 0 <= s.audio_band_hz[0] < s.audio_band_hz[1] <= FC.f_max + 1
    # a window with a modality missing still scores, and says so
    w = windows[10]
    w.audio = []
    s = scorer.score([w])[0]
    assert s.present["audio"] is False and "audio" not in s.modality_shares


def test_time_split_holds_out_the_end_of_each_asset(tiny_train):
    from models.data import WindowArrays
    from services.training.factory import time_split

    _, _, a, b = tiny_train
    data = WindowArrays.concat([a, b])
    assert len(data) == len(a) + len(b) and sorted(data.assets) == data.assets
    # two runs of the same stations over the same seconds (39 + 59 whole windows per asset): 26 held out per
    # asset, a split between two distinct seconds, and >= 50 windows held out in all
    tr, ca = time_split(data, 0.27)
    for a in range(len(data.assets)):
        assert tr.start[tr.asset_idx == a].max() < ca.start[ca.asset_idx == a].min()
    assert len(tr) + len(ca) == len(data)


@pytest.mark.slow
def test_cli_train_and_eval_tiny(tmp_path, monkeypatch):
    """`fusionwatch train --recipe tiny` and `fusionwatch eval --recipe tiny --json` through the CLI."""
    from typer.testing import CliRunner

    from services.cli import app
    from services.settings import get_settings

    monkeypatch.setenv("FW_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--recipe", "tiny", "--out", str(tmp_path / "m"), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "model.safetensors").exists()
    report_path = tmp_path / "report.json"
    res = runner.invoke(app, ["eval", "--recipe", "tiny", "--json", str(report_path), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads(report_path.read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["frames_only", "audio_only", "logs_only", "late_fusion", "concat_fusion", "cross_attention"]
    from services.simulator.plant import FAULT_KINDS

    assert report["kinds"] == list(FAULT_KINDS)
    for row in report["rows"]:
        assert set(row["auroc"]) == set(FAULT_KINDS)
        assert row["false_per_asset_hour"] is not None and 0 <= row["recall"] <= 1
    # log faults are found by the log detector even with a few training steps
    logs = next(r for r in report["rows"] if r["name"] == "logs_only")
    assert logs["auroc"]["log_rate_anomaly"] > 0.9
    # the evaluated checkpoints' model cards carry the table
    card = (tmp_path / "var" / "eval" / "tiny" / "cross" / "model_card.md").read_text()
    assert "cross_attention" in card and "log_rate_anomaly" in card
    get_settings.cache_clear()


def test_kafka_time_range_matches_offline_windows(make_topics, broker, tmp_path):
    """Records produced to the real broker, read back for a time range, give the same windows as
    aligning the same records in-process."""
    from services.kafka import make_producer
    from services.settings import Settings
    from services.simulator.plant import Plant
    from services.training.dataset import dataset_from_records, kafka_dataset

    ks, topics = make_topics(2)
    plant = Plant(2, seed=9, start_time=START)
    records = list(plant.records(12))
    producer = make_producer(ks, broker.bootstrap)
    topic = {"frames": topics.frames, "audio": topics.audio, "logs": topics.logs}
    for kind, rec in records:
        producer.send(topic[kind.value], key=rec.key, value=rec.value, headers=rec.headers)
    producer.flush()
    producer.close()
    settings = Settings(kafka=ks)
    got = kafka_dataset(settings, broker.bootstrap, START + 2, START + 10, FC, poll_timeout_s=3.0)
    inside = [(k, r) for k, r in records if START + 2 <= _t(r) < START + 10]
    want = dataset_from_records(inside, FC)
    assert len(got) == len(want) > 10
    assert np.array_equal(np.sort(got.start), np.sort(want.start))
    assert got.log_count.sum() == want.log_count.sum()
    assert np.allclose(np.sort(got.mel.astype(np.float32).ravel()), np.sort(want.mel.astype(np.float32).ravel()))


def test_training_windows_are_whole_ones():
    """Training and calibration data keep only windows the recording covers whole: the aligner's
    first window of an asset starts before its first record and the flushed last one ends after
    its last (half their evidence missing — the cross-modal components' heaviest normal values
    came from them). The monitor itself keeps every window."""
    from services.simulator.plant import Plant
    from services.training.dataset import dataset_from_records
    from streamlogic.windows import offline_windows

    records = list(Plant(2, seed=3, start_time=START).records(20))
    every = list(offline_windows(records))
    data = dataset_from_records(records, FC)
    assert {round(w.start - START) for w in every} == set(range(-1, 20))
    assert len(data) == len(every) - 4 and data.start.min() == START and data.start.max() + 2.0 == START + 20


def _t(rec) -> float:
    from schemas.envelope import parse_time

    return parse_time(dict(rec.headers)["ce_time"].decode())


@pytest.mark.gpu
def test_bf16_scores_match_fp32_on_cuda(tiny_train, tmp_path):
    """A model trained and scored on CUDA: under bf16 autocast its intra-modal evidence is the
    float32 evidence exactly and the cross-modal components stay within 0.01 of float32; the
    scorer's end-to-end path runs in bf16 and gives finite scores.

    Not asserted: calibrated scores within a fixed tolerance. The tiny recipe's consistency head
    (8 steps) puts every normal window's cross-modal components within ~0.03 of each other, so
    their fitted tails turn bf16's 0.002 into up to 0.7 units of surprise — on the CPU's bf16
    autocast too. The shipped model's scores are compared in
    tests/test_gpu.py."""
    import torch

    from models.features import collate
    from models.fusion import COMPONENTS
    from models.scorer import AnomalyScorer
    from services.simulator.plant import Plant
    from services.training.recipes import run_recipe
    from streamlogic.windows import offline_windows

    r, _, train_data, calib_data = tiny_train
    run_recipe(r, tmp_path / "m", "cross", train_data=train_data, calib_data=calib_data, device="cuda")
    scorer = AnomalyScorer.load(tmp_path / "m", device="cuda")
    assert scorer.bf16
    windows = list(offline_windows(Plant(2, seed=6, start_time=START, faults="all:200").records(60),
                                   options=scorer.decode_options))
    assert np.all(np.isfinite([s.score for s in scorer.score(windows)]))
    model = scorer.model
    batch = collate(scorer.featurizer.featurize_many(windows), model.cfg.features, model.code_vocab).to("cuda")
    with torch.inference_mode():
        a = model(batch).components
        with torch.autocast("cuda", dtype=torch.bfloat16):
            b = model(batch).components
    intra = [i for i, (_, _, is_cross) in enumerate(COMPONENTS) if not is_cross]
    cross = [i for i, (_, _, is_cross) in enumerate(COMPONENTS) if is_cross]
    assert torch.equal(a[:, intra], b[:, intra])
    assert float((a[:, cross] - b[:, cross]).abs().max()) <= 0.01


def test_event_and_window_metrics_on_a_known_timeline():
    """Two assets, 100 windows each; one fault on A at 40-60 s. Scores are high exactly there (and
    once, briefly, on B): recall 1, one false event, and the AUROC the ties imply."""
    from models.data import WindowArrays
    from services.training.evaluate import event_metrics, run_lifecycle, window_metrics
    from tests.test_models import synthetic_features

    feats = [synthetic_features(i, asset=a, frames=1, lines=0) for a in ("A", "B") for i in range(100)]
    for f, t in zip(feats, list(range(100)) * 2):
        f.start, f.end = START + t, START + t + 2
    data = WindowArrays.from_features(feats, FC)
    kind = np.full(len(data), -1, np.int16)
    overlap = np.zeros(len(data), np.float32)
    a = data.asset_idx == data.assets.index("A")
    t = data.start - START
    inside = a & (t + 2 > 40) & (t < 60)
    overlap[inside] = np.minimum(t[inside] + 2, 60) - np.maximum(t[inside], 40)
    kind[inside] = 1
    data.labels.update(fault_kind=kind, fault_overlap=overlap)
    scores = np.where(inside & (overlap >= 1), 9.0, 0.0)
    scores[~a & (t >= 80) & (t < 83)] = 9.0  # a false alarm on B, three windows long
    auroc, auprc, positives, negatives = window_metrics(scores, data, ["k0", "k1"])
    # 21 positives (>= 1 s inside); 179 negatives (200 minus those 21), 3 of them tied with the positives
    assert positives["k1"] == 21 and negatives == 179 and np.isnan(auroc["k0"])
    assert auroc["k1"] == pytest.approx((176 + 0.5 * 3) / 179)
    events = run_lifecycle(scores, np.full(len(data), 5.0), data, open_after=2, close_after=3)
    assert len(events) == 2
    faults = [{"asset": "A", "kind": "k1", "start": START + 40, "end": START + 60}]
    m = event_metrics(events, faults, asset_hours=2 * 100 / 3600, window_s=2.0, kinds=["k0", "k1"])
    assert m["recall"] == 1.0 and m["false_events"] == 1 and m["recall_by_kind"]["k1"] == 1.0
    assert m["false_per_asset_hour"] == pytest.approx(18.0)


def test_an_alarm_already_open_when_a_fault_starts_is_false():
    """The counting rule: a detection is an event that opens (is published) within DETECT_WITHIN_S
    of a fault's start; one already open when the fault starts is false, even though it overlaps
    the fault; one opening later inside the fault is late, neither detection nor false."""
    from services.training.evaluate import DETECT_WITHIN_S, EvalEvent, classify_event, event_metrics

    f = {"asset": "A", "kind": "k", "start": 100.0, "end": 130.0}
    early = EvalEvent("A", 90.0, 140.0, opened_at=93.0, learning=False)  # open before the fault, runs through it
    prompt = EvalEvent("A", 99.0, 131.0, opened_at=103.0, learning=False)
    late = EvalEvent("A", 115.0, 131.0, opened_at=100.0 + DETECT_WITHIN_S + 5, learning=False)
    other = EvalEvent("B", 99.0, 131.0, opened_at=103.0, learning=False)  # another asset
    assert classify_event(early, [f], 2.0) == ("false", None)
    assert classify_event(prompt, [f], 2.0) == ("detection", 0)
    assert classify_event(late, [f], 2.0) == ("late", 0)
    assert classify_event(other, [f], 2.0) == ("false", None)
    m = event_metrics([early, late], [f], asset_hours=1.0, window_s=2.0, kinds=["k"])
    assert m["recall"] == 0.0 and m["false_events"] == 1 and m["late_events"] == 1
    m = event_metrics([early, prompt], [f], asset_hours=1.0, window_s=2.0, kinds=["k"])
    assert m["recall"] == 1.0 and m["false_events"] == 1


def test_confirmed_anomalies_are_kept_out_of_normal_training_data():
    """Verdicts feed training: a window inside (or within 5 s of) an event a reviewer confirmed as
    real is not normal operation to learn from; other assets' windows at the same time stay."""
    from models.data import WindowArrays
    from services.training.dataset import exclude_confirmed
    from tests.test_models import synthetic_features

    feats = [synthetic_features(i, asset=a, frames=1, lines=0) for a in ("A", "B") for i in range(60)]
    for f, t in zip(feats, list(range(60)) * 2):
        f.start, f.end = START + t, START + t + 2
    data = WindowArrays.from_features(feats, FC)
    kept, dropped = exclude_confirmed(data, [("A", START + 20, START + 30), ("Z", START, START + 60)])
    # A's windows starting in (20 - 5 - 2, 30 + 5): 13 < t < 35 -> t = 14..34, 21 windows
    assert dropped == 21 and len(kept) == 120 - 21
    a = kept.asset_idx == kept.assets.index("A")
    t = kept.start[a] - START
    assert not ((t > 13) & (t < 35)).any() and (kept.asset_idx == kept.assets.index("B")).sum() == 60


def test_cli_calibrate_commissions_a_site_keeping_the_weights(tmp_path, monkeypatch):
    """`fusionwatch calibrate`: a trained model's tails and per-station calibration fitted to a
    site's normal operation (here a saved dataset of stations it never saw), the trained weights
    unchanged, the site's log codes known afterwards."""
    import torch
    from typer.testing import CliRunner

    from models import checkpoint as ckpt
    from services.cli import app
    from services.settings import get_settings
    from services.training.dataset import SimSpec

    monkeypatch.setenv("FW_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("FW_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    get_settings.cache_clear()
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--recipe", "tiny", "--out", str(tmp_path / "m"), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    site = simulate_dataset(SimSpec(assets=3, seed=909, duration_s=90), FC)
    site.save(tmp_path / "site")
    res = runner.invoke(app, ["calibrate", "-c", str(tmp_path / "m"), "--source", "dataset", "--dataset",
                              str(tmp_path / "site"), "--out", str(tmp_path / "m2"), "--no-progress"])
    assert res.exit_code == 0, res.output
    before, cal_before, _ = ckpt.load(tmp_path / "m")
    after, cal_after, config = ckpt.load(tmp_path / "m2")
    assert set(cal_after.assets) == set(site.assets) and config["training"]["commissioned"]["windows"] == len(site)
    weights = [k for k in before.state_dict() if not k.startswith("tails.") and k != "line_bank"]
    assert all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in weights)
    assert not torch.equal(before.tails.knots_x, after.tails.knots_x)  # refitted on the site
    assert site.code_vocab() <= after.code_vocab
    get_settings.cache_clear()
