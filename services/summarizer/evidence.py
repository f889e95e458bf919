"""Re-read an event's evidence from the raw topics, by offset.

Where it sits: between the event facts and the renderer. The event carries, per modality, the
partition and the inclusive offset range of the records in its window (docs/summaries.md: there is no
second video store). We assign those partitions to a group-less consumer, seek a little before
`first` for context (an estimate from the range's own record rate, then filtered by `ce_time`),
read past `last` for the context after, keep only the event's asset (partitions are shared by
several assets) and decode: frames at the video's size (not the model's 80x60), audio at the
narration's sample rate, logs as parsed lines.

What cannot be shown becomes a `MissingEvidence` entry instead of an exception: offsets no longer
on the broker (retention, a restarted in-memory broker), corrupt records, a topic that is gone.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from kafka import TopicPartition

from schemas.envelope import Accepted, DecodeOptions, Kind, LogPayload, decode, parse_wav
from schemas.events import EvidenceRange
from services.kafka import make_consumer
from services.settings import KafkaSettings
from services.summarizer.facts import EventFacts
from services.summarizer.narrator import MissingEvidence

log = logging.getLogger(__name__)

CONTEXT_SLACK = 1.5  # read this many times the estimated records before `first` (rates vary)
MIN_CONTEXT_RECORDS = 8


@dataclass(frozen=True)
class Frame:
    t: float  # capture time, epoch s
    image: np.ndarray  # (h, w, 3) uint8, fitted inside the requested box, aspect kept
    width: int  # original size
    height: int
    offset: int
    partition: int


@dataclass(frozen=True)
class Log:
    t: float
    line: LogPayload
    offset: int
    in_event: bool  # inside the event's evidence range (not context)


@dataclass
class Evidence:
    frames: list[Frame] = field(default_factory=list)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (chunk start, float32 mono)
    sample_rate: int = 22050
    logs: list[Log] = field(default_factory=list)
    missing: list[MissingEvidence] = field(default_factory=list)
    read_s: float = 0.0

    def sort(self) -> None:
        self.frames.sort(key=lambda f: (f.t, f.offset))
        self.audio.sort(key=lambda a: a[0])
        self.logs.sort(key=lambda entry: (entry.t, entry.offset))


@dataclass
class _Plan:
    kind: Kind
    range: EvidenceRange
    seek_from: int
    stop_at: int  # inclusive
    seen_in_range: int = 0
    first_seen: int | None = None
    asset_records: int = 0
    corrupt: int = 0


def _kind(modality: str) -> Kind | None:
    try:
        return Kind(modality)
    except ValueError:
        return None


def fit_size(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    scale = min(box[0] / width, box[1] / height)
    return max(2, int(round(width * scale))), max(2, int(round(height * scale)))


def decode_frame(value: bytes, content_type: str, box: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """JPEG/PNG -> RGB fitted in `box`. JPEG draft mode decodes near the target size in the DCT
    domain, so a 1080p camera costs little more than a small one."""
    from PIL import Image

    img = Image.open(io.BytesIO(value), formats=["PNG" if content_type == "image/png" else "JPEG"])
    width, height = img.size
    target = fit_size(width, height, box)
    if img.format == "JPEG":
        img.draft("RGB", target)
    img = img.convert("RGB")
    if img.size != target:
        img = img.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8), width, height


def resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    """libswresample through PyAV: ~1 ms per second of audio, where torchaudio's sinc kernel for
    16 kHz -> 22.05 kHz (a 320:441 ratio) costs ~40 ms per call. Good enough for a clip's sound bed."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono, dtype=np.float32)[None, :], format="flt",
                                       layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    chunks = [f.to_ndarray().reshape(-1) for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def decode_audio(value: bytes, target_rate: int) -> np.ndarray:
    """WAV chunk -> mono float32 at `target_rate` (the narration's rate, so the two mix directly)."""
    samples, rate, channels = parse_wav(value)
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if rate != target_rate:
        mono = resample(mono, rate, target_rate)
    if not np.all(np.isfinite(mono)):
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32)


