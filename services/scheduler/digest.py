"""Shift digest: the top events of one shift as one narrated MP4 and one Markdown report.

Where it sits: a scheduler job at each shift boundary, downstream of the summarizer (it re-uses
the events' summary clips rather than re-reading Kafka, whose retention may be shorter than a shift).

    claim digests.shift_start (unique) ─► pick the top events ─► overview card + spoken overview
    ─► each top event's summary clip (decoded and re-encoded into one stream; a card with its
       narration when it has no clip) ─► MP4 + WebVTT + report.md (atomic) ─► digest row "ready"

Claiming first makes a second scheduler's run of the same shift a no-op (its insert fails); a
digest that failed may be claimed again by a later run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from schemas.tables import Digest, Event, Summary
from services.db import session_scope
from services.scheduler.shifts import Shift
from services.settings import Settings
from services.summarizer import facts as facts_mod
from services.summarizer import media
from services.summarizer.mp4 import Cue, Mp4Writer, parse_webvtt, webvtt
from services.summarizer.narrator import clock, humanize, narrate, ratio_words
from services.summarizer.render import BG, DIM, PANEL, RED, TEXT, cue_list, font, narration_track, wrap
from services.summarizer.tts import Speaker

log = logging.getLogger(__name__)

SEVERITY_RANK = {"critical": 3, "high": 2, "medium": 1, "low": 0}
CARD_FPS = 2.0
GAP_S = 0.4  # silence between segments


@dataclass
class DigestResult:
    shift: Shift
    status: str
    events: list[str] = field(default_factory=list)  # ids of the top events, in the video's order
    total_events: int = 0
    video: str | None = None  # relative to the media root
    report: str | None = None
    duration_s: float = 0.0


def claim(session_factory, shift: Shift) -> bool:
    """Insert the digest row for this shift; False when another run already has it."""
    start, end = shift.start.astimezone(timezone.utc), shift.end.astimezone(timezone.utc)
    try:
        with session_scope(session_factory) as s:
            s.add(Digest(shift_start=start, shift_end=end, status="running", events=[]))
        return True
    except IntegrityError:
        pass
    with session_scope(session_factory) as s:  # a failed digest may be retried; a running or ready one not
        taken = s.execute(update(Digest).where(Digest.shift_start == start, Digest.status == "failed")
                          .values(status="running")).rowcount
    return taken == 1


def top_events(session, shift: Shift, limit: int) -> tuple[list[Event], int]:
    rows = session.scalars(select(Event).where(Event.start_time >= shift.start, Event.start_time < shift.end)).all()
    ranked = sorted(rows, key=lambda e: (-SEVERITY_RANK.get(e.severity, 0),
                                         -(e.peak_score / e.threshold if e.threshold else 0.0), e.start_time))
    return ranked[:limit], len(rows)


def build_digest(session_factory, settings: Settings, shift: Shift, speaker: Speaker | None = None) -> DigestResult | None:
    """Make the shift's digest once. None when another scheduler has (or is making) it."""
    if not claim(session_factory, shift):
        log.info("digest for %s already claimed by another run; skipping", shift.label)
        return None
    try:
        result = _build(session_factory, settings, shift, speaker or Speaker(settings.summarizer.voice,
                                                                             settings.summarizer.speech_wpm))
    except Exception:
        with session_scope(session_factory) as s:
            s.execute(update(Digest).where(Digest.shift_start == shift.start.astimezone(timezone.utc))
                      .values(status="failed"))
        raise
    with session_scope(session_factory) as s:
        s.execute(update(Digest).where(Digest.shift_start == shift.start.astimezone(timezone.utc)).values(
            status=result.status, video_path=result.video, report_path=result.report, events=result.events))
    return result


