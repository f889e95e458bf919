"""Builders for the summarizer and scheduler tests (no tests here): contract records of one asset
produced to real topics, with every frame a distinct flat colour so a test can tell which source
frame ended up in the video, and the matching `events` row + `fw.events` CloudEvent."""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from schemas.envelope import encode_audio, encode_frame, encode_log, format_time, wav_bytes
from schemas.events import AnomalyCloudEvent, AnomalyData, Attribution, EvidenceRange, event_id

OTHER_ASSET_COLOUR = (255, 0, 255)  # frames of a second asset sharing the partition: must never show
FRAME_SIZE = (320, 240)


def frame_colour(i: int) -> tuple[int, int, int]:
    """Distinct, mid-range flat colours (neighbours differ by >= 40 in some channel)."""
    return (40 + (i * 47) % 160, 40 + (i * 89) % 160, 40 + (i * 131) % 160)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = FRAME_SIZE) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@dataclass
class SourceFrame:
    t: float
    colour: tuple[int, int, int]
    offset: int


@dataclass
class Scenario:
    asset: str
    partition: int
    start: datetime
    end: datetime
    data: AnomalyData
    frames: list[SourceFrame] = field(default_factory=list)
    log_offsets: list[int] = field(default_factory=list)

    @property
    def event_id(self) -> str:
        return self.data.event_id


