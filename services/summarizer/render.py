"""Compose the summary video: evidence frames with overlays, spectrogram, logs, narration.

Where it sits: after evidence + narration + speech, before `mp4.Mp4Writer` and `media`. The clip
timeline runs from `t0` (a few seconds before the event) for `duration` seconds, at the source
camera's rate. The screen (640x360 by default) is:

    ┌ header: asset · wall-clock time of the frame · severity · kind ───────────────┐
    │ camera frame (box where the visual evidence │ score over time vs threshold  │
    │ is, red border while the event is open)     │ modality shares               │
    │   call events: the transcript instead       │ log lines as they occur       │
    ├ spectrogram of the sensor audio, anomalous band marked, event span, playhead ─┤
    └ caption: the narration sentence being spoken ─────────────────────────────────┘

Everything static (panels, spectrogram, score chart, share bars) is drawn once; per output frame
only the camera image, playheads, the current score, the time and the caption change, and those
are cached by state, which keeps rendering several times faster than real time on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.summarizer.evidence import Evidence, Frame
from services.summarizer.facts import EventFacts, utc
from services.summarizer.mp4 import Cue
from services.summarizer.narrator import humanize

BG = (16, 18, 23)
PANEL = (28, 31, 38)
TEXT = (225, 228, 235)
DIM = (140, 146, 160)
RED = (235, 64, 64)
AMBER = (255, 196, 0)
GREEN = (80, 200, 120)
HIGHLIGHT = (255, 224, 130)
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf")
BOLD_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf")


@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    for path in BOLD_PATHS if bold else FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)  # Pillow's bundled scalable font


def wrap(text: str, fnt: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and fnt.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".,;") + "…"
    return lines


@dataclass(frozen=True)
class Layout:
    """Panel rectangles (x0, y0, x1, y1) for a given output size (proportional to 640x360)."""

    width: int = 640
    height: int = 360

    def px(self, v: float) -> int:
        return int(round(v * self.height / 360))

    @property
    def header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.width, self.px(24)

    @property
    def camera(self) -> tuple[int, int, int, int]:
        w = int(self.width * 0.6) // 2 * 2
        return 0, self.px(24), w, self.px(24) + w * 9 // 16

    @property
    def side(self) -> tuple[int, int, int, int]:
        cam = self.camera
        return cam[2] + self.px(6), cam[1], self.width, cam[3]

    @property
    def spectrogram(self) -> tuple[int, int, int, int]:
        return 0, self.camera[3] + self.px(4), self.width, self.camera[3] + self.px(74)

    @property
    def caption(self) -> tuple[int, int, int, int]:
        return 0, self.spectrogram[3] + self.px(2), self.width, self.height

    def box_size(self, rect: tuple[int, int, int, int]) -> tuple[int, int]:
        return rect[2] - rect[0], rect[3] - rect[1]


@dataclass
class Timeline:
    """Output frame times. At the camera's rate while there is evidence to show ([t0, t0 + evidence_s]);
    after that (the narration is still speaking over the last frame) only when something on screen
    changes — the caption — and at `hold_fps` otherwise. MP4 carries variable frame rates fine, and
    this halves the encoding work of a typical clip."""

    t0: float  # epoch s at video time 0
    duration: float  # seconds of video
    fps: float
    evidence_s: float | None = None  # seconds of evidence; None = all of `duration`
    cue_times: tuple[float, ...] = ()
    hold_fps: float = 2.0

    def __post_init__(self) -> None:
        live = self.duration if self.evidence_s is None else min(self.duration, self.evidence_s)
        times = [i / self.fps for i in range(max(1, int(math.ceil(live * self.fps - 1e-9))))]
        if live < self.duration:
            grid = np.arange(live, self.duration, 1.0 / self.hold_fps).tolist()
            extra = {round(t, 3) for t in (*grid, *self.cue_times) if live <= t < self.duration}
            times += sorted(extra)
        last = self.duration - 1.0 / self.fps
        if times[-1] < last - 1e-3:
            times.append(last)  # the stream must last as long as the audio
        self.times: list[float] = times

    @property
    def frames(self) -> int:
        return len(self.times)

    def at(self, i: int) -> float:
        return self.t0 + self.times[i]

    def index_of(self, video_s: float) -> int:
        return max(0, min(len(self.times) - 1, int(np.searchsorted(self.times, video_s, side="right")) - 1))


def source_fps(frames: Sequence[Frame], default: float, cap: float) -> float:
    """The camera's own rate (median spacing), so each source frame is shown once."""
    if len(frames) < 2:
        return min(default, cap)
    gaps = np.diff([f.t for f in frames])
    gaps = gaps[gaps > 1e-3]
    if len(gaps) == 0:
        return min(default, cap)
    return float(min(cap, max(1.0, 1.0 / float(np.median(gaps)))))


