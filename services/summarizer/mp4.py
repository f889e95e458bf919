"""Write one browser-ready MP4: H.264 (yuv420p) video, AAC audio, a mov_text subtitle track,
`+faststart` (the index first, so a phone starts playing before the download ends).

Where it sits: the last step of the renderer (and of the scheduler's digest). It knows containers
and codecs, nothing about events. PyAV has no subtitle *encoder* path that works for mov_text (the
encoder wants an ASS header PyAV cannot set), but a mov_text sample is simply a 16-bit big-endian
length and the UTF-8 text, so cues are muxed as ready-made packets on a codec-less stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

AAC_FRAME = 1024  # samples per AAC-LC frame


@dataclass(frozen=True)
class Cue:
    start: float  # seconds from the start of the video
    end: float
    text: str


class Mp4Writer:
    """Use as a context manager; frames are RGB (H, W, 3) uint8 at the declared size."""

    def __init__(self, path: Path, width: int, height: int, fps: float, sample_rate: int = 22050,
                 crf: int = 26, preset: str = "veryfast", title: str | None = None, language: str = "eng"):
        import av

        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1000)
        self.sample_rate = sample_rate
        self._container = av.open(str(self.path), "w", format="mp4", container_options={"movflags": "+faststart"})
        if title:
            self._container.metadata["title"] = title[:200]
        self._video = self._container.add_stream("libx264", rate=self.fps, options={
            "crf": str(crf), "preset": preset,
            # browsers and phones: constrained features, no B-frame pyramid surprises
            "profile": "high", "x264-params": "keyint=60:min-keyint=10",
        })
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        # millisecond timestamps: frames may come at the camera's rate or slower (variable rate)
        self._video.codec_context.time_base = Fraction(1, 1000)
        # the fast coder without PNS/TNS: ~2x quicker than the default two-loop search, and a
        # narrated voice over machine hum does not need the difference
        self._audio = self._container.add_stream("aac", rate=sample_rate, layout="mono", options={
            "aac_coder": "fast", "aac_pns": "0", "aac_tns": "0"})
        self._audio.bit_rate = 64_000
        self._subs = self._container.add_mux_stream("mov_text")
        self._subs.time_base = Fraction(1, 1000)
        self._subs.metadata["language"] = language
        self._frames = 0
        self._last_pts = -1
        self._samples = 0
        self._closed = False

    def add_frame(self, rgb: np.ndarray, at_s: float | None = None) -> None:
        """Append a frame shown from `at_s` seconds (default: the next slot at the declared rate)."""
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        pts = int(round(1000 * (at_s if at_s is not None else self._frames / self.fps)))
        frame.pts = max(pts, self._last_pts + 1)
        self._last_pts = frame.pts
        frame.time_base = self._video.codec_context.time_base
        self._frames += 1
        for packet in self._video.encode(frame):
            self._container.mux(packet)

    def add_audio(self, samples: np.ndarray) -> None:
        """Append mono float32 samples in [-1, 1] (any length; framed here)."""
        import av

        samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        for pos in range(0, len(samples), AAC_FRAME):
            chunk = samples[pos: pos + AAC_FRAME]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._samples
            frame.time_base = Fraction(1, self.sample_rate)
            self._samples += len(chunk)
            for packet in self._audio.encode(frame):
                self._container.mux(packet)

    def add_cues(self, cues: Iterable[Cue]) -> None:
        import av

        for cue in sorted(cues, key=lambda c: c.start):
            text = cue.text.encode("utf-8")[:65535]
            packet = av.Packet(len(text).to_bytes(2, "big") + text)
            packet.stream = self._subs
            packet.time_base = self._subs.time_base
            packet.pts = packet.dts = int(round(cue.start * 1000))
            packet.duration = max(1, int(round((cue.end - cue.start) * 1000)))
            self._container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for packet in self._video.encode(None):
            self._container.mux(packet)
        for packet in self._audio.encode(None):
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def vtt_time(seconds: float) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def webvtt(cues: Sequence[Cue]) -> str:
    """The WebVTT sidecar (what browsers show with <track>; mov_text is for players and phones)."""
    blocks = ["WEBVTT", ""]
    for i, cue in enumerate(cues, 1):
        text = cue.text.replace("-->", "→").strip()
        blocks += [str(i), f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}", text, ""]
    return "\n".join(blocks)


def parse_webvtt(text: str) -> list[Cue]:
    """Read back what `webvtt` wrote (the digest re-uses each event's cues)."""
    cues = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "-->" in line:
            start, end = (part.strip().split(" ")[0] for part in line.split("-->"))
            body = []
            for following in lines[i + 1:]:
                if not following.strip():
                    break
                body.append(following)
            cues.append(Cue(_seconds(start), _seconds(end), "\n".join(body)))
    return cues


def _seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]
