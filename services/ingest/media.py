"""Video and audio from files and network streams (PyAV/FFmpeg) into contract-v1 records.

One demux loop reads a container's video and audio streams together, so frames and audio chunks
of one recording share one clock: media time zero is the container's start time, and event time
is the chosen origin (see `common.resolve_origin`) plus media time. Video is sampled down to a
target fps (each kept frame carries its own timestamp, not a grid time), scaled to a maximum
width and JPEG-encoded; audio is cut into fixed chunks (e.g. 0.5 s) by sample count, so chunk
times never drift, and resampled with torchaudio when asked — with context from the neighbouring
chunks, so chunk edges carry no filter artefacts.

`open_media` is the entry point: a local file or a URL with a length is a recording (its end is
the end of the run), anything else is a live stream that reconnects (services/ingest/live.py).
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import urlsplit

import numpy as np

from schemas.envelope import ContractLimits, Kind, WireRecord, encode_audio, encode_frame, wav_bytes
from schemas.errors import ConfigError, DependencyUnavailable
from services.ingest.common import RunIds, is_url, resolve_origin, source_uri
from services.ingest.live import LIVE_SCHEMES, NETWORK_SCHEMES, Backoff, LiveClock, RetryPolicy, classify, connect, retry_after

log = logging.getLogger(__name__)

Record = tuple[Kind, WireRecord, float]  # (kind, record, event time)
_RESAMPLE_CONTEXT = 1024  # source samples of context on each side of a chunk when resampling


@dataclass(frozen=True)
class MediaOptions:
    fps: float = 4.0  # frames per second kept from the video
    max_width: int = 640  # larger frames are scaled down (aspect kept); 0 keeps the size
    jpeg_quality: int = 85
    audio: bool = True  # also ingest the container's audio track
    video: bool = True
    chunk_s: float = 0.5
    resample: int | None = None  # output sample rate; None keeps the source rate
    max_channels: int = ContractLimits().max_audio_channels
    open_timeout_s: float = 10.0
    rtsp_transport: str = "tcp"
    probe_s: float = 1.0  # how much of a network stream FFmpeg reads to learn its codecs

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ConfigError("--fps must be positive")
        if not 0.05 <= self.chunk_s <= ContractLimits().max_audio_s:
            raise ConfigError(f"--chunk-s must be between 0.05 and {ContractLimits().max_audio_s:.0f} s")
        if self.resample is not None and not ContractLimits().min_sample_rate <= self.resample <= ContractLimits().max_sample_rate:
            raise ConfigError("--resample must be a sample rate between 4000 and 192000 Hz")


def _open(src: str, options: MediaOptions):
    import av

    av_options = {}
    if src.startswith(("rtsp://", "rtsps://")):
        av_options["rtsp_transport"] = options.rtsp_transport
    if is_url(src):
        # FFmpeg probes a stream for 5 s by default; a live stream's first records would then reach
        # the monitor 5 s late, after their windows closed on the other modalities' clocks
        av_options["analyzeduration"] = str(int(options.probe_s * 1e6))
    return av.open(src, options=av_options, timeout=(options.open_timeout_s, options.open_timeout_s))


def open_container(src: str, options: MediaOptions):
    """Open once, without retries (files, tests); `open_media` is what the commands use."""
    import av

    try:
        return _open(src, options)
    except FileNotFoundError:
        raise ConfigError(f"{src} does not exist") from None
    except av.FFmpegError as e:
        raise DependencyUnavailable(f"cannot open {src}: {e}") from None


class FrameSampler:
    """Keeps frames at ~fps by their timestamps and encodes them as JPEG."""

    def __init__(self, asset: str, source: str, ids: RunIds, options: MediaOptions):
        self.asset, self.source, self.ids, self.options = asset, source, ids, options
        self.next_t: float | None = None

    def push(self, frame, rel: float, origin: float) -> Record | None:
        period = 1.0 / self.options.fps
        if self.next_t is not None and rel < self.next_t - 1e-6:
            return None
        # next slot on the grid after this frame (a late or bursty stream never piles up frames)
        self.next_t = rel + period if self.next_t is None else max(self.next_t + period, rel + period / 2)
        width, height = frame.width, frame.height
        mw = self.options.max_width
        if mw and width > mw:
            width, height = mw, max(2, int(round(height * mw / width / 2)) * 2)
        img = frame.to_image(width=width, height=height)  # swscale does the scaling and RGB conversion
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=self.options.jpeg_quality)
        rid, seq = self.ids.next(Kind.FRAME)
        t = origin + rel
        return Kind.FRAME, encode_frame(self.asset, self.source, t, buf.getvalue(), id=rid, sequence=seq), t


class AudioChunker:
    """Accumulates decoded audio and cuts fixed-length WAV chunks, timed by sample count."""

    def __init__(self, asset: str, source: str, ids: RunIds, options: MediaOptions):
        self.asset, self.source, self.ids, self.options = asset, source, ids, options
        self.rate: int | None = None
        self.channels = 0
        self.buf = np.zeros((0, 0), np.float32)
        self.left = np.zeros((0, 0), np.float32)  # context before buf[0] (for resampling)
        self.seg_start = 0.0  # media time of the first sample of this contiguous segment
        self.consumed = 0  # samples of the segment already emitted
        self.received = 0  # samples of the segment received

    def push(self, samples: np.ndarray, rate: int, rel: float, origin: float) -> list[Record]:
        """samples (N, C) float32 starting at media time rel."""
        out: list[Record] = []
        samples = samples[:, : self.options.max_channels]
        expected = self.seg_start + self.received / self.rate if self.rate else None
        if self.rate != rate or samples.shape[1] != self.channels or expected is None or abs(rel - expected) > 0.05:
            out += self.flush(origin)  # a gap, a jump or a format change starts a new segment
            self.rate, self.channels = rate, samples.shape[1]
            self.buf = np.zeros((0, self.channels), np.float32)
            self.left = np.zeros((0, self.channels), np.float32)
            self.seg_start, self.consumed, self.received = rel, 0, 0
        self.buf = np.concatenate([self.buf, samples])
        self.received += len(samples)
        n = self.chunk_len
        lookahead = self._context if self._resampling else 0
        while len(self.buf) >= n + lookahead:
            out.append(self._emit(n, origin))
        return out

    @property
    def _step(self) -> int:
        """Input samples per whole number of output samples (1 without resampling). Chunk and context
        lengths are multiples of it, so every chunk's output grid continues the previous one exactly."""
        if not self._resampling:
            return 1
        return self.rate // math.gcd(self.rate, self.options.resample)

    @property
    def chunk_len(self) -> int:
        step = self._step
        return max(step, int(round(self.options.chunk_s * self.rate / step)) * step)

    @property
    def _context(self) -> int:
        return -(-_RESAMPLE_CONTEXT // self._step) * self._step

    @property
    def _resampling(self) -> bool:
        return self.options.resample is not None and self.options.resample != self.rate

    def _emit(self, n: int, origin: float) -> Record:
        chunk = self.buf[:n]
        out_rate = self.rate
        if self._resampling:
            chunk, out_rate = self._resample(n), self.options.resample
        t = origin + self.seg_start + self.consumed / self.rate
        self.left = self.buf[max(0, n - self._context):n] if self._resampling else self.left
        self.buf = self.buf[n:]
        self.consumed += n
        rid, seq = self.ids.next(Kind.AUDIO)
        return Kind.AUDIO, encode_audio(self.asset, self.source, t, wav_bytes(chunk, out_rate), id=rid, sequence=seq), t

    def _resample(self, n: int) -> np.ndarray:
        import torch
        import torchaudio.functional as AF

        src, dst = self.rate, self.options.resample
        right = self.buf[n:n + self._context]
        x = np.concatenate([self.left, self.buf[:n], right])
        y = AF.resample(torch.from_numpy(np.ascontiguousarray(x.T)), src, dst).numpy().T
        a = len(self.left) * dst // src  # exact: both lengths are multiples of _step
        b = a + -(-n * dst // src)  # a final partial chunk rounds up, like resampling the whole file
        return y[a:b]

    def flush(self, origin: float) -> list[Record]:
        if self.rate is None or len(self.buf) == 0:
            return []
        return [self._emit(len(self.buf), origin)]


def _audio_array(frame) -> np.ndarray:
    """A decoded audio frame as (N, C) float32 in [-1, 1], whatever its sample format."""
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if fmt.is_planar:
        arr = arr.T  # (C, N) -> (N, C)
    else:
        arr = arr.reshape(-1, channels)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)


def media_records(container, src: str, asset: str, origin: float | LiveClock, options: MediaOptions,
                  ids: RunIds | None = None) -> Iterator[Record]:
    """Frames and audio chunks of one container, in demux order, with event times: `origin` plus
    media time for a recording, or the wall-clock anchor a LiveClock keeps for a live stream."""
    ids = ids or RunIds()
    vstreams = list(container.streams.video[:1]) if options.video else []
    astreams = list(container.streams.audio[:1]) if options.audio else []
    if not vstreams and not astreams:
        raise ConfigError(f"{src} has no {'video or audio' if options.video else 'audio'} stream to ingest")
    for s in vstreams:
        s.thread_type = "AUTO"
    zero = container.start_time / 1e6 if container.start_time is not None else None
    sampler = FrameSampler(asset, source_uri("video", src), ids, options) if vstreams else None
    chunker = AudioChunker(asset, source_uri("audio", src), ids, options) if astreams else None
    for packet in container.demux(*vstreams, *astreams):
        for frame in packet.decode():
            if frame.time is None:
                continue
            if zero is None:
                zero = frame.time  # live streams: the first timestamp seen is time zero
            rel = frame.time - zero
            base = origin.origin_for(rel) if isinstance(origin, LiveClock) else origin
            if packet.stream.type == "video":
                rec = sampler.push(frame, rel, base)
                if rec is not None:
                    yield rec
            else:
                yield from chunker.push(_audio_array(frame), frame.sample_rate, rel, base)
    if chunker is not None:
        yield from chunker.flush(origin.origin if isinstance(origin, LiveClock) else origin)


@dataclass
class MediaFeed:
    """One opened media input: a recording (`total_s` known) or a live stream that reconnects."""

    src: str
    live: bool
    total_s: float | None
    records: Callable[[threading.Event], Iterator[Record]]
    close: Callable[[], None]

    @property
    def label(self) -> str:
        return source_uri("video", self.src) if is_url(self.src) else self.src.rsplit("/", 1)[-1]


def check_media_source(src: str) -> None:
    """What can be checked without connecting: a file exists, a URL has a scheme we stream from."""
    from pathlib import Path

    if is_url(src):
        scheme = urlsplit(src).scheme.lower()
        if scheme not in NETWORK_SCHEMES and scheme != "file":
            raise ConfigError(f"{source_uri('video', src)}: '{scheme}://' is no stream address fusionwatch reads; use "
                              f"one of {', '.join(s + '://' for s in sorted(NETWORK_SCHEMES))} or a file path")
        if not urlsplit(src).hostname and scheme != "file":
            raise ConfigError(f"{source_uri('video', src)} names no host; write it as {scheme}://HOST[:PORT]/PATH")
        return
    path = Path(src)
    if not path.exists():
        hint = f" (nor does its folder {path.parent})" if not path.parent.exists() else ""
        raise ConfigError(f"{src} does not exist{hint}; check the path")
    if path.is_dir():
        raise ConfigError(f"{src} is a folder; give one recording or a stream URL")


def open_media(src: str, asset: str, options: MediaOptions, start_time: str = "now", speed: float = 0.0,
               retry: RetryPolicy = RetryPolicy(), stop: threading.Event | None = None) -> MediaFeed:
    """Open a file or connect to a URL (retrying within `retry`) and say how to read it."""
    check_media_source(src)
    if not is_url(src) or urlsplit(src).scheme.lower() == "file":
        return _recording(open_container(src, options), src, asset, options, start_time, speed)
    stop = stop or threading.Event()
    backoff = Backoff(retry, asset=asset, source=src)
    opened = connect(src, lambda: (time.time(), _open(src, options)), options.open_timeout_s, backoff, stop)
    if opened is None:  # stopped while waiting to connect
        return MediaFeed(src, True, None, lambda _stop: iter(()), lambda: None)
    opened_at, container = opened
    if urlsplit(src).scheme.lower() not in LIVE_SCHEMES and container.duration:
        return _recording(container, src, asset, options, start_time, speed)  # e.g. an MP4 over HTTP
    if start_time.strip() != "now":
        container.close()
        raise ConfigError("--start-time is for recordings: a live stream is stamped with this host's clock as it arrives")
    state = {"container": container}

    def close() -> None:
        if state["container"] is not None:
            state["container"].close()

    return MediaFeed(src, True, None, lambda stop_: _live_records(state, opened_at, src, asset, options, backoff, stop_),
                     close)


def _recording(container, src: str, asset: str, options: MediaOptions, start_time: str, speed: float) -> MediaFeed:
    total = container.duration / 1e6 if container.duration else None
    origin = resolve_origin(start_time, container.metadata.get("creation_time"), src)
    if start_time.strip() == "now" and total and (speed == 0 or speed > 1):
        origin -= total  # a fast replay ends at the present, never ahead of the consumers' clock

    def records(_stop: threading.Event) -> Iterator[Record]:
        import av

        try:
            yield from media_records(container, src, asset, origin, options)
        except av.FFmpegError as e:
            raise _read_failure(e, src) from None

    return MediaFeed(src, False, total, records, container.close)


def _read_failure(e: Exception, src: str) -> Exception:
    text = (getattr(e, "strerror", None) or str(e)).strip()
    if not is_url(src):
        return ConfigError(f"{src} could not be read to its end ({text}): the file is damaged or still being written")
    where = source_uri("video", src)
    if urlsplit(src).scheme.lower() in ("http", "https") and not _accepts_ranges(src, 5.0):
        return DependencyUnavailable(
            f"{where} could not be read to its end ({text}): its server does not answer range requests, which a "
            "recording with its index at the end (most MP4s) needs; serve it from a server that does (nginx, Apache), "
            "make it streamable (ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4), or download it and ingest "
            "the file")
    return DependencyUnavailable(f"reading {where} failed ({text}); check the server, then start again")


def _accepts_ranges(url: str, timeout_s: float) -> bool:
    """Whether an HTTP server answers a range request with 206 (unknown counts as yes)."""
    import urllib.request

    try:
        req = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - the operator's own source URL
            return r.status == 206
    except Exception:  # noqa: BLE001 - only a diagnostic
        return True


def _live_records(state: dict, opened_at: float, src: str, asset: str, options: MediaOptions, backoff: Backoff,
                  stop: threading.Event) -> Iterator[Record]:
    """Records of a live stream across reconnections, on one wall clock and one id sequence."""
    import av

    clock, ids, where = LiveClock(), RunIds(), source_uri("video", src)
    while True:
        clock.connected(opened_at)
        sent = 0
        try:
            for rec in media_records(state["container"], src, asset, clock, options, ids):
                if sent == 0 and backoff.attempts:
                    log.info("%s: media flowing again after %.0f s", where, backoff.offline_s())
                sent += 1
                backoff.media_flowed()
                yield rec
            reason = "the stream ended"
        except av.FFmpegError as e:
            failure = classify(e, src, 0.0, options.open_timeout_s)
            if failure.permanent:
                raise ConfigError(failure.reason) from None
            reason = failure.reason
        finally:
            state["container"].close()
            state["container"] = None
        if stop.is_set() or not retry_after(where, f"{reason} after {sent} records", backoff, stop):
            return
        opened = connect(src, lambda: (time.time(), _open(src, options)), options.open_timeout_s, backoff, stop)
        if opened is None:
            return
        opened_at, state["container"] = opened
