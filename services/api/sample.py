"""Sample review data: a few events with real narrated-clip files (H.264/AAC MP4, WebVTT, JPEG).

Where it sits: outside the data path, on purpose. It fills an empty database and media root with
events shaped exactly like the monitor's and the summarizer's output, so that the review page can be
tried (`fusionwatch api --sample-data`) and tested without running the model, and so that the tests
exercise real files read back by a real browser.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from schemas.events import event_id
from schemas.tables import Asset, Event, Summary


@dataclass(frozen=True)
class SampleEvent:
    asset: str
    offset_min: float
    kind: str
    severity: str
    peak: float
    verdict: str | None = None
    with_media: bool = True
    serials: tuple[str, ...] = ()


SAMPLES = (
    SampleEvent("L1-S1", 5, "bearing_fault", "high", 2.6, serials=("SN-1001", "SN-1002")),
    SampleEvent("L1-S2", 12, "surface_defect", "medium", 1.6, serials=("SN-2040",)),
    SampleEvent("L2-S1", 20, "motor_runs_conveyor_stopped", "critical", 4.4, serials=("SN-3300",)),
    SampleEvent("L1-S1", 31, "acoustic", "low", 1.1, verdict="false_alarm", with_media=False),
    SampleEvent("L2-S2", 45, "unseen_error_code", "medium", 1.7, verdict="real", with_media=False,
                serials=("SN-4100",)),
)


def write_clip(path: Path, seconds: float = 4.0, fps: int = 10, size: tuple[int, int] = (320, 180),
               label: str = "fusionwatch") -> None:
    """A small narrated-clip stand-in: H.264 yuv420p + AAC, moov atom first (streams while loading)."""
    import av
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    w, h = size
    with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency"}
        audio = out.add_stream("aac", rate=22050)
        audio.layout = "mono"
        n = int(seconds * fps)
        for i in range(n):
            img = Image.new("RGB", size, (30, 36, 48))
            draw = ImageDraw.Draw(img)
            x = int((i / max(n - 1, 1)) * (w - 40))
            draw.rectangle([x, h // 2 - 20, x + 40, h // 2 + 20], fill=(220, 120, 40))
            draw.text((8, 8), f"{label}  t={i / fps:.1f}s", fill=(240, 240, 240))
            frame = av.VideoFrame.from_image(img)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        rate, chunk = 22050, 1024
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(tone), chunk):
            piece = tone[start:start + chunk]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    tmp.replace(path)


def write_vtt(path: Path, cues: list[tuple[float, float, str]]) -> None:
    def ts(s: float) -> str:
        return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"

    path.parent.mkdir(parents=True, exist_ok=True)
    body = "WEBVTT\n\n" + "\n".join(f"{i + 1}\n{ts(a)} --> {ts(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues))
    path.write_text(body, encoding="utf-8")


def write_thumbnail(path: Path, size: tuple[int, int] = (160, 90)) -> None:
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (30, 36, 48))
    ImageDraw.Draw(img).rectangle([60, 25, 100, 65], fill=(220, 120, 40))
    img.save(path, "JPEG", quality=80)


def score_timeline(start: datetime, peak: float, threshold: float, rng: random.Random,
                   windows: int = 12) -> list[list]:
    """A bump over the threshold, then the windows under it that close the event. At least
    `OPEN_AFTER` consecutive windows are over the threshold: the monitor would not have opened the
    event otherwise (and recalibration reasons about the windows that opened it)."""
    from streamlogic.event_lifecycle import OPEN_AFTER

    points = []
    for i in range(windows):
        x = i / (windows - 1)
        bump = math.exp(-((x - 0.35) ** 2) / 0.04)
        score = threshold * 0.6 + (peak - threshold * 0.6) * bump + rng.uniform(-0.03, 0.03)
        points.append([(start + timedelta(seconds=i + 2)).isoformat().replace("+00:00", "Z"), round(score, 4)])
    for i in range(2, 2 + OPEN_AFTER):
        points[i][1] = max(points[i][1], round(threshold + 0.2 * (peak - threshold), 4))
    points[3][1] = peak  # the exact peak on the record
    return points


def write_sample(session: Session, media_root: Path, now: datetime | None = None, seed: int = 0,
                 samples: tuple[SampleEvent, ...] = SAMPLES) -> list[str]:
    """Insert the sample events (and media for those that have it); returns their ids."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    ids = []
    threshold = 1.0
    for asset in sorted({s.asset for s in samples}):
        if session.get(Asset, asset) is None:
            session.add(Asset(id=asset, line=asset.split("-S")[0], kind="station",
                              first_seen=now - timedelta(hours=2), last_seen=now))
    for s in samples:
        start = (now - timedelta(minutes=60 - s.offset_min)).replace(microsecond=0)
        eid = event_id(s.asset, start)
        ids.append(eid)
        scores = score_timeline(start, s.peak, threshold, rng)
        frames, audio, logs = (0.55, 0.3, 0.15) if "defect" in s.kind else (0.15, 0.6, 0.25)
        line_code = "E-417" if s.kind == "unseen_error_code" else "W-102"
        log_lines = [f"station {s.asset} cycle complete part={s.serials[0] if s.serials else 'n/a'}",
                     f"{line_code} spindle load above limit on {s.asset}",
                     f"station {s.asset} conveyor speed 0.42 m/s"]
        event = Event(
            id=eid, asset_id=s.asset, start_time=start, end_time=start + timedelta(seconds=11),
            status="closed", kind=s.kind, severity=s.severity, peak_score=s.peak,
            mean_score=round((s.peak + threshold) / 2, 4), threshold=threshold, model_version="sample-0",
            windows=len(scores), scores=scores, serials=list(s.serials), log_lines=log_lines,
            attribution={"modality_shares": {"frames": frames, "audio": audio, "logs": logs},
                         "cross_modal_share": 0.7 if "conveyor" in s.kind else 0.1,
                         "top_log_lines": [log_lines[1]], "log_codes": [line_code],
                         "audio_band_hz": [1800.0, 2600.0]},
            evidence={"frames": [{"topic": "fw.frames", "partition": 0, "first": 10, "last": 54}]},
            created_at=start, updated_at=start,
        )
        if s.verdict:
            event.verdict, event.verdict_kind, event.reviewer = s.verdict, s.kind, "sample"
            event.verdict_at = start + timedelta(minutes=1)
        session.add(event)
        if s.with_media:
            rel = Path("sample") / eid
            # files already there are kept: the same sample (same ids) is cheap to write again
            if not (media_root / rel.with_suffix(".mp4")).exists():
                write_clip(media_root / rel.with_suffix(".mp4"), label=f"{s.asset} {s.kind}")
            write_vtt(media_root / rel.with_suffix(".vtt"), [
                (0.0, 2.0, f"{s.asset}: {s.kind.replace('_', ' ')} at {start:%H:%M:%S}."),
                (2.0, 4.0, f"Score {s.peak:.1f} times the threshold; audio carries most of the evidence."),
            ])
            write_thumbnail(media_root / rel.with_suffix(".jpg"))
            session.add(Summary(event_id=eid, status="ready", video_path=str(rel.with_suffix(".mp4")),
                                subtitles_path=str(rel.with_suffix(".vtt")), thumbnail_path=str(rel.with_suffix(".jpg")),
                                narration=f"{s.asset}: {s.kind.replace('_', ' ')}.", duration_s=4.0, missing=[]))
    session.flush()
    return ids
