"""`fusionwatch bench`: every benchmark's code path at tiny sizes, on real parts.

Never asserts a time: these tests check that each benchmark runs, measures what it says (both
sides of every naive-vs-optimised comparison, FLOPs, latencies, lag series), and fails clearly
where it must — not how fast anything is (figures belong in docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What the GPU box lacks: `bench model` must run without any of it.
BLOCKED = ("pydantic_settings", "kafka", "sqlalchemy", "alembic", "psycopg", "av", "torchaudio", "fastapi",
           "apscheduler", "prometheus_client")


def _bench(args: list[str], block: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    code = "import runpy, sys\n"
    if block:
        code += textwrap.dedent(f"""
            import importlib.abc
            class _Block(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in {BLOCKED!r}:
                        raise ImportError(f"{{name}} is not installed on this (simulated GPU) machine")
                    return None
            sys.meta_path.insert(0, _Block())
        """)
    code += f"sys.argv = ['services.bench'] + {args!r}\nrunpy.run_module('services.bench', run_name='__main__')\n"
    env = os.environ | {"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_bench_model_runs_standalone_without_service_dependencies(tmp_path):
    out = tmp_path / "model.json"
    proc = _bench(["model", "--tiny", "--batch-sizes", "1,4", "--min-time", "0.05", "--threads", "1",
                   "--json", str(out)], block=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["name"] == "model"
    eager = [r for r in res["rows"] if r["mode"] == "eager"]
    assert [r["batch"] for r in eager] == [1, 4]
    assert all(r["windows/s"] > 0 and r["latency p50 ms"] > 0 for r in eager)
    assert res["summary"]["flops_per_window"] > 1e6  # convolutions and attention were counted
    assert res["summary"]["peak_tflops_fp32"] > 0  # measured in-process on CPU
    assert 0 < res["summary"]["best_fraction_of_peak"] < 1
    assert res["summary"]["speedup_vs_naive_batch1"] > 0
    assert res["machine"]["cores"] >= 1 and len(res["machine"]["load_average_1_5_15"]) == 3
    assert "fusionwatch bench model" in proc.stdout  # the table


def test_bench_model_fails_clearly_without_cuda_or_checkpoint(tmp_path):
    import torch

    from models.checkpoint import CheckpointError
    from services.bench.model import ModelBenchConfig, run_model_bench
    from services.bench.report import BenchError

    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="sees no CUDA GPU.*--device cpu"):
            run_model_bench(ModelBenchConfig(device="cuda", tiny=True))
    with pytest.raises(CheckpointError, match="fusionwatch train"):
        run_model_bench(ModelBenchConfig(checkpoint=tmp_path / "nothing-here"))
    with pytest.raises(BenchError, match="fp32 and/or bf16"):
        run_model_bench(ModelBenchConfig(dtypes=["fp16"]))
    with pytest.raises(BenchError, match="'random' or 'minilm'"):
        run_model_bench(ModelBenchConfig(tiny=True, text="glove", batch_sizes=[1], min_time_s=0.01))


def test_bench_model_checkpoint_and_compile_paths(tmp_path):
    """A saved checkpoint is timed as is; torch.compile either runs or leaves a note, never a crash."""
    import torch

    from models import checkpoint
    from models.fusion import FusionConfig, FusionModel
    from services.bench.model import ModelBenchConfig, run_model_bench

    torch.set_num_threads(1)
    ckpt = tmp_path / "ckpt"
    checkpoint.save(ckpt, FusionModel(FusionConfig.tiny()), None)
    res = run_model_bench(ModelBenchConfig(checkpoint=ckpt, batch_sizes=[2], min_time_s=0.02, compile=[False],
                                           baseline=True))
    assert res.config["model"].startswith("checkpoint fw-")
    modes = [r["mode"] for r in res.rows]
    assert modes[0] == "eager" and "naive (eager, batch 1)" in modes  # batch 1 was not asked: timed anyway


def test_bench_decode_measures_both_sides(tmp_path):
    from schemas import envelope
    from services.bench.decode import DecodeBenchConfig, run_decode_bench

    res = run_decode_bench(DecodeBenchConfig(frame_sizes=[(320, 240), (640, 480)], frames=4, audio_windows=3,
                                             text=True, text_windows=6, min_time_s=0.01, threads=1))
    stages = {(r["stage"].split(" (")[0], r["variant"].split(":")[0].split(" (")[0]) for r in res.rows}
    for size in ("320x240", "640x480"):
        assert (f"frame {size}", "naive") in stages and (f"frame {size}", "draft decode") in stages
        assert res.summary[f"draft_speedup_{size}"] > 0
    assert any(r["stage"].startswith("audio chunk") for r in res.rows)
    assert res.summary["logmel_batched_speedup"] > 0
    assert res.summary["text_cache_speedup"] > 0
    draft = [r for r in res.rows if r["variant"].startswith("draft")]
    # the draft picture is the same picture: a small mean difference to full decode + resize
    assert all(float(r["note"].split("|Δ| ")[1].split("/")[0]) < 12 for r in draft)
    if envelope.HAS_JPEG_FAST_PATH:  # the same draft decode through Pillow, for comparison
        assert sum(r["variant"].startswith("Pillow draft decode") for r in res.rows) == 2
    cached = next(r for r in res.rows if r["variant"] == "normalised-line cache")
    assert "hit rate" in cached["note"]
    path = res.write(tmp_path / "decode.json")
    assert json.loads(path.read_text())["summary"]["draft_speedup_320x240"] > 0


def test_frame_memo_reuses_frames_of_overlapping_windows_exactly():
    """The scorer's per-frame memo (models/framememo.py): the model's outputs are the same with and
    without it, and a frame seen in the previous window is not encoded again."""
    import torch

    from models.framememo import FrameMemo
    from models.fusion import FusionConfig, FusionModel
    from services.bench.model import ModelBenchConfig, make_batch, synthetic_features

    torch.manual_seed(0)
    model = FusionModel(FusionConfig.tiny()).eval()
    feats = synthetic_features(model, ModelBenchConfig(), n=3)
    # window 2 starts where window 1's second half is: its first four frames are window 1's last four
    feats[1].frames[:4] = feats[0].frames[4:]
    feats[2].frames, feats[2].frame_times = feats[2].frames[:5], feats[2].frame_times[:5]  # missing frames
    batches = [make_batch(model, [f], 1) for f in feats]
    with torch.inference_mode():
        want = [model(b, want_weights=True) for b in batches]
        model.frame_memo = memo = FrameMemo(max_frames=64)
        got = [model(b, want_weights=True) for b in batches]
    for w, g in zip(want, got):
        assert torch.equal(w.components, g.components) and torch.equal(w.frame_error, g.frame_error)
        assert torch.equal(w.summary, g.summary)
    assert (memo.misses, memo.hits) == (8 + 4 + 5, 4) and len(memo) == 17  # missing frames are not encoded
    memo.max_frames = 0  # the naive baseline: no memo
    with torch.inference_mode():
        assert torch.equal(model(batches[0]).components, want[0].components)
    assert memo.hits == 4
    # keyed by the frames' bytes (collate's) or, without them, by their float pixels: the same hits
    assert batches[0].frame_pixels is not None
    model.frame_memo = memo = FrameMemo(max_frames=64)
    with torch.inference_mode():
        for b, w in zip(batches, want):
            b.frame_pixels = None
            assert torch.equal(model(b).components, w.components)
    assert (memo.misses, memo.hits) == (8 + 4 + 5, 4)


def test_uint8_frames_and_the_memo_give_the_float_frames_numbers():
    """The scorer hands the shipped model uint8 frames (`collate(..., float_frames=False)`): the
    model converts, lights and pools only the frames its memo has not seen, and keeps each frame's
    scene view. Every output is bit-identical to float frames', with and without the memo, missing
    frames too."""
    import torch

    from models import checkpoint
    from models.features import collate
    from models.framememo import FrameMemo
    from services.bench.model import ModelBenchConfig, synthetic_features

    model, _, _ = checkpoint.load(ROOT / "models/pretrained/factory-standard", device="cpu")
    model.eval().frames.to(memory_format=torch.channels_last)
    assert model.detail is not None and model.cfg.scene_pool == 2 and model.cfg.light_ref > 0  # every path
    feats = synthetic_features(model, ModelBenchConfig(), n=3)
    feats[1].frames[:4] = feats[0].frames[4:]  # window 2 overlaps window 1 by four frames
    feats[2].frames, feats[2].frame_times = feats[2].frames[:5], feats[2].frame_times[:5]  # missing frames
    fc, vocab = model.cfg.features, model.code_vocab
    floats, uint8 = collate(feats, fc, vocab), collate(feats, fc, vocab, float_frames=False)
    assert uint8.frames.dtype == torch.uint8 and floats.frames.dtype == torch.float32

    def run(batch):  # without a memo, then twice with a fresh one (every frame from it the second time)
        model.frame_memo = None
        outs = [model(batch, want_weights=True)]
        model.frame_memo = FrameMemo(max_frames=64)
        return outs + [model(batch, want_weights=True) for _ in range(2)], model.frame_memo

    with torch.inference_mode():
        want, _ = run(floats)
        got, memo = run(uint8)
    assert (memo.misses, memo.hits) == (8 + 4 + 5, 4 + 21)  # missing frames are not encoded
    assert all(len(parts) == 4 for parts in memo._cache.values())  # residual, stats, detail residual, scene view
    for w, g in zip(want, got):
        for name in ("components", "component_mask", "frame_error", "frame_scores", "detail_error", "detail_scores",
                     "mel_error", "summary", "consistency_logits"):
            assert torch.equal(getattr(w, name), getattr(g, name)), name
        assert all(torch.equal(w.attention_to[k], g.attention_to[k]) for k in w.attention_to)


def test_fused_convolutions_give_the_layers_numbers():
    """At CPU inference the encoders' convolution + activation run as one oneDNN call
    (`models.encoders.conv_act`); every output of the model matches the layers run one by one."""
    import torch

    import models.encoders as encoders
    from models.fusion import FusionConfig, FusionModel
    from services.bench.model import ModelBenchConfig, make_batch, synthetic_features

    if not encoders._HAS_FUSED:
        pytest.skip("this torch has no oneDNN fused convolutions")
    torch.manual_seed(0)
    model = FusionModel(FusionConfig()).eval()
    model.frames.to(memory_format=torch.channels_last)  # as the scorer runs it, and NCHW below
    batch = make_batch(model, synthetic_features(model, ModelBenchConfig(), n=3), 3)
    outs = {}
    try:
        for fused in (True, False):
            encoders._HAS_FUSED = fused
            with torch.inference_mode():
                outs[fused] = (model(batch), model.frames.residual(batch.frames.flatten(0, 1).contiguous()))
    finally:
        encoders._HAS_FUSED = True
    (a, ra), (b, rb) = outs[True], outs[False]
    for name in ("components", "frame_error", "mel_error", "summary"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
    for x, y in zip(ra, rb):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_frame_residual_is_the_reconstruction_error():
    """`residual` computes the last decoder layer as output phases without assembling the
    image; it must equal the smoothed squared error of `forward`'s reconstruction."""
    import torch

    from models.encoders import _box3
    from models.fusion import FusionConfig, FusionModel

    torch.manual_seed(0)
    ae = FusionModel(FusionConfig()).frames.eval()
    frames = torch.rand(5, 3, 60, 80)
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            ae.to(memory_format=layout)
            recon, want_stats = ae(frames, with_stats=True)
            err, stats = ae.residual(frames)
            want = _box3(((frames - recon) ** 2).sum(1))
            assert err.shape == (5, 60, 80)
            assert torch.allclose(err, want, atol=1e-6, rtol=1e-5) and torch.equal(stats, want_stats)
        odd = torch.rand(2, 3, 59, 79)  # odd sizes take the cropped path
        recon = ae(odd)
        assert torch.allclose(ae.residual(odd)[0], _box3(((odd - recon) ** 2).sum(1)), atol=1e-6)


def test_record_bank_replays_with_fresh_times():
    """The pipeline's producer sends simulator records with rewritten ce_time, in order."""
    from schemas.envelope import Accepted, Kind, decode, parse_time
    from services.bench.pipeline import PipelineBenchConfig, RecordBank, _retime

    bank = RecordBank(PipelineBenchConfig(seed=3))
    two = bank.select(2, 3.0)
    four = bank.select(4, 3.0)
    assert {it[2] for it in two} == {"L1-S1", "L1-S2"} and {it[2] for it in four} == {"L1-S1", "L1-S2", "L1-S3", "L1-S4"}
    assert [it for it in four if it[2] in ("L1-S1", "L1-S2")] == two  # a station does not depend on the others
    kinds = {it[1] for it in two}
    assert kinds == {Kind.FRAME, Kind.AUDIO, Kind.LOG}
    assert len([it for it in two if it[1] is Kind.FRAME]) == 2 * 3 * 4  # 4 fps
    origin = 1_800_000_000.0
    offset, kind, _, key, value, headers = two[5]
    res = decode(kind, key, value, _retime(headers, origin + offset), now=origin + offset)
    assert isinstance(res, Accepted)
    assert abs(res.envelope.time - (origin + offset)) < 1e-3
    assert parse_time(dict(headers)["ce_time"].decode()) != res.envelope.time


@pytest.mark.slow
def test_bench_pipeline_end_to_end_with_two_monitor_processes(broker):
    """Capacity runs (optimised and naive) and a real-time run through the real broker, real monitor
    processes and SQLite; in the real-time run two processes of one group share the partitions."""
    from kafka.partitioner.default import murmur2

    from services.bench.pipeline import PipelineBenchConfig, run_pipeline_bench
    from services.simulator.plant import asset_names

    # precondition: the 4 simulated assets land on both of the 2 partitions (Kafka's key hash)
    assert {(murmur2(a.encode()) & 0x7FFFFFFF) % 2 for a in asset_names(4)} == {0, 1}
    cfg = PipelineBenchConfig(assets=[4], duration_s=8.0, warmup_s=2.0, backlog_s=6.0, backlog_assets=4,
                              modes=["optimised", "naive"], realtime_modes=["optimised"], processes=2,
                              capacity_processes=[1], capacity_repeats=2, partitions=2, random_init=True,
                              tiny=True, bootstrap=broker.bootstrap, threads=1)
    res = run_pipeline_bench(cfg)
    # capacity runs interleaved: optimised, naive, optimised, naive; the ratio is the pairs' median
    assert [(r["mode"], r.get("repeat")) for r in res.rows if r["run"] == "capacity"] == [
        ("optimised", 1), ("naive", 1), ("optimised", 2), ("naive", 2)]
    assert len(res.summary["capacity_ratio_windows_per_cpu_s_runs"]) == 2
    rows = {(r["run"], r["mode"], r["processes"]): r for r in res.rows}
    assert set(rows) == {("capacity", "optimised", 1), ("capacity", "naive", 1), ("real time", "optimised", 2)}
    for key in [k for k in rows if k[0] == "capacity"]:
        r = rows[key]
        # 4 assets x 6 s, hop 1 s: about 7 windows each, every record aligned, none late or rejected
        assert r["windows"] >= 4 * 6 and r["late"] == 0 and r["rejected"] == 0, r
        assert r["windows/s"] > 0 and r["windows/cpu-s"] > 0 and r["rss MiB"] > 50
        assert r["cpu by thread"] and "score" in r["cpu by thread"]  # from the monitor's own 20 ms marks
    assert res.summary["capacity_ratio_windows_per_cpu_s"] > 0
    rt = rows[("real time", "optimised", 2)]
    assert rt["p50 s"] is not None and rt["p50 s"] <= rt["p95 s"] <= rt["p99 s"]
    assert rt["windows"] >= 4 * (8 - 1)
    by_process = rt["windows by process"]
    assert len(by_process) == 2 and all(n > 0 for n in by_process), by_process  # the group shared the load
    assert sum(by_process) == rt["windows"]
    series = res.series["realtime optimised 4a"]
    assert series["columns"][:3] == ["t_s", "lag_records", "lag_s"] and len(series["points"]) >= 6
    assert rt["cpu by thread"] and "score" in rt["cpu by thread"]


def test_kafka_client_bench_reads_every_record_with_both_clients():
    """`python -m services.bench.kafka_clients`: both clients read every record of the same topics,
    and each repeat charges a CPU time to each."""
    pytest.importorskip("confluent_kafka")
    from services.bench.kafka_clients import KafkaClientBenchConfig, run_kafka_client_bench

    res = run_kafka_client_bench(KafkaClientBenchConfig(assets=1, seconds=2.0, partitions=2, repeats=1))
    n = res.summary["records"]
    assert n > 10 and not res.notes  # a note names a client that missed records
    assert [(r["client"], r["records"]) for r in res.rows] == [("kafka-python", n), ("confluent-kafka", n)]
    assert all(r["cpu_us_per_record"] > 0 for r in res.rows) and res.summary["ratio_first_over_second"] > 0