class EvidenceReader:
    """Reads evidence for many events with one long-lived, group-less consumer."""

    def __init__(self, kafka: KafkaSettings, bootstrap: str, frame_box: tuple[int, int] = (384, 216),
                 sample_rate: int = 22050, timeout_s: float = 5.0):
        self.kafka, self.bootstrap = kafka, bootstrap
        self.frame_box, self.sample_rate, self.timeout_s = frame_box, sample_rate, timeout_s
        self._consumer = None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> "EvidenceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _get_consumer(self):
        if self._consumer is None:
            # CRCs stay checked: the `crc32c` dependency makes that C-fast (pure Python cost ~15 ms/MiB)
            self._consumer = make_consumer(self.kafka, self.bootstrap, None, fetch_max_wait_ms=100,
                                           max_partition_fetch_bytes=8 * 1024 * 1024)
        return self._consumer

    def read(self, facts: EventFacts, t0: float, t1: float) -> Evidence:
        """Evidence of `facts` plus the records of its asset with event times in [t0, t1]."""
        started = time.perf_counter()
        out = Evidence(sample_rate=self.sample_rate)
        plans = self._plan(facts, t0, t1)
        if plans:
            try:
                self._fetch(plans, facts, t0, t1, out)
            except Exception as e:  # a broker problem costs the evidence, never the summary
                log.warning("evidence read for event %s failed: %s", facts.event_id, e)
                self.close()
                for p in plans:
                    if p.first_seen is None:
                        p.seen_in_range = -1
        for p in plans:
            out.missing += self._assess(p)
        out.sort()
        out.read_s = time.perf_counter() - started
        return out

    def _plan(self, facts: EventFacts, t0: float, t1: float) -> list[_Plan]:
        plans = []
        span = max(facts.duration_s, 1.0)
        for modality, ranges in facts.evidence.items():
            kind = _kind(modality)
            if kind is None:
                continue
            for r in ranges:
                if r.last < r.first or r.first < 0:
                    continue
                per_s = (r.last - r.first + 1) / span  # records per second on this partition (all assets)
                before = math.ceil(per_s * max(0.0, facts.start_s - t0) * CONTEXT_SLACK) + MIN_CONTEXT_RECORDS
                after = math.ceil(per_s * max(0.0, t1 - facts.end_s) * CONTEXT_SLACK) + MIN_CONTEXT_RECORDS
                plans.append(_Plan(kind, r, max(0, r.first - before), r.last + after))
        return plans

    def _fetch(self, plans: list[_Plan], facts: EventFacts, t0: float, t1: float, out: Evidence) -> None:
        consumer = self._get_consumer()
        by_tp: dict[TopicPartition, list[_Plan]] = {}
        for p in plans:
            by_tp.setdefault(TopicPartition(p.range.topic, p.range.partition), []).append(p)
        stop = {tp: max(p.stop_at for p in ps) for tp, ps in by_tp.items()}
        consumer.assign(list(by_tp))
        for tp, ps in by_tp.items():
            consumer.seek(tp, min(p.seek_from for p in ps))
        asset = facts.asset.encode()
        options = DecodeOptions(sample_rate=self.sample_rate, decode_media=False)
        done: set[TopicPartition] = set()
        deadline = time.monotonic() + self.timeout_s
        while len(done) < len(by_tp) and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=1000)
            for tp, records in batch.items():
                if tp in done:
                    continue
                for rec in records:
                    if rec.offset > stop[tp]:
                        done.add(tp)
                        break
                    for p in by_tp[tp]:
                        self._take(p, rec, asset, facts, t0, t1, options, out)
            for tp in by_tp:
                if tp in done:
                    continue
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                if highwater <= min(p.range.first for p in by_tp[tp]):
                    done.add(tp)  # the range lies beyond the log's end (e.g. a restarted in-memory broker)
                elif consumer.position(tp) >= min(highwater, stop[tp] + 1):
                    done.add(tp)  # read everything there is (the context after may not exist yet)
            if done:
                consumer.pause(*done)
        consumer.resume(*consumer.paused())
        consumer.assign([])

    def _take(self, p: _Plan, rec, asset: bytes, facts: EventFacts, t0: float, t1: float,
              options: DecodeOptions, out: Evidence) -> None:
        if rec.offset < p.seek_from or rec.offset > p.stop_at:
            return
        in_range = p.range.first <= rec.offset <= p.range.last
        if in_range:
            p.seen_in_range += 1
            p.first_seen = rec.offset if p.first_seen is None else min(p.first_seen, rec.offset)
        if rec.key != asset:
            return
        result = decode(p.kind, rec.key, rec.value, rec.headers, now=facts.start_s, options=options)
        if not isinstance(result, Accepted):
            if in_range:
                p.asset_records += 1
                p.corrupt += 1
            return
        t = result.envelope.time
        if not in_range and not (t0 <= t <= t1):
            return  # context outside the clip
        if in_range:
            p.asset_records += 1
        try:
            if p.kind is Kind.FRAME:
                image, width, height = decode_frame(rec.value, result.envelope.content_type, self.frame_box)
                out.frames.append(Frame(t, image, width, height, rec.offset, rec.partition))
            elif p.kind is Kind.AUDIO:
                out.audio.append((t, decode_audio(rec.value, self.sample_rate)))
            else:
                out.logs.append(Log(t, result.payload, rec.offset, in_range))
        except Exception as e:
            log.debug("evidence record %s[%d]@%d unreadable: %s", rec.topic, rec.partition, rec.offset, e)
            if in_range:
                p.corrupt += 1

    @staticmethod
    def _assess(p: _Plan) -> list[MissingEvidence]:
        r = p.range
        where = f"{r.topic}[{r.partition}] offsets {r.first}..{r.last}"
        expected = r.last - r.first + 1
        modality = p.kind.value
        out = []
        if p.seen_in_range <= 0:
            out.append(MissingEvidence(modality, "gone", f"{where} are no longer on the broker", expected, expected))
        elif p.seen_in_range < expected:
            lost = expected - p.seen_in_range
            out.append(MissingEvidence(modality, "partly_gone", f"{lost} of {expected} records at {where} are no "
                                       "longer on the broker", lost, expected))
        if p.corrupt:
            out.append(MissingEvidence(modality, "corrupt", f"{p.corrupt} of {p.asset_records} records of the asset "
                                       f"at {where} could not be decoded", p.corrupt, p.asset_records))
        return out