def produce_scenario(bootstrap: str, kafka, topics, *, asset: str = "L3-S2", partition: int = 1,
                     start: datetime | None = None, duration_s: float = 6.0, before_s: float = 5.0,
                     after_s: float = 5.0, fps: float = 10.0, kind: str = "bearing_fault", severity: str = "high",
                     corrupt_frames: int = 0, with_audio: bool = True, with_frames: bool = True,
                     other_asset: str | None = "L9-S9", escalation: bool = False) -> Scenario:
    """Produce frames/audio/logs of `asset` around an event [start, start + duration_s] and return the
    event (evidence offsets = the records inside the event window, all assets on the partition)."""
    from services.kafka import make_producer

    start = start or (datetime.now(timezone.utc) - timedelta(seconds=120)).replace(microsecond=0)
    t_start = start.timestamp()
    t_end = t_start + duration_s
    producer = make_producer(kafka, bootstrap)
    sent: dict[str, list[tuple[float, object, str]]] = {"frames": [], "audio": [], "logs": []}

    def send(topic_kind: str, topic: str, rec, t: float, tag) -> None:
        fut = producer.send(topic, key=rec.key, value=rec.value, headers=rec.headers, partition=partition)
        sent[topic_kind].append((t, fut, tag))

    n = int((before_s + duration_s + after_s) * fps)
    t0 = t_start - before_s
    if with_frames:
        for i in range(n):
            t = t0 + i / fps
            in_event = t_start <= t <= t_end
            value = jpeg(frame_colour(i))
            if corrupt_frames and in_event and i % 7 == 0 and corrupt_frames > 0:
                value = value[:40] + b"\x00garbage" * 20  # JPEG header then junk: decodes to an error
                corrupt_frames -= 1
                tag = ("corrupt", i)
            else:
                tag = ("frame", i)
            send("frames", topics.frames, encode_frame(asset, "/line3/cam2", t, value), t, tag)
            if other_asset and i % 5 == 0:
                send("frames", topics.frames, encode_frame(other_asset, "/line9/cam1", t, jpeg(OTHER_ASSET_COLOUR)),
                     t, ("other", i))
    if with_audio:
        sr = 16_000
        for k in range(int(before_s + duration_s + after_s)):
            t = t0 + k
            tt = np.arange(sr) / sr
            tone = 0.2 * np.sin(2 * np.pi * 440 * tt)
            if t_start <= t < t_end:
                tone = tone + 0.2 * np.sin(2 * np.pi * 3600 * tt)  # the anomalous band
            send("audio", topics.audio, encode_audio(asset, "/line3/mic1", t, wav_bytes(tone.astype(np.float32), sr)),
                 t, ("audio", k))
    lines = []
    for k in range(int(before_s + duration_s + after_s)):
        t = t0 + k + 0.5
        if escalation:
            speaker = "customer" if k % 2 else "agent"
            msg = ("This is the third time I am calling about the same invoice" if t_start <= t <= t_end and k % 2
                   else f"Let me check that for you, step {k}")
            line = {"msg": msg, "speaker": speaker}
        elif t_start <= t <= t_end and k % 2 == 0:
            line = {"msg": "Spindle temperature high 81C", "level": "ERROR", "code": "E-117", "serial": f"SN-{k:04d}"}
        else:
            line = {"msg": f"cycle {k} complete", "level": "INFO", "serial": f"SN-{k:04d}"}
        lines.append((t, line))
        send("logs", topics.logs, encode_log(asset, "/line3/plc", t, line), t, ("log", k))
    producer.flush()

    offsets: dict[str, list[tuple[float, int, object]]] = {}
    for kind_name, items in sent.items():
        offsets[kind_name] = [(t, fut.get(timeout=20).offset, tag) for t, fut, tag in items]
    producer.close()

    def rng(kind_name: str, topic: str) -> list[EvidenceRange]:
        inside = [o for t, o, _ in offsets[kind_name] if t_start <= t <= t_end]
        return [EvidenceRange(topic=topic, partition=partition, first=min(inside), last=max(inside))] if inside else []

    evidence = {k: r for k, r in (("frames", rng("frames", topics.frames)), ("audio", rng("audio", topics.audio)),
                                  ("logs", rng("logs", topics.logs))) if r}
    event_lines = [line["msg"] for t, line in lines if t_start <= t <= t_end]
    serials = [line["serial"] for t, line in lines if t_start <= t <= t_end and line.get("code")]
    if escalation:
        attribution = Attribution(modality_shares={"audio": 0.55, "logs": 0.45}, cross_modal_share=0.1,
                                  top_log_lines=["customer: This is the third time I am calling about the same invoice"])
        shares_kind = "escalation"
    else:
        shares = {"audio": 0.62, "frames": 0.26, "logs": 0.12} if with_frames else {"audio": 0.7, "logs": 0.3}
        attribution = Attribution(modality_shares=shares, cross_modal_share=0.2,
                                  top_frames=[format_time(t_start + 2.0)], frame_region=[0.05, 0.05, 0.3, 0.3],
                                  audio_band_hz=[3000.0, 4500.0], top_log_lines=["Spindle temperature high 81C"],
                                  log_codes=["E-117"])
        shares_kind = kind
    scores = [(format_time(t_start + w + 1), 0.4 + 0.12 * min(w, duration_s - w)) for w in range(int(duration_s))]
    data = AnomalyData(
        event_id=event_id(asset, start), change="closed", revision=3, asset=asset, kind=shares_kind,
        severity=severity, status="closed", start_time=start, end_time=start + timedelta(seconds=duration_s),
        peak_score=max(s for _, s in scores), mean_score=float(np.mean([s for _, s in scores])), threshold=0.5,
        model_version="test-1", windows=int(duration_s), attribution=attribution, scores=scores,
        serials=serials, log_lines=list(dict.fromkeys(event_lines))[:10], evidence=evidence,
    )
    frames = [SourceFrame(t, frame_colour(tag[1]), o) for t, o, tag in offsets.get("frames", []) if tag[0] == "frame"]
    return Scenario(asset, partition, start, start + timedelta(seconds=duration_s), data, frames,
                    [o for _, o, _ in offsets["logs"]])