# ── audio: timeline track and spectrogram ──────────────────────────────────────────────────

def sensor_track(evidence: Evidence, t0: float, duration: float) -> np.ndarray:
    """The sensor's audio chunks placed on the clip timeline (silence where none was recorded)."""
    sr = evidence.sample_rate
    track = np.zeros(int(math.ceil(duration * sr)) + 1, dtype=np.float32)
    for start, samples in evidence.audio:
        pos = int(round((start - t0) * sr))
        lo, hi = max(0, pos), min(len(track), pos + len(samples))
        if hi > lo:
            track[lo:hi] = samples[lo - pos: hi - pos]
    return track


_ANCHORS = np.array([[12, 10, 30], [60, 20, 110], [150, 40, 120], [230, 90, 60], [255, 200, 60], [255, 255, 220]],
                    dtype=np.float32)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c])
                 for c in range(3)], axis=1).astype(np.uint8)  # a dark-to-bright "inferno"-like ramp


def spectrogram_image(track: np.ndarray, sr: int, size: tuple[int, int], fmax: float) -> Image.Image:
    """Log-magnitude STFT of the whole clip, resized to the panel (time → x, frequency ↑ y)."""
    n_fft, hop = 512, 256
    if len(track) < n_fft:
        track = np.pad(track, (0, n_fft - len(track)))
    window = np.hanning(n_fft).astype(np.float32)
    count = 1 + (len(track) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    mag = np.abs(np.fft.rfft(track[idx] * window, axis=1))  # (T, F)
    keep = int(n_fft * min(fmax, sr / 2) / sr) + 1
    db = 20 * np.log10(mag[:, :keep] + 1e-6)
    hi = db.max() if np.isfinite(db).any() else 0.0
    norm = np.clip((db - (hi - 70)) / 70, 0, 1)  # 70 dB of dynamic range under the loudest bin
    img = _LUT[(norm.T[::-1] * 255).astype(np.uint8)]  # (F, T, 3), low frequencies at the bottom
    return Image.fromarray(img).resize(size, Image.Resampling.BILINEAR)


# ── the renderer ────────────────────────────────────────────────────────────────────────────

@dataclass
class RenderInputs:
    facts: EventFacts
    evidence: Evidence
    timeline: Timeline
    cues: list[Cue]
    tz_label: str = "UTC"
    notes: list[str] = field(default_factory=list)  # what is missing, shown on screen


class Composer:
    """Draws output frame i of a summary; `frame(i)` returns (H, W, 3) uint8."""

    def __init__(self, inputs: RenderInputs, layout: Layout):
        self.x = inputs
        self.layout = layout
        self.f = inputs.facts
        self.tl = inputs.timeline
        self._frames = inputs.evidence.frames
        self._frame_times = np.array([fr.t for fr in self._frames]) if self._frames else np.zeros(0)
        self._logs = inputs.evidence.logs
        self._log_times = np.array([entry.t for entry in self._logs]) if self._logs else np.zeros(0)
        self._cue_starts = np.array([c.start for c in inputs.cues]) if inputs.cues else np.zeros(0)
        self._camera_cache: dict[tuple[int, bool], Image.Image] = {}
        self._side_cache: dict[int, Image.Image] = {}
        self._caption_cache: dict[int, Image.Image] = {}
        self._text_cache: dict[tuple, tuple[Image.Image, Image.Image]] = {}
        # the lines the model attributed the score to (all of the event's lines only when it named none)
        named = self.f.attribution.top_log_lines or self.f.log_lines
        self._contributing = {line.strip() for line in named}
        self._codes = {c for c in self.f.attribution.log_codes if c}
        self.base = self._draw_base()

    # static parts
    def _draw_base(self) -> Image.Image:
        L = self.layout
        img = Image.new("RGB", (L.width, L.height), BG)
        d = ImageDraw.Draw(img)
        for rect in (L.header, L.camera, L.side, L.spectrogram, L.caption):
            d.rectangle(rect, fill=PANEL)
        hx0, hy0, hx1, _ = L.header
        kind = humanize(self.f.kind) or "anomaly"
        self._label = f"{self.f.severity.upper()} · {kind}"
        d.text((hx0 + 6, hy0 + L.px(4)), self.f.asset, fill=TEXT, font=font(L.px(13), bold=True))
        self._draw_spectrogram(img)
        self._draw_side_static(img, d)
        if not self._frames and not self.f.is_call:
            cx0, cy0, cx1, cy1 = L.camera
            msg = "no camera evidence" if "frames" not in self.f.evidence else "camera frames not available"
            d.text(((cx0 + cx1) // 2, (cy0 + cy1) // 2), msg, fill=DIM, font=font(L.px(14)), anchor="mm")
        return img

    def _x_of(self, t: float, rect: tuple[int, int, int, int]) -> int:
        frac = (t - self.tl.t0) / max(self.tl.duration, 1e-6)
        return int(rect[0] + min(1.0, max(0.0, frac)) * (rect[2] - rect[0] - 1))

    def _draw_spectrogram(self, img: Image.Image) -> None:
        L, rect = self.layout, self.layout.spectrogram
        d = ImageDraw.Draw(img)
        band = self.f.attribution.audio_band_hz
        if self.x.evidence.audio:
            sr = self.x.evidence.sample_rate
            fmax = min(sr / 2, max(8000.0, (band[1] * 1.25) if band and len(band) == 2 else 0.0))
            track = sensor_track(self.x.evidence, self.tl.t0, self.tl.duration)
            spec = spectrogram_image(track, sr, L.box_size(rect), fmax)
            img.paste(spec, rect[:2])
            if band and len(band) == 2:
                h = rect[3] - rect[1]
                y_hi = rect[3] - int(h * min(1.0, band[1] / fmax))
                y_lo = rect[3] - int(h * min(1.0, band[0] / fmax))
                for y in (y_hi, y_lo):
                    for x in range(rect[0], rect[2], 8):  # dashed band edges
                        d.line((x, y, x + 4, y), fill=AMBER, width=1)
                d.text((rect[2] - 4, max(rect[1] + 1, y_hi - 1)),
                       f"anomalous band {band[0]:.0f}–{band[1]:.0f} Hz", fill=AMBER, font=font(L.px(10)), anchor="rb")
            d.text((rect[0] + 4, rect[1] + 2), f"audio 0–{fmax / 1000:.0f} kHz", fill=TEXT, font=font(L.px(10)))
        else:
            d.text(((rect[0] + rect[2]) // 2, (rect[1] + rect[3]) // 2),
                   "no audio evidence" if "audio" not in self.f.evidence else "audio not available",
                   fill=DIM, font=font(L.px(12)), anchor="mm")
        # the event's span along the time axis
        xs, xe = self._x_of(self.f.start_s, rect), self._x_of(self.f.end_s, rect)
        d.line((xs, rect[3] - 2, xe, rect[3] - 2), fill=RED, width=3)

    def _draw_side_static(self, img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        L = self.layout
        x0, y0, x1, _ = L.side
        s = L.px
        d.text((x0 + 6, y0 + 3), "sentiment / score" if self.f.is_call else "score vs threshold", fill=DIM,
               font=font(s(10)))
        self._chart = (x0 + 6, y0 + s(16), x1 - 6, y0 + s(70))
        cx0, cy0, cx1, cy1 = self._chart
        d.rectangle(self._chart, fill=BG)
        scores = list(self.f.scores) or [(self.f.start_s, self.f.peak_score), (self.f.end_s, self.f.peak_score)]
        top = max([self.f.threshold * 1.5, *(v for _, v in scores)]) or 1.0
        self._score_top = top
        y_thr = cy1 - int((cy1 - cy0) * self.f.threshold / top)
        for x in range(cx0, cx1, 6):
            d.line((x, y_thr, x + 3, y_thr), fill=AMBER)
        if self.f.is_call and self.f.call and self.f.call.curve:
            for attr, colour in (("frustration", RED), ("positive", GREEN)):
                pts = [(self._x_of(p.t, self._chart), cy1 - int((cy1 - cy0) * getattr(p, attr))) for p in self.f.call.curve]
                if len(pts) > 1:
                    d.line(pts, fill=colour, width=2)
        pts = [(self._x_of(t, self._chart), cy1 - int((cy1 - cy0) * min(v, top) / top)) for t, v in scores]
        if len(pts) > 1:
            d.line(pts, fill=TEXT if self.f.is_call else RED, width=2)
        d.text((cx1 - 2, y_thr - 1), "threshold", fill=AMBER, font=font(s(9)), anchor="rb")
        # modality shares (static: they describe the whole event)
        y = cy1 + s(8)
        names = {"frames": "camera", "audio": "audio", "logs": "logs"} if not self.f.is_call else \
            {"frames": "video", "audio": "voice", "logs": "transcript"}
        shares = self.f.attribution.modality_shares or {}
        bar_w = (x1 - 6) - (x0 + s(70))
        for modality in ("frames", "audio", "logs"):
            if modality not in shares:
                continue
            share = max(0.0, min(1.0, float(shares[modality])))
            d.text((x0 + 6, y), names[modality], fill=TEXT, font=font(s(10)))
            d.rectangle((x0 + s(70), y + 2, x0 + s(70) + bar_w, y + s(10)), fill=BG)
            d.rectangle((x0 + s(70), y + 2, x0 + s(70) + int(bar_w * share), y + s(10)), fill=(90, 150, 240))
            d.text((x1 - 8, y), f"{share:.0%}", fill=TEXT, font=font(s(9)), anchor="ra")
            y += s(13)
        self._logs_top = y + s(4)

    # dynamic parts
    def _camera(self, t: float, in_event: bool) -> Image.Image | None:
        if not self._frames:
            return None
        i = int(np.searchsorted(self._frame_times, t, side="right")) - 1
        i = max(0, i)  # before the first frame: show the first
        key = (i, in_event)
        cached = self._camera_cache.get(key)
        if cached is not None:
            return cached
        L = self.layout
        box = L.box_size(L.camera)
        panel = Image.new("RGB", box, (0, 0, 0))
        src = self._frames[i].image
        ox, oy = (box[0] - src.shape[1]) // 2, (box[1] - src.shape[0]) // 2
        panel.paste(Image.fromarray(src), (ox, oy))
        d = ImageDraw.Draw(panel)
        region = self.f.attribution.frame_region
        if region and len(region) == 4:
            x0, y0, x1, y1 = (float(v) for v in region)
            w, h = src.shape[1], src.shape[0]
            d.rectangle((ox + x0 * w, oy + y0 * h, ox + x1 * w, oy + y1 * h), outline=AMBER if in_event else DIM,
                        width=2)
        if in_event:
            d.rectangle((0, 0, box[0] - 1, box[1] - 1), outline=RED, width=3)
        if len(self._camera_cache) > 256:
            self._camera_cache.clear()
        self._camera_cache[key] = panel
        return panel

    def _transcript(self, shown: int) -> Image.Image:
        """Call events: the transcript so far in the camera's place, newest line highlighted."""
        L = self.layout
        box = L.box_size(L.camera)
        panel = Image.new("RGB", box, PANEL)
        d = ImageDraw.Draw(panel)
        fnt, small = font(L.px(13)), font(L.px(10), bold=True)
        y = box[1] - L.px(8)
        for k in range(shown - 1, -1, -1):
            entry = self._logs[k]
            speaker = (entry.line.speaker or "").strip()[:16]
            lines = wrap(entry.line.msg, fnt, box[0] - L.px(20), 3)
            block = L.px(14) * len(lines) + (L.px(12) if speaker else 0) + L.px(6)
            if y - block < 0:
                break
            y -= block
            colour = HIGHLIGHT if k == shown - 1 else (RED if entry.line.msg.strip() in self._contributing else TEXT)
            if speaker:
                d.text((L.px(10), y), speaker, fill=DIM, font=small)
                y2 = y + L.px(12)
            else:
                y2 = y
            for line in lines:
                d.text((L.px(10), y2), line, fill=colour, font=fnt)
                y2 += L.px(14)
        if shown == 0:
            d.text((box[0] // 2, box[1] // 2), "transcript", fill=DIM, font=font(L.px(14)), anchor="mm")
        return panel

    def _side_logs(self, shown: int) -> Image.Image:
        L = self.layout
        x0, _, x1, y1 = L.side
        box = (x1 - x0, y1 - self._logs_top)
        panel = Image.new("RGB", box, PANEL)
        if self.f.is_call:
            return panel
        d = ImageDraw.Draw(panel)
        fnt = font(L.px(9))
        y = box[1] - L.px(4)
        for k in range(shown - 1, -1, -1):
            entry = self._logs[k]
            text = (f"[{entry.line.code}] " if entry.line.code else "") + entry.line.msg
            lines = wrap(text, fnt, box[0] - L.px(12), 2)
            y -= L.px(11) * len(lines) + L.px(2)
            if y < 0:
                break
            contributing = entry.line.msg.strip() in self._contributing or (entry.line.code in self._codes)
            colour = HIGHLIGHT if k == shown - 1 else (RED if contributing else DIM)
            if contributing:
                d.rectangle((0, y - 1, L.px(3), y + L.px(11) * len(lines)), fill=RED)
            for n, line in enumerate(lines):
                d.text((L.px(6), y + n * L.px(11)), line, fill=colour, font=fnt)
        if shown == 0:
            d.text((L.px(6), L.px(2)), "no log lines yet" if self._logs else "no log evidence", fill=DIM, font=fnt)
        return panel

    def _caption(self, k: int) -> Image.Image:
        L = self.layout
        box = L.box_size(L.caption)
        panel = Image.new("RGB", box, (0, 0, 0))
        if 0 <= k < len(self.x.cues):
            d = ImageDraw.Draw(panel)
            fnt = font(L.px(14))
            lines = wrap(self.x.cues[k].text, fnt, box[0] - L.px(16), 2)
            total = len(lines) * L.px(17)
            y = (box[1] - total) // 2
            for line in lines:
                d.text((box[0] // 2, y), line, fill=(255, 255, 255), font=fnt, anchor="ma")
                y += L.px(17)
        return panel

    def _paste_text(self, img: Image.Image, xy: tuple[int, int], text: str, colour, size: int, anchor: str) -> None:
        """Bold text drawn once per (text, colour) and pasted after: glyph rendering is the costly part."""
        key = (text, colour, size)
        cached = self._text_cache.get(key)
        if cached is None:
            fnt = font(size, bold=True)
            x0, y0, x1, y1 = fnt.getbbox(text)
            mask = Image.new("L", (x1 + 2, y1 + 2), 0)
            ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=fnt)
            cached = self._text_cache[key] = (Image.new("RGB", mask.size, colour), mask)
        solid, mask = cached
        x = xy[0] - mask.size[0] if anchor.startswith("r") else xy[0]
        img.paste(solid, (x, xy[1]), mask)

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.image(i))

    def image(self, i: int) -> Image.Image:
        L, f = self.layout, self.f
        t = self.tl.at(i)
        vt = self.tl.times[i]
        in_event = f.start_s <= t <= f.end_s
        img = self.base.copy()
        d = ImageDraw.Draw(img)
        shown = int(np.searchsorted(self._log_times, t, side="right")) if len(self._log_times) else 0
        if f.is_call:
            img.paste(self._transcript(shown), L.camera[:2])
        else:
            cam = self._camera(t, in_event)
            if cam is not None:
                img.paste(cam, L.camera[:2])
        if shown not in self._side_cache:
            self._side_cache[shown] = self._side_logs(shown)
        img.paste(self._side_cache[shown], (L.side[0], self._logs_top))
        k = int(np.searchsorted(self._cue_starts, vt, side="right")) - 1 if len(self._cue_starts) else -1
        if k >= 0 and vt > self.x.cues[k].end:
            k = -1
        if k not in self._caption_cache:
            self._caption_cache[k] = self._caption(k)
        img.paste(self._caption_cache[k], L.caption[:2])
        # playheads and the score in force now
        for rect in (L.spectrogram, self._chart):
            x = self._x_of(t, rect)
            d.line((x, rect[1], x, rect[3]), fill=(255, 255, 255), width=1)
        score = f.score_at(t)
        hx0, hy0, hx1, hy1 = L.header
        stamp = utc(t).strftime("%Y-%m-%d %H:%M:%S.") + f"{int((t % 1) * 10)}"
        d.text((hx0 + L.px(130), hy0 + L.px(5)), f"{stamp} UTC", fill=TEXT, font=font(L.px(12)))
        self._paste_text(img, (hx1 - 6, hy0 + L.px(5)), self._label, RED if in_event else DIM, L.px(11), "ra")
        if score is not None:
            cx0, cy0, cx1, _ = self._chart
            ratio = score / f.threshold if f.threshold > 0 else 0.0
            self._paste_text(img, (cx1, L.side[1] + 3), f"{ratio:.1f}× threshold",
                             RED if score >= f.threshold else GREEN, L.px(10), "ra")
        if self.x.notes:
            y = L.camera[1] + L.px(4)
            for note in self.x.notes[:3]:
                d.text((L.camera[0] + L.px(6), y), note, fill=AMBER, font=font(L.px(10)))
                y += L.px(12)
        return img


def narration_track(speech_clips: Sequence[np.ndarray], sr: int, lead_in: float, gap: float
                    ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate the spoken sentences with pauses; return the track and each sentence's span."""
    spans, pieces, t = [], [np.zeros(int(lead_in * sr), np.float32)], lead_in
    for clip in speech_clips:
        length = len(clip) / sr
        spans.append((t, t + length))
        pieces += [clip.astype(np.float32), np.zeros(int(gap * sr), np.float32)]
        t += length + gap
    return np.concatenate(pieces), spans


def mix(narration: np.ndarray, sensor: np.ndarray, spans: Sequence[tuple[float, float]], sr: int,
        sensor_gain: float, duck: float = 0.35) -> np.ndarray:
    """Narration peak-normalised; the sensor's sound levelled to `sensor_gain` x the voice's RMS
    (so a loud machine never drowns the words, nor a quiet one vanishes) and ducked under the voice."""
    n = max(len(narration), len(sensor))
    out = np.zeros(n, dtype=np.float32)
    peak = float(np.max(np.abs(narration))) if len(narration) else 0.0
    voice_rms = 0.1
    if peak > 0:
        voice = narration * (0.9 / peak)
        out[: len(voice)] += voice
        voiced = np.concatenate([voice[int(a * sr): int(b * sr)] for a, b in spans]) if spans else voice
        voice_rms = float(np.sqrt(np.mean(voiced ** 2))) if len(voiced) else voice_rms
    if len(sensor) and sensor_gain > 0:
        present = sensor[np.abs(sensor) > 1e-6]
        s_rms = float(np.sqrt(np.mean(present ** 2))) if len(present) else 0.0
        if s_rms > 1e-6:
            level = min(sensor_gain * voice_rms / s_rms, 0.9 / float(np.max(np.abs(sensor))))
            gain = np.full(len(sensor), level, dtype=np.float32)
            for a, b in spans:
                gain[int(a * sr): int(b * sr)] *= duck
            out[: len(sensor)] += sensor * gain
    return np.clip(out, -1.0, 1.0)


def cue_list(sentences: Sequence[str], spans: Sequence[tuple[float, float]], max_chars: int = 84) -> list[Cue]:
    """Subtitle cues: each sentence's span split among its phone-sized pieces by length."""
    from services.summarizer.narrator import sentence_cues

    cues = []
    for sentence, (a, b) in zip(sentences, spans):
        pieces = sentence_cues([sentence], max_chars)
        total = sum(len(p) for p in pieces) or 1
        t = a
        for piece in pieces:
            dt = (b - a) * len(piece) / total
            cues.append(Cue(round(t, 3), round(t + dt, 3), piece))
            t += dt
    return cues