def _build(session_factory, settings: Settings, shift: Shift, speaker: Speaker) -> DigestResult:
    cfg = settings.summarizer
    tz = settings.scheduler.timezone
    with session_factory() as s:
        events, total = top_events(s, shift, settings.scheduler.digest_top_events)
        summaries = {e.id: s.get(Summary, e.id) for e in events}
        all_rows = s.scalars(select(Event).where(Event.start_time >= shift.start, Event.start_time < shift.end)
                             .order_by(Event.start_time)).all()
        facts = {e.id: facts_mod.load(s, e.id) for e in events}
    width, height = cfg.width // 2 * 2, cfg.height // 2 * 2
    video_rel, report_rel, vtt_rel = media.digest_paths(settings.media_dir, shift.start.astimezone(timezone.utc).isoformat())
    root = Path(settings.media_dir)

    overview = _overview_sentences(shift, events, total, all_rows, tz)
    speech = speaker.speak(overview)
    sr = speech.sample_rate
    voice, spans = narration_track(speech.clips, sr, 0.5, 0.3)
    audio_parts: list[tuple[float, np.ndarray]] = [(0.0, voice)]
    cues = cue_list(overview, spans)
    overview_s = (spans[-1][1] if spans else 0.0) + 0.8

    with media.atomic_path(root / video_rel) as tmp:
        with Mp4Writer(tmp, width, height, 10.0, sr, crf=cfg.crf, preset=cfg.x264_preset,
                       title=f"fusionwatch shift digest {shift.label}") as writer:
            card = _overview_card(shift, events, total, (width, height), tz)
            _write_card(writer, card, 0.0, overview_s, cues)
            offset = overview_s + GAP_S
            for event in events:
                summary = summaries.get(event.id)
                clip = media.resolve(root, summary.video_path) if summary and summary.video_path else None
                if clip is not None and clip.exists():
                    length, clip_audio, clip_cues = _append_clip(writer, clip, offset, (width, height), sr)
                    vtt = media.resolve(root, summary.subtitles_path) if summary.subtitles_path else None
                    if vtt is not None and vtt.exists():
                        clip_cues = parse_webvtt(vtt.read_text(encoding="utf-8"))
                else:  # no clip (failed, expired, not yet made): a card and the event's narration
                    length, clip_audio, clip_cues = _append_card(writer, facts[event.id], offset, (width, height),
                                                                 speaker, tz)
                audio_parts.append((offset, clip_audio))
                cues += [Cue(round(c.start + offset, 3), round(c.end + offset, 3), c.text) for c in clip_cues]
                offset += length + GAP_S
            duration = offset - GAP_S if events else overview_s
            track = np.zeros(int(math.ceil(duration * sr)) + 1, dtype=np.float32)
            for start, samples in audio_parts:
                pos = int(round(start * sr))
                n = min(len(samples), len(track) - pos)
                if n > 0:
                    track[pos: pos + n] += samples[:n]
            writer.add_audio(np.clip(track, -1, 1))
            writer.add_cues(cues)
    media.write_text_atomic(root / vtt_rel, webvtt(cues))
    media.write_text_atomic(root / report_rel, _report(shift, events, total, all_rows, summaries, overview, tz,
                                                       video_rel))
    return DigestResult(shift, "ready", [e.id for e in events], total, video_rel, report_rel, duration)


def _overview_sentences(shift: Shift, events: list[Event], total: int, all_rows: list[Event], tz: str) -> list[str]:
    start, end = clock(shift.start, tz), clock(shift.end, tz)
    out = [f"Shift digest, {shift.start.astimezone(shift.start.tzinfo):%d %B}, {start} to {end}."]
    if total == 0:
        out.append("No anomaly events this shift.")
        return out
    assets = sorted({e.asset_id for e in all_rows})
    by_severity = {}
    for e in all_rows:
        by_severity[e.severity] = by_severity.get(e.severity, 0) + 1
    counts = [f"{by_severity[s]} {s}" for s in ("critical", "high", "medium", "low") if by_severity.get(s)]
    out.append(f"{total} event{'s' if total != 1 else ''} on {len(assets)} asset{'s' if len(assets) != 1 else ''}: "
               f"{', '.join(counts)}.")
    out.append(f"The top {len(events)} follow." if len(events) > 1 else "The top one follows.")
    for n, e in enumerate(events, 1):
        kind = humanize(e.kind)
        what = "an anomaly" if kind in ("", "anomaly") else ("an escalation" if kind == "escalation" else kind)
        ratio = e.peak_score / e.threshold if e.threshold else float("inf")
        out.append(f"{n}: {e.asset_id} at {clock(e.start_time, tz)}, {what}, {ratio_words(ratio)} the threshold.")
    return out