def insert_event(session_factory, data: AnomalyData, call_curve: bool = False) -> None:
    """The `events` row the monitor writes before publishing (and a call summary for escalations)."""
    from schemas.tables import CallSummary, Event
    from services.db import session_scope

    with session_scope(session_factory) as s:
        s.add(Event(id=data.event_id, asset_id=data.asset, start_time=data.start_time, end_time=data.end_time,
                    status=data.status, kind=data.kind, severity=data.severity, peak_score=data.peak_score,
                    mean_score=data.mean_score, threshold=data.threshold, model_version=data.model_version,
                    windows=data.windows, attribution=data.attribution.model_dump(),
                    scores=[list(p) for p in data.scores], serials=data.serials, log_lines=data.log_lines,
                    evidence={m: [r.model_dump() for r in rs] for m, rs in data.evidence.items()}))
        if call_curve:
            t0 = data.start_time - timedelta(seconds=30)
            curve = [[format_time(t0.timestamp() + 5 * k), 0.1 + 0.1 * k, 0.5, max(0.0, 0.4 - 0.05 * k),
                      min(1.0, 0.1 * k)] for k in range(9)]
            s.add(CallSummary(call_id=data.asset, start_time=t0, end_time=data.end_time, sentiment_curve=curve,
                              peak_time=data.start_time + timedelta(seconds=4), peak_frustration=0.8,
                              turning_point=data.start_time + timedelta(seconds=1), overall="negative"))


def publish_event(bootstrap: str, kafka, topics, data: AnomalyData) -> float:
    """Publish the closed event's CloudEvent; returns the wall time it was acknowledged."""
    from services.kafka import make_producer

    producer = make_producer(kafka, bootstrap)
    cloud = AnomalyCloudEvent.wrap(data, datetime.now(timezone.utc))
    producer.send(topics.events, key=data.asset.encode(), value=cloud.model_dump_json().encode(),
                  headers=[("content-type", b"application/cloudevents+json")]).get(timeout=20)
    acked = time.time()
    producer.close()
    return acked


def wait_for_summary(session_factory, event_id: str, timeout_s: float = 90.0):
    from schemas.tables import Summary

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with session_factory() as s:
            row = s.get(Summary, event_id)
            if row is not None:
                return row, time.time()
        time.sleep(0.05)
    raise AssertionError(f"no summary for {event_id} within {timeout_s} s")


def make_settings(tmp_path: Path, kafka, url: str):
    from services.settings import DatabaseSettings, Settings

    return Settings(var_dir=tmp_path / "var", media_root=tmp_path / "media", kafka=kafka,
                    database=DatabaseSettings(url=url),
                    summarizer={"group_id": f"sum-{uuid.uuid4().hex[:8]}", "read_timeout_s": 5.0})


def read_mp4(path: Path) -> dict:
    """Everything the tests check, read back with PyAV."""
    import av

    out: dict = {"video_frames": [], "cues": [], "audio": None}
    with av.open(str(path)) as c:
        out["duration"] = c.duration / 1e6 if c.duration else None
        out["streams"] = [(s.type, s.codec_context.name if s.codec_context else s.codec.name) for s in c.streams]
        v = c.streams.video[0]
        out["pix_fmt"] = v.codec_context.pix_fmt
        out["size"] = (v.codec_context.width, v.codec_context.height)
        for frame in c.decode(v):
            out["video_frames"].append((float(frame.time), frame.to_ndarray(format="rgb24")))
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        out["sample_rate"] = a.codec_context.sample_rate
        chunks = [f.to_ndarray().reshape(-1) for f in c.decode(a)]
        out["audio"] = np.concatenate(chunks) if chunks else np.zeros(0)
    with av.open(str(path)) as c:
        s = c.streams.subtitles[0]
        for packet in c.demux(s):
            if packet.size and packet.pts is not None:
                raw = bytes(packet)
                n = int.from_bytes(raw[:2], "big")
                text = raw[2: 2 + n].decode("utf-8")
                if text:
                    start = float(packet.pts * packet.time_base)
                    out["cues"].append((start, start + float(packet.duration * packet.time_base), text))
    raw = path.read_bytes()
    out["faststart"] = raw.find(b"moov") < raw.find(b"mdat")
    return out
