"""One event in, one summary out: the whole summarizer hop as a plain class.

    facts ─► evidence.read ─► narrator.narrate ─► tts.speak ─► render.Composer ─► mp4 + vtt + jpg
          ─► `summaries` row (status ready | partial | failed, what is missing, timings)

`Summarizer.summarize` never raises for a bad event: unreadable evidence gives a `partial` summary
that says what is missing, and a render crash gives a `failed` row with the reason, so one poison
event cannot stall the consumer behind it. The consumer (`service.py`) and the on-demand command
(`fusionwatch summarize --event`) both call it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from schemas.envelope import parse_time
from services.settings import Settings
from services.summarizer import media
from services.summarizer.evidence import EvidenceReader
from services.summarizer.facts import EventFacts, clip_span
from services.summarizer.mp4 import Mp4Writer, webvtt
from services.summarizer.narrator import MissingEvidence, Narration, narrate
from services.summarizer.render import (
    Composer,
    Layout,
    RenderInputs,
    Timeline,
    cue_list,
    mix,
    narration_track,
    sensor_track,
    source_fps,
)
from services.summarizer.tts import Speaker

log = logging.getLogger(__name__)

LEAD_IN_S = 0.5  # silence before the first sentence
SENTENCE_GAP_S = 0.3
TAIL_S = 0.7  # after the last sentence
NO_CAMERA_FPS = 5.0  # call-centre / audio-only clips: the picture changes slowly


@dataclass
class SummaryResult:
    event_id: str
    status: str  # ready | partial | failed
    narration: str
    missing: list[dict] = field(default_factory=list)
    paths: media.MediaPaths | None = None
    duration_s: float | None = None  # of the MP4
    clip_s: float = 0.0  # evidence span shown (event + context)
    frames: int = 0
    render_s: float = 0.0  # wall time of the whole summary: read + speak + draw + encode + publish
    read_s: float = 0.0
    encode_s: float = 0.0  # drawing + encoding only


class Summarizer:
    def __init__(self, settings: Settings, reader: EvidenceReader, speaker: Speaker | None = None):
        self.settings = settings
        self.cfg = settings.summarizer
        self.speaker = speaker or Speaker(self.cfg.voice, self.cfg.speech_wpm)
        self.reader = reader
        self.layout = Layout(self.cfg.width // 2 * 2, self.cfg.height // 2 * 2)
        self.tz = settings.scheduler.timezone
        self._rephraser = None
        if self.cfg.rephrase_model:
            from services.summarizer.rephrase import Rephraser

            self._rephraser = Rephraser(self.cfg.rephrase_model)

    # the whole hop, files + row
    def summarize(self, facts: EventFacts, session_factory) -> SummaryResult:
        result = self.render(facts)
        self.record(result, session_factory)
        return result

    def render(self, facts: EventFacts) -> SummaryResult:
        started = time.perf_counter()
        try:
            result = self._render(facts)
        except Exception as e:  # the policy: a failed render is recorded, never re-raised into the loop
            log.exception("summary of event %s failed", facts.event_id)
            result = SummaryResult(facts.event_id, "failed", narrate(facts, tz=self.tz).text,
                                   missing=[{"modality": None, "reason": "render_failed",
                                             "detail": f"{type(e).__name__}: {e}"[:500]}])
        result.render_s = time.perf_counter() - started
        _observe(result)
        return result

    def _render(self, facts: EventFacts) -> SummaryResult:
        t0, t1 = clip_span(facts, self.cfg.context_before_s, self.cfg.context_after_s, self.cfg.max_event_s)
        evidence = self.reader.read(facts, t0, t1)
        narration = self._narration(facts, evidence.missing)
        speech = self.speaker.speak(narration.sentences)
        voice, spans = narration_track(speech.clips, speech.sample_rate, LEAD_IN_S, SENTENCE_GAP_S)
        duration = max(t1 - t0, (spans[-1][1] if spans else 0.0) + TAIL_S)
        if self.cfg.fps:
            fps = self.cfg.fps
        elif evidence.frames and not facts.is_call:
            fps = source_fps(evidence.frames, default=10.0, cap=self.cfg.max_fps)
        else:
            fps = NO_CAMERA_FPS
        cues = cue_list(narration.sentences, spans)
        timeline = Timeline(t0, duration, fps, evidence_s=t1 - t0,
                            cue_times=tuple(t for c in cues for t in (c.start, c.end)))
        audio = mix(voice, sensor_track(evidence, t0, duration), spans, speech.sample_rate, self.cfg.sensor_audio_gain)
        audio = audio[: int(math.ceil(duration * speech.sample_rate))]
        notes = [f"missing: {m.modality} — {m.reason.replace('_', ' ')}" for m in evidence.missing]
        composer = Composer(RenderInputs(facts, evidence, timeline, cues, notes=notes), self.layout)

        paths = media.summary_paths(self.settings.media_dir, facts.event_id)
        draw_started = time.perf_counter()
        with media.atomic_path(paths.abs(paths.video)) as tmp:
            with Mp4Writer(tmp, self.layout.width, self.layout.height, fps, speech.sample_rate, crf=self.cfg.crf,
                           preset=self.cfg.x264_preset, title=f"fusionwatch event {facts.event_id}") as writer:
                for i, video_s in enumerate(timeline.times):
                    writer.add_frame(composer.frame(i), video_s)
                writer.add_audio(audio)
                writer.add_cues(cues)
        encode_s = time.perf_counter() - draw_started
        media.write_text_atomic(paths.abs(paths.subtitles), webvtt(cues))
        with media.atomic_path(paths.abs(paths.thumbnail)) as tmp:
            composer.image(self._peak_index(facts, timeline)).save(tmp, format="JPEG", quality=85)
        status = "partial" if evidence.missing else "ready"
        return SummaryResult(facts.event_id, status, narration.text, [m.as_dict() for m in evidence.missing], paths,
                             duration_s=duration, clip_s=t1 - t0, frames=timeline.frames,
                             read_s=evidence.read_s, encode_s=encode_s)

    def _narration(self, facts: EventFacts, missing: list[MissingEvidence]) -> Narration:
        narration = narrate(facts, missing, tz=self.tz)
        if self._rephraser is not None:
            narration = self._rephraser.rephrase(narration, facts, missing, tz=self.tz)
        return narration

    @staticmethod
    def _peak_index(facts: EventFacts, timeline: Timeline) -> int:
        peak = None
        for stamp in facts.attribution.top_frames[:1]:
            try:
                peak = parse_time(stamp)
            except ValueError:
                pass
        if peak is None and facts.scores:
            peak = max(facts.scores, key=lambda ts: ts[1])[0]
        if peak is None:
            peak = (facts.start_s + facts.end_s) / 2
        return timeline.index_of(peak - timeline.t0)

    # SQL
    @staticmethod
    def record(result: SummaryResult, session_factory) -> None:
        from schemas.tables import Summary
        from services.db import session_scope

        with session_scope(session_factory) as session:
            row = session.get(Summary, result.event_id) or Summary(event_id=result.event_id)
            row.status = result.status
            row.narration = result.narration
            row.missing = result.missing
            row.duration_s = result.duration_s
            row.render_s = round(result.render_s, 3)
            row.rendered_at = datetime.now(timezone.utc)
            if result.paths is not None:
                row.video_path = result.paths.video
                row.subtitles_path = result.paths.subtitles
                row.thumbnail_path = result.paths.thumbnail
            session.add(row)


def _observe(result: SummaryResult) -> None:
    try:
        from services.observability import metrics
    except ImportError:  # metrics are optional for library use
        return
    metrics.SUMMARIES_RENDERED.labels(status=result.status).inc()
    if result.status != "failed":
        metrics.SUMMARY_RENDER.observe(result.render_s)
