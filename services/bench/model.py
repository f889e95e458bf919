"""`fusionwatch bench model`: throughput and latency of the fusion model alone, by batch size,
device, dtype and compile mode, against the naive baseline of one window per forward pass.

Where it sits: the score hop's device work, as `models.scorer.AnomalyScorer.score` runs it — one
forward pass with attention weights (attribution needs them), the score combination, under
`torch.inference_mode()` and, for bf16, autocast — on model-ready batches (`models.features.collate`
of synthetic windows: 8 frames 80x60, 2 s of 64-band log-mel, log lines). Featurization and
decoding are `bench decode`'s business; host↔device copies are timed in their own row.

Runs on a bare GPU machine: imports torch, numpy and `models` only (no torchaudio, no MiniLM
unless `--text minilm`, no service dependencies). Without `--checkpoint` the model is a
random-init model of the standard recipe's config with a filled normal-line memory bank — the same cost as a trained one.

FLOPs per window come from torch's FlopCounterMode (matmuls, convolutions, attention; elementwise
work is not counted, so the fraction of peak is a lower bound of how busy the device is). Peak:
`--peak-tflops`, else a table of known GPUs (dense tensor-core figures), else, on CPU, a float32
matmul measured in-process with the same thread count.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.bench.report import BenchError, BenchResult, Timing, machine_info, measure

# Dense peak TFLOP/s (no sparsity), by substring of torch.cuda.get_device_name. fp32 = plain CUDA
# cores (TF32 tensor cores are not used: torch leaves allow_tf32 off for matmuls).
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp32": 67.0},  # SXM
    "A100": {"bf16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp32": 31.2},
}


@dataclass
class ModelBenchConfig:
    device: str = "cpu"
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    batch_sizes: list[int] | None = None  # None: a default per device
    compile: list[bool] = field(default_factory=lambda: [False])
    compile_mode: str = "default"
    compile_top: int = 1  # compile only at the best eager batch size(s): each shape is a new compile
    layouts: list[str] = field(default_factory=lambda: ["nchw"])  # and/or channels_last (conv weights NHWC)
    checkpoint: Path | None = None
    tiny: bool = False
    text: str = "random"  # random | minilm
    line_bank: int = 256  # a trained plant model keeps tens to hundreds of distinct normal lines
    log_lines: int = 4  # lines per synthetic window (the PLC sends ~1 a second; bursts more)
    min_time_s: float = 2.0
    threads: int | None = None
    peak_tflops: float | None = None
    baseline: bool = True
    seed: int = 0


def default_batch_sizes(device: str) -> list[int]:
    return [1, 64, 256, 1024, 4096, 8192] if device.startswith("cuda") else [1, 8, 32, 64, 128]


# ── model and inputs ───────────────────────────────────────────────────────────────────────────

def build_model(cfg: ModelBenchConfig):
    """(model on the CPU, description). A checkpoint is loaded; otherwise random init."""
    import torch

    from models.fusion import FusionConfig, FusionModel
    from services.training.recipes import product_config

    if cfg.checkpoint is not None:
        from models import checkpoint

        model, _, config = checkpoint.load(cfg.checkpoint, device="cpu")  # raises a clear CheckpointError
        desc = f"checkpoint {config.get('version', cfg.checkpoint)}"
    else:
        fcfg = FusionConfig.tiny() if cfg.tiny else product_config()
        model = FusionModel(fcfg)
        desc = f"random-init {'tiny' if cfg.tiny else 'standard-recipe'} config"
        g = torch.Generator().manual_seed(cfg.seed)
        # fitted buffers a trained model carries: a memory bank of normal lines and a log-rate density
        if hasattr(model, "line_bank") and model.line_bank.numel() == 0 and cfg.line_bank > 0:
            bank = torch.nn.functional.normalize(torch.randn(cfg.line_bank, model.line_bank.shape[1], generator=g), dim=-1)
            model.line_bank = bank
        if hasattr(model, "rate_hist") and model.rate_hist.numel() == 0:
            hist = torch.rand(16, generator=g) + 0.1
            model.rate_hist = hist / hist.sum()
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    return model, f"{desc}, {params / 1e3:.0f} k parameters"


def text_pool(cfg: ModelBenchConfig, n: int = 64) -> np.ndarray:
    """(n, 384) unit vectors standing for the embedding cache's content."""
    from models.text import EMBED_DIM

    if cfg.text == "random":
        rng = np.random.default_rng(cfg.seed)
        v = rng.standard_normal((n, EMBED_DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    if cfg.text == "minilm":
        from models.text import TextEncoder

        lines = [f"station L1-S{i % 4 + 1}: cycle {i} complete, part SN-{1000 + i} ok" for i in range(n // 2)]
        lines += [f"conveyor speed set to {i % 7} m/min by operator" for i in range(n - len(lines))]
        return TextEncoder().embed(lines)  # raises DependencyUnavailable when the weights are missing
    raise BenchError(f"--text must be 'random' or 'minilm', not {cfg.text!r}")


def synthetic_features(model, cfg: ModelBenchConfig, n: int = 16) -> list:
    """n model-ready windows with every modality present (the expensive case)."""
    from models.features import N_LEVELS, WindowFeatures

    fc = model.cfg.features
    rng = np.random.default_rng(cfg.seed)
    pool = text_pool(cfg)
    vocab = sorted(getattr(model, "code_vocab", ()) or ["E100"])
    feats = []
    for i in range(n):
        nl = min(cfg.log_lines, fc.max_lines)
        feats.append(WindowFeatures(
            asset=f"L1-S{i % 4 + 1}", start=float(i), end=float(i) + fc.window_s,
            frames=rng.integers(0, 256, (fc.max_frames, fc.frame_height, fc.frame_width, 3), dtype=np.uint8),
            frame_times=np.linspace(0, fc.window_s, fc.max_frames, endpoint=False).astype(np.float32),
            mel=rng.normal(-4, 2, (fc.n_mels, fc.audio_frames)).astype(np.float32),
            audio_mask=np.ones(fc.audio_frames, bool),
            log_emb=pool[rng.integers(0, len(pool), nl)],
            log_times=np.sort(rng.uniform(0, fc.window_s, nl)).astype(np.float32),
            log_levels=rng.integers(0, N_LEVELS - 1, nl).astype(np.int64),
            log_codes=[vocab[0] if k == 0 else None for k in range(nl)],
            log_text=[f"line {k}" for k in range(nl)], log_count=nl, log_present=True,
        ))
    return feats


def make_batch(model, feats: list, batch_size: int):
    from models.features import collate

    items = [feats[i % len(feats)] for i in range(batch_size)]
    return collate(items, model.cfg.features, getattr(model, "code_vocab", frozenset()))


def forward_fn(model, dtype: str, device: str, module=None):
    """The scorer's device work for one batch (forward with attention weights, then combine).
    `module`: what runs the forward (the model, or its torch.compile wrapper)."""
    import torch

    module = model if module is None else module  # a compiled module has no truth value

    def autocast():
        if dtype == "bf16":
            return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(batch):
        with torch.inference_mode(), autocast():
            out = module(batch, want_weights=True)
            raw, _, weights = model.combine(out)
        return out, raw, weights

    return run


def count_flops_per_window(model, feats: list) -> float:
    """FLOPs of one window's forward (counted on the CPU in float32 at batch 2, divided by 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = make_batch(model, feats, 2)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(batch, want_weights=True)
    return counter.get_total_flops() / 2


# ── peak ─────────────────────────────────────────────────────────────────────────────────────

def device_peak_tflops(device: str, dtype: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from)."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        for key, peaks in GPU_PEAK_TFLOPS.items():
            if key in name:
                return peaks.get(dtype), f"table: {key} dense {dtype}"
        return None, f"unknown GPU {name!r}: pass --peak-tflops"
    # CPU: what a large float32 matmul reaches here, now (the box may be shared)
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = measure(lambda: torch.mm(a, b), min_time_s=0.5, min_iters=3, cpu_clock="process")
    per_call_s = min(t.per_call_s)
    return 2 * n**3 / per_call_s / 1e12, f"measured: float32 {n}x{n} matmul, {torch.get_num_threads()} threads (best call)"


# ── the benchmark ────────────────────────────────────────────────────────────────────────────

def run_model_bench(cfg: ModelBenchConfig, progress=None) -> BenchResult:
    import torch

    step = progress or (lambda msg: None)
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU here; run with --device cpu, "
                         "or on the GPU machine check `python -c 'import torch; print(torch.cuda.is_available())'`")
    for dt in cfg.dtypes:
        if dt not in ("fp32", "bf16"):
            raise BenchError(f"--dtype {dt!r}: use fp32 and/or bf16")
    for layout in cfg.layouts:
        if layout not in ("nchw", "channels_last"):
            raise BenchError(f"--layouts {layout!r}: use nchw and/or channels_last")
    if device == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # static shapes per batch size: let cuDNN pick its kernels
    batch_sizes = cfg.batch_sizes or default_batch_sizes(device)
    step("building the model")
    model, desc = build_model(cfg)  # on the CPU: FLOPs are counted there
    feats = synthetic_features(model, cfg)
    result = BenchResult("model", machine_info(device), {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
        "batch_sizes": batch_sizes, "model": desc, "features": model.cfg.features.to_dict()})
    step("counting FLOPs")
    flops = count_flops_per_window(model, feats)
    result.summary["flops_per_window"] = flops
    model = model.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    peaks = {dt: device_peak_tflops(device, dt) for dt in cfg.dtypes}
    for dt, (peak, src) in peaks.items():
        result.summary[f"peak_tflops_{dt}"] = cfg.peak_tflops or peak
        result.notes.append(f"peak {dt}: {'--peak-tflops' if cfg.peak_tflops else src}")
    if "bf16" in cfg.dtypes and device == "cpu" and not _cpu_has_bf16():
        result.notes.append("bf16 on this CPU has no native instructions (no AVX512-BF16/AMX): "
                            "expect it to be slower than fp32")

    naive: dict[str, Timing] = {}
    best: dict[tuple[str, str, bool], tuple[float, int]] = {}
    for layout in cfg.layouts:
        model = model.to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
        for dt in cfg.dtypes:
            run = forward_fn(model, dt, device)
            peak = cfg.peak_tflops or peaks[dt][0]
            eager_rates: dict[int, float] = {}
            for compiled in cfg.compile:
                fn, sizes = run, batch_sizes
                if compiled:
                    ranked = sorted(eager_rates, key=eager_rates.get, reverse=True)[: cfg.compile_top]
                    sizes = sorted(ranked) or batch_sizes
                    fn = _compile(model, dt, cfg, device, result)
                    if fn is None:
                        continue
                for bs in sizes:
                    mode = "compile" if compiled else "eager"
                    step(f"{layout} {dt} {mode} batch {bs}")
                    row = {"device": device, "layout": layout, "dtype": dt, "mode": mode, "batch": bs}
                    t = _time_case(fn, model, feats, bs, cfg, device, sync, row, warmup=3 if compiled else 1)
                    result.rows.append(row)
                    if t is None:
                        break  # out of memory or failed: larger batches will not do better
                    rate = t.items_per_s
                    if not compiled:
                        eager_rates[bs] = rate
                        if bs == 1 and layout == cfg.layouts[0]:
                            naive[dt] = t
                    row.update({"windows/s": rate, "latency p50 ms": t.latency_ms(0.5),
                                "latency p95 ms": t.latency_ms(0.95), "TFLOP/s": rate * flops / 1e12,
                                "% of peak": 100 * rate * flops / 1e12 / peak if peak else None})
                    if device == "cpu":
                        row["windows/cpu-s"] = t.items_per_cpu_s
                    if rate > best.get((layout, dt, compiled), (0.0, 0))[0]:
                        best[(layout, dt, compiled)] = (rate, bs)
            if cfg.baseline and dt not in naive and layout == cfg.layouts[0]:
                step(f"{dt} naive baseline (batch 1)")
                row = {"device": device, "layout": layout, "dtype": dt, "mode": "naive (eager, batch 1)", "batch": 1}
                t = _time_case(run, model, feats, 1, cfg, device, sync, row)
                result.rows.append(row)
                if t is not None:
                    naive[dt] = t
                    row.update({"windows/s": t.items_per_s, "latency p50 ms": t.latency_ms(0.5),
                                "latency p95 ms": t.latency_ms(0.95)})

    # headline: the best configuration and its ratio to one-window-at-a-time fp32 eager
    if best:
        (layout, dt, compiled), (rate, bs) = max(best.items(), key=lambda kv: kv[1][0])
        peak = cfg.peak_tflops or peaks[dt][0]
        result.summary.update({
            "best_windows_per_s": rate,
            "best_config": f"{dt} {layout} {'compiled' if compiled else 'eager'} batch {bs}",
            "best_tflops": rate * flops / 1e12, "best_fraction_of_peak": rate * flops / 1e12 / peak if peak else None,
            "assets_per_device_model_bound": rate,  # hop 1 s: one window per asset per second
        })
        ref = naive.get("fp32") or next(iter(naive.values()), None)
        if ref is not None and ref.items_per_s > 0:
            result.summary["speedup_vs_naive_batch1"] = rate / ref.items_per_s
        if device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
            step("host↔device copies")
            _transfer_rows(model, feats, dt, bs, device, cfg, result, sync)
    return result.finish()


def _time_case(fn, model, feats, bs: int, cfg: ModelBenchConfig, device: str, sync, row: dict, warmup: int = 1):
    """Time `fn` on a device-resident batch of `bs` windows; None (with a note in `row`) when it
    does not fit or fails — a compile that breaks at run time is reported, not fatal."""
    import torch

    batch = None
    try:
        batch = make_batch(model, feats, bs).to(device)
        if warmup > 1:  # compiled: the first call compiles; say how long that took
            t0 = time.perf_counter()
            fn(batch)
            if sync:
                sync()
            row["first call s"] = time.perf_counter() - t0
            warmup -= 1
        return measure(lambda: (fn(batch), bs)[1], cfg.min_time_s, min_iters=3, warmup=warmup,
                       cpu_clock="process", sync=sync)
    except torch.OutOfMemoryError:
        row["note"] = "out of memory"
    except Exception as e:
        row["note"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    finally:
        batch = None  # free device memory before the next case
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return None


def _transfer_rows(model, feats, dt, bs, device, cfg, result, sync) -> None:
    """The best configuration again, with the batch coming from pinned host memory and the outputs
    the scorer reads going back: what the monitor pays end to end on the device. Twice: frames as
    float32 (what `collate` makes today) and as uint8, converted on the device (4x fewer bytes)."""
    import torch

    run = forward_fn(model, dt, device)
    host = make_batch(model, feats, bs)
    pinned = type(host)(**{k: v.pin_memory() for k, v in host.__dict__.items()})
    frames_u8 = (host.frames * 255).round().to(torch.uint8).pin_memory()

    def once(uint8: bool):
        def fn():
            fields = {k: v.to(device, non_blocking=True) for k, v in pinned.__dict__.items() if k != "frames"}
            if uint8:
                fields["frames"] = frames_u8.to(device, non_blocking=True).float().div_(255.0)
            else:
                fields["frames"] = pinned.frames.to(device, non_blocking=True)
            out, raw, weights = run(type(pinned)(**fields))
            for x in (raw, weights, out.frame_error, out.mel_error, out.line_novelty):
                x.float().cpu()
            return bs
        return fn

    for uint8 in (False, True):
        label = "best + host copies" + (" (uint8 frames)" if uint8 else "")
        row = {"device": device, "dtype": dt, "mode": label, "batch": bs}
        try:
            t = measure(once(uint8), cfg.min_time_s, min_iters=3, cpu_clock="process", sync=sync)
        except Exception as e:  # pragma: no cover - reported, not fatal
            row["note"] = f"failed: {type(e).__name__}: {str(e)[:120]}"
            result.rows.append(row)
            continue
        row.update({"windows/s": t.items_per_s, "latency p50 ms": t.latency_ms(0.5), "latency p95 ms": t.latency_ms(0.95)})
        result.rows.append(row)
        result.summary["best_with_host_copies_windows_per_s" + ("_uint8" if uint8 else "")] = t.items_per_s


def _compile(model, dt: str, cfg: ModelBenchConfig, device: str, result: BenchResult):
    """torch.compile'd forward; None (with a note) where compiling does not work here."""
    import torch

    mode = cfg.compile_mode if device.startswith("cuda") else "default"
    try:
        compiled = torch.compile(model, mode=mode, dynamic=False)
    except Exception as e:
        result.notes.append(f"torch.compile unavailable: {type(e).__name__}: {str(e)[:160]}")
        return None
    note = (f"torch.compile mode={mode}, dynamic=False: one compile per batch size, at the "
            f"{cfg.compile_top} best eager size(s); compile time is in 'first call s', not in the figures")
    if note not in result.notes:
        result.notes.append(note)
    return forward_fn(model, dt, device, module=compiled)


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:  # pragma: no cover
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
