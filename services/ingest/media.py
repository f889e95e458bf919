"""Video and audio from files and network streams (PyAV/FFmpeg) into contract-v1 records.

One demux loop reads a container's video and audio streams together, so frames and audio chunks
of one recording share one clock: media time zero is the container's start time, and event time
is the chosen origin (see `common.resolve_origin`) plus media time. Video is sampled down to a
target fps (each kept frame carries its own timestamp, not a grid time), scaled to a maximum
width and JPEG-encoded; audio is cut into fixed chunks (e.g. 0.5 s) by sample count, so chunk
times never drift, and resampled with torchaudio when asked — with context from the neighbouring
chunks, so chunk edges carry no filter artefacts.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from schemas.envelope import ContractLimits, Kind, WireRecord, encode_audio, encode_frame, wav_bytes
from schemas.errors import ConfigError, DependencyUnavailable
from services.ingest.common import RunIds, source_uri

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

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ConfigError("--fps must be positive")
        if not 0.05 <= self.chunk_s <= ContractLimits().max_audio_s:
            raise ConfigError(f"--chunk-s must be between 0.05 and {ContractLimits().max_audio_s:.0f} s")
        if self.resample is not None and not ContractLimits().min_sample_rate <= self.resample <= ContractLimits().max_sample_rate:
            raise ConfigError("--resample must be a sample rate between 4000 and 192000 Hz")


def open_container(src: str, options: MediaOptions):
    import av

    av_options = {}
    if src.startswith(("rtsp://", "rtsps://")):
        av_options["rtsp_transport"] = options.rtsp_transport
    try:
        return av.open(src, options=av_options, timeout=(options.open_timeout_s, options.open_timeout_s))
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


def media_records(container, src: str, asset: str, origin: float, options: MediaOptions,
                  ids: RunIds | None = None) -> Iterator[Record]:
    """Frames and audio chunks of one container, in demux order, with event times."""
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
            if packet.stream.type == "video":
                rec = sampler.push(frame, rel, origin)
                if rec is not None:
                    yield rec
            else:
                yield from chunker.push(_audio_array(frame), frame.sample_rate, rel, origin)
    if chunker is not None:
        yield from chunker.flush(origin)