def _overview_card(shift: Shift, events: list[Event], total: int, size: tuple[int, int], tz: str) -> Image.Image:
    w, h = size
    s = h / 360
    img = Image.new("RGB", size, BG)
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, w, int(40 * s)), fill=PANEL)
    d.text((int(12 * s), int(10 * s)), f"Shift digest  {shift.label}", fill=TEXT, font=font(int(17 * s), bold=True))
    d.text((int(12 * s), int(52 * s)), f"{total} event{'s' if total != 1 else ''} this shift", fill=DIM,
           font=font(int(13 * s)))
    y = int(80 * s)
    for n, e in enumerate(events, 1):
        ratio = e.peak_score / e.threshold if e.threshold else float("inf")
        line = f"{n}. {clock(e.start_time, tz)}  {e.asset_id}  {humanize(e.kind)}  {ratio:.1f}× threshold"
        d.text((int(16 * s), y), line, fill=RED if e.severity in ("critical", "high") else TEXT,
               font=font(int(14 * s)))
        d.text((w - int(16 * s), y), e.severity.upper(), fill=DIM, font=font(int(11 * s), bold=True), anchor="ra")
        y += int(26 * s)
    if not events:
        d.text((w // 2, h // 2), "No anomaly events this shift", fill=DIM, font=font(int(18 * s)), anchor="mm")
    return img


def _write_card(writer: Mp4Writer, card: Image.Image, offset: float, length: float, cues: list[Cue]) -> None:
    """A still card for `length` seconds with the spoken sentence as a caption (works muted too)."""
    w, h = card.size
    s = h / 360
    frames: dict[int, np.ndarray] = {}
    starts = [c.start for c in cues]
    for t in _card_times(length, cues):
        k = int(np.searchsorted(starts, t + 1e-6, side="right")) - 1
        if k >= 0 and t > cues[k].end:
            k = -1
        if k not in frames:
            img = card.copy()
            if k >= 0:
                d = ImageDraw.Draw(img)
                d.rectangle((0, h - int(44 * s), w, h), fill=(0, 0, 0))
                lines = wrap(cues[k].text, font(int(14 * s)), w - int(16 * s), 2)
                y = h - int(22 * s) - len(lines) * int(17 * s) // 2
                for line in lines:
                    d.text((w // 2, y), line, fill=(255, 255, 255), font=font(int(14 * s)), anchor="ma")
                    y += int(17 * s)
            frames[k] = np.asarray(img)
        writer.add_frame(frames[k], offset + t)


def _card_times(length: float, cues: list[Cue]) -> list[float]:
    times = sorted({round(float(t), 3) for t in (*np.arange(0, length, 1 / CARD_FPS), *(c.start for c in cues),
                                                 *(c.end for c in cues)) if 0 <= t < length})
    return times or [0.0]


def _append_clip(writer: Mp4Writer, path: Path, offset: float, size: tuple[int, int], sr: int
                 ) -> tuple[float, np.ndarray, list[Cue]]:
    """Decode a summary MP4 and append its pictures at `offset`; return (length, its audio at `sr`, cues)."""
    import av

    from services.summarizer.evidence import resample

    last = 0.0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            t = float(frame.time or 0.0)
            img = frame.to_image()
            if img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            writer.add_frame(np.asarray(img), offset + t)
            last = max(last, t)
        frame_s = 1.0 / float(stream.average_rate) if stream.average_rate else 0.1
    chunks, rate = [], sr
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            rate = a.codec_context.sample_rate
            for frame in c.decode(a):
                arr = frame.to_ndarray()
                chunks.append(arr.mean(axis=0) if arr.ndim == 2 and arr.shape[0] > 1 else arr.reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if rate != sr and len(audio):
        audio = resample(audio, rate, sr)
    length = max(last + frame_s, len(audio) / sr)
    return length, audio, []


def _append_card(writer: Mp4Writer, facts, offset: float, size: tuple[int, int], speaker: Speaker, tz: str
                 ) -> tuple[float, np.ndarray, list[Cue]]:
    narration = narrate(facts, tz=tz)
    speech = speaker.speak(narration.sentences)
    voice, spans = narration_track(speech.clips, speech.sample_rate, 0.3, 0.3)
    cues = cue_list(narration.sentences, spans)
    length = (spans[-1][1] if spans else 0.0) + 0.5
    w, h = size
    s = h / 360
    img = Image.new("RGB", size, BG)
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, w, int(40 * s)), fill=PANEL)
    d.text((int(12 * s), int(10 * s)), f"{facts.asset}  {clock(facts.start, tz, seconds=True)}", fill=TEXT,
           font=font(int(17 * s), bold=True))
    d.text((w - int(12 * s), int(12 * s)), f"{facts.severity.upper()} · {humanize(facts.kind)}", fill=RED,
           font=font(int(13 * s), bold=True), anchor="ra")
    d.text((int(12 * s), int(50 * s)), "no summary video for this event", fill=DIM, font=font(int(12 * s)))
    y = int(76 * s)
    for sentence in narration.sentences:
        for line in wrap(sentence, font(int(14 * s)), w - int(32 * s), 3):
            if y > h - int(60 * s):
                break
            d.text((int(16 * s), y), line, fill=TEXT, font=font(int(14 * s)))
            y += int(19 * s)
        y += int(5 * s)
    _write_card(writer, img, offset, length, cues)
    return length, voice, cues


def _report(shift: Shift, events: list[Event], total: int, all_rows: list[Event], summaries: dict, overview: list[str],
            tz: str, video_rel: str) -> str:
    lines = [f"# Shift digest — {shift.label}", "",
             f"Shift: {shift.start.isoformat()} to {shift.end.isoformat()}  ",
             f"Generated: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  ",
             f"Video: `{video_rel}` (relative to the media root)", "", "## Overview", "", " ".join(overview), ""]
    if events:
        lines += ["## Top events", "", "| # | time | asset | kind | severity | peak / threshold | summary |",
                  "|---|---|---|---|---|---|---|"]
        for n, e in enumerate(events, 1):
            ratio = e.peak_score / e.threshold if e.threshold else float("inf")
            summary = summaries.get(e.id)
            clip = f"`{summary.video_path}` ({summary.status})" if summary and summary.video_path else \
                (summary.status if summary else "none")
            lines.append(f"| {n} | {clock(e.start_time, tz, seconds=True)} | {_md(e.asset_id)} | {_md(humanize(e.kind))}"
                         f" | {e.severity} | {ratio:.2f} | {clip} |")
        lines += [""]
        for n, e in enumerate(events, 1):
            summary = summaries.get(e.id)
            if summary is not None and summary.narration:
                lines += [f"**{n}. {_md(e.asset_id)}** — {_md(summary.narration)}", ""]
    if all_rows:
        lines += ["## All events this shift", "", "| start | end | asset | kind | severity | status | event id |",
                  "|---|---|---|---|---|---|---|"]
        for e in all_rows[:200]:
            end = clock(e.end_time, tz, seconds=True) if e.end_time else "open"
            lines.append(f"| {clock(e.start_time, tz, seconds=True)} | {end} | {_md(e.asset_id)} | {_md(humanize(e.kind))}"
                         f" | {e.severity} | {e.status} | `{e.id}` |")
        if len(all_rows) > 200:
            lines.append(f"| … | | {len(all_rows) - 200} more | | | | |")
    else:
        lines += ["No anomaly events this shift."]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Table-safe text (event data is not trusted to be Markdown-clean)."""
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]
