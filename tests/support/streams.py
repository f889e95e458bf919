"""Hand-made contract streams with a known answer, for monitor mechanics tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from schemas.envelope import Kind, WireRecord, encode_audio, encode_frame, encode_log, wav_bytes

_JPEG_CACHE: dict[int, bytes] = {}


def jpeg(level: int) -> bytes:
    if level not in _JPEG_CACHE:
        buf = io.BytesIO()
        Image.fromarray(np.full((48, 64, 3), level, np.uint8)).save(buf, "JPEG", quality=80)
        _JPEG_CACHE[level] = buf.getvalue()
    return _JPEG_CACHE[level]


def bright_fault_stream(assets: list[str], start: float, duration_s: float, faults: dict[str, tuple[float, float]],
                        fps: float = 4.0) -> list[tuple[Kind, WireRecord]]:
    """Frames are dark (level 40) except during `faults[asset] = (t0, t1)` (relative seconds), when
    they are bright (level 220). Audio 0.5 s chunks and a log line per second accompany them."""
    levels: dict[str, float | list[tuple[float, float, int]]] = {
        a: [(*faults[a], 220)] if a in faults else 40 for a in assets}
    return level_stream(levels, start, duration_s, fps)


def produce(producer, topics, records: list[tuple[Kind, WireRecord]]) -> None:
    topic_of = {Kind.FRAME: topics.frames, Kind.AUDIO: topics.audio, Kind.LOG: topics.logs}
    for kind, r in records:
        producer.send(topic_of[kind], key=r.key, value=r.value, headers=r.headers)
    producer.flush()


def level_stream(levels: dict[str, float | list[tuple[float, float, int]]], start: float, duration_s: float,
                 fps: float = 4.0, tag: str = "") -> list[tuple[Kind, WireRecord]]:
    """Frames of each asset at a brightness level — one number, or [(t0, t1, level), ...] pieces
    (relative seconds; dark 40 elsewhere) — with 0.5 s audio chunks and a log line per second.
    `tag` keeps ce_ids unique when a test produces the same asset twice."""
    recs: list[tuple[float, Kind, WireRecord]] = []
    chunk = wav_bytes(np.zeros(8000, np.float32), 16000)
    for a, spec in levels.items():
        for i in range(int(duration_s * fps)):
            rel = i / fps
            level = int(spec) if not isinstance(spec, list) else next((lv for t0, t1, lv in spec if t0 <= rel < t1), 40)
            recs.append((start + rel, Kind.FRAME, encode_frame(a, f"/{a}/cam", start + rel, jpeg(level), id=f"{a}{tag}-f{i}")))
        for i in range(int(duration_s * 2)):
            t = start + i * 0.5
            recs.append((t, Kind.AUDIO, encode_audio(a, f"/{a}/mic", t, chunk, id=f"{a}{tag}-a{i}")))
        for i in range(int(duration_s)):
            t = start + i + 0.25
            recs.append((t, Kind.LOG, encode_log(a, f"/{a}/plc", t, {"msg": f"cycle {i} ok", "serial": f"SN-{a}-{i}"},
                                                 id=f"{a}{tag}-l{i}")))
    recs.sort(key=lambda r: r[0])
    return [(k, r) for _, k, r in recs]
