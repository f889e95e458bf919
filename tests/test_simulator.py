"""The simulators: fault schedules and ground truth, determinism, realism of normal operation,
faults that touch only the modalities they should (cross-modal ones: each modality normal alone),
the call centre's labelled speech, and `run_simulation` / `fusionwatch simulate` against a real broker."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from schemas.envelope import Accepted, Kind, decode, parse_time
from schemas.errors import ConfigError
from services.simulator.faults import (
    CROSS_MODAL_KINDS,
    FAULT_KINDS,
    MAX_FAULT_S,
    MIN_FAULT_S,
    Fault,
    fault_schedule,
    load_schedule,
    min_duration_for_all,
    write_ground_truth,
)
from services.simulator.plant import Plant, asset_names
from services.simulator.plc import NORMAL_CODES

T = 1_800_000_000.0


def collect(source, duration_s: float) -> dict[str, list[tuple[float, str, bytes, list]]]:
    out: dict[str, list] = defaultdict(list)
    for kind, rec in source.records(duration_s):
        t = parse_time(dict(rec.headers)["ce_time"].decode())
        out[kind.value].append((t, rec.key.decode(), rec.value, rec.headers))
    return out


def decoded(kind: Kind, rows, now: float = T + 3600):  # the consumer reads after the fact
    out = []
    for t, key, value, headers in rows:
        got = decode(kind, key.encode(), value, headers, now=now)
        assert isinstance(got, Accepted), got
        out.append((t, got.payload))
    return out


# ── schedules and ground truth ──────────────────────────────────────────────────────────────

def test_fault_kinds_cover_the_issue():
    required = {"surface_defect", "missing_component", "misaligned_part", "camera_occlusion", "bearing_fault",
                "imbalance", "belt_squeal", "cavitation", "unseen_error_code", "log_rate_anomaly",
                "motor_runs_conveyor_stopped", "estop_but_moving", "cycles_without_parts"}
    assert required <= set(FAULT_KINDS)
    assert CROSS_MODAL_KINDS == {"motor_runs_conveyor_stopped", "estop_but_moving", "cycles_without_parts"}
    assert all(len(FAULT_KINDS[k]) >= 2 for k in CROSS_MODAL_KINDS)


@pytest.mark.parametrize("n_assets,seed", [(1, 0), (4, 1), (16, 2), (4, 3)])
def test_all_preset_covers_every_kind_without_overlap(n_assets, seed):
    assets = asset_names(n_assets)
    for duration in (min_duration_for_all(n_assets), 900.0):
        faults = fault_schedule("all", assets, T, duration, seed)
        assert {f.kind for f in faults} == set(FAULT_KINDS)
        by_asset = defaultdict(list)
        for f in faults:
            assert T <= f.start < f.end <= T + duration
            assert MIN_FAULT_S <= f.duration <= MAX_FAULT_S + 1e-6
            assert f.modalities == FAULT_KINDS[f.kind]
            by_asset[f.asset].append(f)
        for rows in by_asset.values():
            rows.sort(key=lambda f: f.start)
            assert all(b.start - a.end >= 12.0 - 1e-6 for a, b in zip(rows, rows[1:]))  # normal gaps between faults
    assert len({f.asset for f in fault_schedule("all", assets, T, 900, seed)}) == n_assets  # spread over the assets
    with pytest.raises(ConfigError, match="longer --duration"):
        fault_schedule("all", assets, T, min_duration_for_all(n_assets) - 5, seed)


def test_demo_and_none_presets():
    assert fault_schedule("none", ["L1-S1"], T, 600, 0) == []
    from services.simulator.faults import DEMO_LEAD_S

    demo = fault_schedule("demo", asset_names(4), T, 300, 0)
    # the first fault once the stations have learned their baselines, and soon after that
    assert demo and T + DEMO_LEAD_S <= demo[0].start < T + DEMO_LEAD_S + 30
    assert any(f.cross_modal for f in demo[:3])


def test_ground_truth_round_trips_through_files(tmp_path):
    faults = fault_schedule("all", asset_names(4), T, 600, 5)
    path = tmp_path / "gt.jsonl"
    write_ground_truth(faults, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(faults)
    assert set(rows[0]) >= {"asset", "kind", "start", "end", "modalities", "start_time", "end_time", "cross_modal"}
    assert load_schedule(path) == faults
    # hand-written schedules: a JSON list with RFC 3339 times and offsets from the start
    hand = tmp_path / "faults.json"
    hand.write_text(json.dumps([{"asset": "L1-S2", "kind": "imbalance", "start": 30, "end": 45},
                                {"asset": "L1-S1", "kind": "belt_squeal", "start": "2027-01-15T08:00:10Z",
                                 "end": "2027-01-15T08:00:20Z"}]))
    got = load_schedule(hand, origin=T)
    assert [(f.asset, f.kind, f.start - T) for f in got] == [("L1-S1", "belt_squeal", 10.0), ("L1-S2", "imbalance", 30.0)]
    hand.write_text(json.dumps([{"asset": "L1-S1", "kind": "imbalance", "start": 10, "end": 30},
                                {"asset": "L1-S1", "kind": "cavitation", "start": 20, "end": 40}]))
    with pytest.raises(ConfigError, match="overlap"):
        load_schedule(hand, origin=T)
    with pytest.raises(ConfigError, match="unknown fault kind"):
        Fault("L1-S1", "gremlins", T, T + 10)


# ── the plant ───────────────────────────────────────────────────────────────────────────────

def test_plant_is_deterministic_however_records_are_split():
    faults = [Fault("L1-S2", "cavitation", T + 2, T + 9), Fault("L1-S1", "unseen_error_code", T + 3, T + 11)]
    whole = list(Plant(2, seed=3, start_time=T, faults=faults).records(10))
    p = Plant(2, seed=3, start_time=T, faults=faults)
    parts = list(p.records(2.3)) + list(p.records(0.45)) + list(p.records(7.25))
    assert p.time == pytest.approx(T + 10)
    assert [(k, r.key, r.value, r.headers) for k, r in whole] == [(k, r.key, r.value, r.headers) for k, r in parts]
    other = list(Plant(2, seed=4, start_time=T, faults=faults).records(3))
    assert [r.value for k, r in other if k is Kind.FRAME] != [r.value for k, r in whole if k is Kind.FRAME][:len(other)]


def test_plant_records_follow_the_contract_in_event_time_order():
    plant = Plant(3, seed=1, start_time=T, faults="none", fps=4.0)
    rows = list(plant.records(10))
    times = [parse_time(dict(r.headers)["ce_time"].decode()) for _, r in rows]
    assert times == sorted(times) and T <= times[0] and times[-1] < T + 10
    counts = defaultdict(int)
    for kind, rec in rows:
        got = decode(kind, rec.key, rec.value, rec.headers, now=T + 3600)
        assert isinstance(got, Accepted), got
        counts[(kind, got.envelope.asset)] += 1
        if kind is Kind.FRAME:
            assert (got.payload.width, got.payload.height) == (320, 240)
        elif kind is Kind.AUDIO:
            assert got.payload.original_rate == 16000 and got.payload.duration_s == pytest.approx(0.5)
        else:
            assert got.envelope.content_type == "application/json" and got.payload.msg
    for asset in plant.assets:
        assert counts[(Kind.FRAME, asset)] == 40 and counts[(Kind.AUDIO, asset)] == 20
        assert counts[(Kind.LOG, asset)] >= 3
    assert plant.assets == ["L1-S1", "L1-S2", "L1-S3"]


def test_normal_operation_has_variety():
    plant = Plant(2, seed=11, start_time=T, shift_s=1800)
    segs = plant.segments("L1-S1", T, T + 4 * 3600)
    speeds = {s.speed for s in segs if s.running}
    reasons = {s.reason for s in segs if not s.running}
    assert len(speeds) >= 5 and min(speeds) < 0.9 < 1.1 < max(speeds)  # speed changes
    assert {"shift_change", "estop"} <= reasons and len(reasons) >= 4  # idle periods with reasons
    assert len({s.shift for s in segs}) >= 7  # 30-min shifts in 4 h
    idle_share = sum(s.t1 - s.t0 for s in segs if not s.running) / (segs[-1].t1 - segs[0].t0)
    assert 0.05 < idle_share < 0.5
    other = plant.segments("L1-S2", T, T + 4 * 3600)
    assert [s.t0 for s in other[:5]] != [s.t0 for s in segs[:5]]  # stations are not in lockstep


def _plant_with_early_idle() -> tuple[Plant, object]:
    for seed in range(60):
        plant = Plant(1, seed=seed, start_time=T)
        segs = plant.segments("L1-S1", T, T + 100)
        for s in segs:
            if not s.running and 15 < s.t0 - T < 80 and s.t1 - s.t0 >= 12:
                return Plant(1, seed=seed, start_time=T), s
    raise AssertionError("no seed with an early idle period")


def test_idle_periods_all_modalities_agree():
    plant, idle = _plant_with_early_idle()
    data = collect(plant, idle.t1 - T + 1)
    run_span = (idle.t0 - 10, idle.t0 - 1)
    idle_span = (idle.t0 + 4, idle.t1 - 1)  # after the spin-down ramp

    def within(rows, span):
        return [(t, p) for t, p in rows if span[0] <= t < span[1]]

    frames = decoded(Kind.FRAME, data["frames"])

    def belt_motion(span):  # mean change between consecutive frames in the belt band
        imgs = [p.image[22:42].astype(float) for _, p in within(frames, span)]
        return float(np.median([np.abs(a - b).mean() for a, b in zip(imgs, imgs[1:])]))

    assert belt_motion(idle_span) < 0.5 * belt_motion(run_span)
    audio = decoded(Kind.AUDIO, data["audio"])

    def hum(span):  # the 100 Hz magnetostriction line of an energised motor
        x = np.concatenate([p.samples for _, p in within(audio, span)])
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        f = np.fft.rfftfreq(len(x), 1 / 16000)
        return spec[(f > 98) & (f < 102)].max() / np.median(spec[(f > 60) & (f < 140)])

    assert hum(idle_span) < 0.2 * hum(run_span)
    logs = decoded(Kind.LOG, data["logs"])
    idle_logs = [p for t, p in logs if idle.t0 + 0.5 < t < idle.t1]
    assert not [p for p in idle_logs if p.code == "C100"]  # no cycles while stopped
    assert any(p.code == "S110" for p in idle_logs)  # "line idle (reason)"
    stop_codes = {"S100", "S130", "S140", "S150", "S160", "S900"}
    assert any(p.code in stop_codes for t, p in logs if idle.t0 <= t < idle.t0 + 1)
    assert [p for t, p in logs if run_span[0] <= t < run_span[1] and p.code == "C100"]


REFERENCE = {"frames": ("imbalance", "unseen_error_code"), "audio": ("surface_defect", "unseen_error_code"),
             "logs": ("imbalance", "surface_defect")}


@pytest.fixture(scope="module")
def fault_runs():
    """One 1-asset plant per fault kind, same seed, same fault window: only the kind differs."""
    window = (T + 12.0, T + 24.0)
    runs = {}
    for kind in FAULT_KINDS:
        plant = Plant(["L1-S1"], seed=5, start_time=T, faults=[Fault("L1-S1", kind, *window)])
        runs[kind] = (plant, collect(plant, 30))
    return window, runs


def _values(rows, lo=-np.inf, hi=np.inf):
    return [(t, v) for t, _, v, _ in rows if lo <= t < hi]


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k not in CROSS_MODAL_KINDS])
def test_single_modality_faults_touch_only_their_modality(kind, fault_runs):
    (start, end), runs = fault_runs
    data = runs[kind][1]
    (modality,) = FAULT_KINDS[kind]
    for m in ("frames", "audio", "logs"):
        ref = runs[next(r for r in REFERENCE[m] if r != kind)][1]
        if m != modality:
            assert _values(data[m]) == _values(ref[m]), f"{kind} changed {m}"
            continue
        ref_m = ref[m]
        assert _values(data[m], hi=start) == _values(ref_m, hi=start)  # untouched before
        assert _values(data[m], start, end) != _values(ref_m, start, end)  # visible during the fault
        assert _values(data[m], end + 0.5) == _values(ref_m, end + 0.5)  # and gone after it
    if kind == "unseen_error_code":
        codes = {p.code for t, p in decoded(Kind.LOG, data["logs"]) if start <= t < end}
        assert codes - NORMAL_CODES  # a code normal operation never emits
    if kind == "log_rate_anomaly":
        n_fault = len(_values(data["logs"], start, end))
        n_ref = len(_values(runs["imbalance"][1]["logs"], start, end))
        assert n_fault > 4 * n_ref
        assert {p.code for t, p in decoded(Kind.LOG, data["logs"])} <= NORMAL_CODES  # only the rate is wrong


def test_cross_modal_faults_look_normal_in_each_modality(fault_runs):
    (start, end), runs = fault_runs
    normal = runs["imbalance"][1]  # frames and logs of normal operation on the same timeline
    normal_audio = runs["surface_defect"][1]["audio"]

    # motor runs, conveyor stopped: the microphone hears a normally running motor ...
    plant, data = runs["motor_runs_conveyor_stopped"]
    assert _values(data["audio"]) == _values(normal_audio)
    # ... the camera sees a belt standing still (as in any idle period) while the drive runs ...
    conveyor = plant._station("L1-S1").conveyor
    belt = conveyor.belt_pos(np.linspace(start + 0.1, end - 0.1, 20))
    assert np.ptp(belt) < 1e-6 and min(s.speed for s in plant.segments("L1-S1", start, end)) > 0.5
    assert _values(data["frames"], start, end) != _values(normal["frames"], start, end)
    # ... and the PLC logs an ordinary running-but-starved line: no cycles, only normal codes
    logs = [(t, p) for t, p in decoded(Kind.LOG, data["logs"]) if start + 1.5 < t < end]
    assert not [p for t, p in logs if p.code == "C100"] and any(p.code == "S120" for t, p in logs)
    assert {p.code for t, p in logs} <= NORMAL_CODES

    # E-STOP in the logs, while camera and microphone show the line running exactly as normal
    _, data = runs["estop_but_moving"]
    assert _values(data["frames"]) == _values(normal["frames"])
    assert _values(data["audio"]) == _values(normal_audio)
    logs = [(t, p) for t, p in decoded(Kind.LOG, data["logs"]) if start <= t < end + 0.5]
    assert logs[0][1].code == "S900" and any(p.code == "S901" for t, p in logs if t >= end)
    assert not [p for t, p in logs if p.code == "C100" and t < end]
    assert {p.code for t, p in logs} <= NORMAL_CODES

    # cycles without parts: logs and sound exactly normal, the camera sees an empty belt
    plant, data = runs["cycles_without_parts"]
    assert _values(data["logs"]) == _values(normal["logs"])
    assert _values(data["audio"]) == _values(normal_audio)
    assert _values(data["frames"], start, end) != _values(normal["frames"], start, end)
    assert [p for t, p in decoded(Kind.LOG, data["logs"]) if start < t < end and p.code == "C100"]


def test_visual_faults_change_what_parts_look_like(fault_runs):
    (start, end), runs = fault_runs
    normal = dict(decoded(Kind.FRAME, runs["imbalance"][1]["frames"]))
    for kind in ("surface_defect", "missing_component", "misaligned_part", "camera_occlusion", "cycles_without_parts"):
        frames = dict(decoded(Kind.FRAME, runs[kind][1]["frames"]))
        diffs = [np.abs(frames[t].image.astype(float) - normal[t].image).mean() for t in frames if start + 2 < t < end]
        assert np.median(diffs) > 0.3, kind
    sharp = np.mean([np.abs(np.diff(normal[t].image.astype(float), axis=1)).mean() for t in normal if start + 6 < t < end])
    blurred = dict(decoded(Kind.FRAME, runs["camera_occlusion"][1]["frames"]))
    soft = np.mean([np.abs(np.diff(blurred[t].image.astype(float), axis=1)).mean() for t in blurred if start + 6 < t < end])
    assert soft < 0.8 * sharp  # the occluded lens loses detail


# ── the call centre ─────────────────────────────────────────────────────────────────────────

POSITIVE_WORDS = re.compile(r"\b(wonderful|fantastic|great|perfect|amazing|love|helpful|best|thank)\b", re.I)


@pytest.fixture(scope="module")
def one_call_each():
    from services.simulator.callcenter import CALL_TYPES, CallCenter

    out = {}
    for call_type in CALL_TYPES:
        cc = CallCenter(1, seed=2, start_time=T, mix={call_type: 1.0})
        data = collect(cc, 55)
        out[call_type] = (cc, cc.calls[0], data)
    return out


def test_calls_are_labelled_per_utterance(one_call_each):
    for call_type, (cc, call, data) in one_call_each.items():
        assert call.call_type == call_type and re.fullmatch(r"call-\d{6}", call.call_id)
        customer = [u for u in call.utterances if u.speaker == "customer"]
        assert customer and all(u.sentiment in ("negative", "neutral", "positive") for u in call.utterances)
        f = [u.frustration for u in customer]
        if call_type == "calm":
            assert max(f) <= 0.3 and customer[-1].sentiment == "positive"
        elif call_type == "frustrated":
            assert min(f) >= 0.45 and all(u.sentiment == "negative" for u in customer)
        elif call_type == "escalating":
            assert f == sorted(f) and f[0] < 0.35 and f[-1] > 0.85 and f[-1] - f[0] > 0.5
        else:  # sarcastic: positive words, negative label, angry tone
            assert all(u.sentiment == "negative" and POSITIVE_WORDS.search(u.text) for u in customer)
        # labels_at: before the customer speaks, then each customer utterance's label holds
        assert cc.labels_at(call.call_id, call.start + 0.1) == ("neutral", 0.0)
        for u in customer:
            assert cc.labels_at(call.call_id, u.start + 0.01) == (u.sentiment, u.frustration)
        row = call.to_json()
        assert row["call_id"] == call.call_id and len(row["segments"]) == len(call.utterances)
        # transcript records: one per utterance, with the speaker, at the utterance start
        lines = [(t, p) for t, p in decoded(Kind.LOG, [r for r in data["logs"] if r[1] == call.call_id])]
        assert [(round(t, 3), p.msg, p.speaker) for t, p in lines] == \
               [(round(u.start, 3), u.text, u.speaker) for u in call.utterances]


def test_call_audio_is_speech_and_anger_sounds_louder(one_call_each):
    loud, calm = [], []
    for _, call, data in one_call_each.values():
        chunks = decoded(Kind.AUDIO, [r for r in data["audio"] if r[1] == call.call_id])
        t0 = chunks[0][0]
        assert t0 == pytest.approx(call.start)
        x = np.concatenate([p.samples for _, p in chunks])
        assert len(x) / 16000 == pytest.approx(call.end - call.start, abs=0.01)
        line_noise = float(np.sqrt(np.mean(x[: int(0.5 * 16000)] ** 2)))  # before the agent's greeting
        assert line_noise < 0.01
        for u in call.utterances:
            seg = x[int((u.start - t0) * 16000):int((u.end - t0) * 16000)]
            rms = float(np.sqrt(np.mean(seg ** 2)))
            # someone is speaking: well above the line (20 dB); the softest calm turn sits near 0.02,
            # and eSpeak's output moves in the third digit with the process's earlier syntheses
            assert rms > 10 * line_noise
            if u.speaker == "customer":
                (loud if u.frustration >= 0.6 else calm if u.frustration <= 0.2 else []).append(rms)
    assert loud and calm and np.mean(loud) > 1.3 * np.mean(calm)


def test_callcenter_is_deterministic():
    from services.simulator.callcenter import CallCenter

    a = list(CallCenter(2, seed=9, start_time=T).records(12))
    b = CallCenter(2, seed=9, start_time=T)
    b_rows = list(b.records(5)) + list(b.records(7))
    assert [(k, r.key, r.value, r.headers) for k, r in a] == [(k, r.key, r.value, r.headers) for k, r in b_rows]


# ── run_simulation and the CLI, against the real broker ─────────────────────────────────────

def read_topics(bootstrap: str, ks, topics, expected: int, timeout_s: float = 60.0):
    from kafka import TopicPartition

    from services.kafka import make_consumer

    consumer = make_consumer(ks, bootstrap, None)
    tps = [TopicPartition(t, p) for t in topics.inputs for p in range(ks.partitions)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for records in consumer.poll(500, max_records=5000).values():
            got.extend(records)
    consumer.close()
    return got


@pytest.mark.slow
def test_run_simulation_round_trip_through_the_broker(broker, make_topics, tmp_path):
    from services.settings import Settings
    from services.simulator.run import run_simulation

    ks, topics = make_topics(partitions=3)
    schedule = tmp_path / "faults.jsonl"
    schedule.write_text(json.dumps({"asset": "L1-S2", "kind": "estop_but_moving", "start": 2, "end": 6}) + "\n")
    gt = tmp_path / "gt.jsonl"
    stats = run_simulation(Settings(kafka=ks), broker.bootstrap, "factory", assets=3, duration_s=8, speed=0,
                           faults=str(schedule), seed=4, ground_truth_path=gt)
    assert stats.by_kind["frames"] == 3 * 32 and stats.by_kind["audio"] == 3 * 16 and not stats.stopped_early
    rows = [json.loads(line) for line in gt.read_text().splitlines()]
    assert [(r["asset"], r["kind"], r["start"] - stats.start_time) for r in rows] == [("L1-S2", "estop_but_moving", 2.0)]
    got = read_topics(broker.bootstrap, ks, topics, stats.records)
    assert len(got) == stats.records
    partitions = defaultdict(set)
    kind_of = {topics.frames: Kind.FRAME, topics.audio: Kind.AUDIO, topics.logs: Kind.LOG}
    now = time.time()
    for r in got:
        res = decode(kind_of[r.topic], r.key, r.value, r.headers, now=now)
        assert isinstance(res, Accepted), res
        partitions[r.key].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values())  # every modality of an asset on one partition number
    assert set(partitions) == {b"L1-S1", b"L1-S2", b"L1-S3"}


@pytest.mark.slow
def test_callcenter_simulation_round_trip(broker, make_topics, tmp_path):
    from services.settings import Settings
    from services.simulator.run import run_simulation

    ks, topics = make_topics(partitions=2)
    gt = tmp_path / "calls.jsonl"
    stats = run_simulation(Settings(kafka=ks), broker.bootstrap, "callcenter", assets=2, duration_s=10, speed=0,
                           seed=1, ground_truth_path=gt)
    calls = [json.loads(line) for line in gt.read_text().splitlines()]
    assert len(calls) == 2 and all(c["segments"] and c["call_type"] for c in calls)
    got = read_topics(broker.bootstrap, ks, topics, stats.records)
    assert len(got) == stats.records and stats.by_kind["frames"] == 0
    keys = {r.key.decode() for r in got}
    assert keys == {c["call_id"] for c in calls}
    transcripts = [decode(Kind.LOG, r.key, r.value, r.headers, now=time.time()) for r in got if r.topic == topics.logs]
    assert transcripts and all(isinstance(t, Accepted) and t.payload.speaker in ("agent", "customer") for t in transcripts)


def test_run_simulation_stops_on_request_and_paces_real_time():
    from services.settings import Settings
    from services.simulator.run import run_simulation

    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "stats", run_simulation(Settings(), None, "factory", assets=1, duration_s=None, speed=1.0, stop_event=stop,
                                dry_run=True)))
    thread.start()
    time.sleep(1.5)
    stop.set()
    thread.join(30)
    stats = result["stats"]
    assert stats.stopped_early and stats.records > 0
    # real-time pacing: never ahead of the wall clock (event time simulated <= wall time elapsed + one step)
    assert stats.sim_seconds <= stats.wall_seconds + 0.25 + 1e-6


def test_simulate_cli(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from services.cli import app
    from services.settings import get_settings

    monkeypatch.delenv("FW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("FW_KAFKA__BOOTSTRAP", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    gt = tmp_path / "gt.jsonl"
    r = runner.invoke(app, ["simulate", "--assets", "2", "--duration", "4", "--speed", "0", "--dry-run", "--json",
                            "--faults", "demo", "--ground-truth", str(gt)])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout[r.stdout.index("{"):])
    assert stats["records"] > 0 and stats["by_kind"]["frames"] == 2 * 16 and stats["asset_seconds_per_wall_s"] > 0
    assert gt.exists()
    r = runner.invoke(app, ["simulate", "--duration", "2"])
    assert r.exit_code != 0 and "fusionwatch broker" in str(r.exception)
    r = runner.invoke(app, ["simulate", "--faults", "nonsense", "--dry-run", "--duration", "2"])
    assert r.exit_code != 0 and "preset" in str(r.exception)
    get_settings.cache_clear()


@pytest.mark.slow
def test_sixteen_assets_generation_rate(capsys):
    """The throughput figure: asset-seconds generated per wall second (printed, never asserted)."""
    from services.settings import Settings
    from services.simulator.run import run_simulation

    stats = run_simulation(Settings(), None, "factory", assets=16, duration_s=10, speed=0, faults="none", seed=0,
                           dry_run=True)
    assert stats.by_kind["frames"] == 16 * 40 and stats.by_kind["audio"] == 16 * 20
    with capsys.disabled():
        print(f"\n[simulator] 16 assets x 10 s: {stats.asset_seconds_per_wall_s:.1f} asset-s per wall s "
              f"({stats.realtime_factor:.2f}x real time for 16 assets), {stats.asset_seconds_per_cpu_s:.1f} per CPU s")
