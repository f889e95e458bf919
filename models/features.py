"""Featurizer: one `WindowInputs` (decoded media of one asset-window) -> fixed-shape model inputs.

Where it sits: after the aligner (monitor or offline dataset builder), before the fusion model.
Two steps, so the same code serves live scoring and cached training data:

1. `Featurizer.featurize(window) -> WindowFeatures`: numpy, per window. Frames are placed in up
   to `max_frames` slots (evenly re-sampled when a camera sends more), audio chunks are laid on a
   window-long canvas by their start times and turned into a log-mel spectrogram (torchaudio),
   log lines are embedded by the frozen text encoder (cached by normalised line).
2. `collate(features, cfg, code_vocab) -> WindowBatch`: torch tensors with masks.

Missing data is *masked*, never zero-filled as if it were silence or a black frame: every token has
a mask bit, and a modality with no valid token is absent for the window.
Logs are special: a 2 s window with no log line is normal for a live log stream, so logs count as
present (with zero lines) whenever any other modality is present.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from models.inputs import WindowInputs
from models.text import EMBED_DIM, TextEncoder

if TYPE_CHECKING:
    from torchaudio.transforms import MelScale, Spectrogram

MODALITIES = ("frames", "audio", "logs")
LEVELS = {"debug": 0, "trace": 0, "info": 1, "notice": 1, "warn": 2, "warning": 2, "error": 3, "err": 3,
          "critical": 4, "fatal": 4, "alarm": 4}
N_LEVELS = 6  # the five above + unknown/none
CODE_NONE, CODE_KNOWN, CODE_UNKNOWN = 0, 1, 2
# who said a transcript line (LogPayload.speaker) and which channel of a stereo call is whose;
# index 0 = unknown / the mixed channel. Only models built with speaker or channel inputs use them.
SPEAKERS = ("", "agent", "customer")
CHANNELS = ("agent", "customer")


def speaker_id(speaker: str | None) -> int:
    s = (speaker or "").lower()
    return SPEAKERS.index(s) if s in SPEAKERS else 0


# a channel's mel frame is speech at or above this level (mean-square power against a full-scale
# signal): a phone line's noise sits near -60 dBFS, a voice at -35 to -15
SPEECH_DBFS = -45.0


def speech_seconds(log_mel: np.ndarray, mask: np.ndarray, cfg: FeatureConfig, level_dbfs: float = SPEECH_DBFS) -> np.ndarray:
    """Seconds of received audio at or above `level_dbfs`: log-mel (..., n_mels, T) as
    `Featurizer` makes it, with its frame mask (..., T) -> (...). The mel bands tile the spectrum,
    so their summed power is the frame's; a Hann-windowed FFT of n_fft samples makes it
    0.1875 * n_fft**2 times the signal's mean square."""
    power = np.exp(log_mel.astype(np.float32)).sum(-2)  # (..., T)
    dbfs = 10.0 * np.log10(np.maximum(power, 1e-30) / (0.1875 * cfg.n_fft ** 2))
    return ((dbfs >= level_dbfs) & mask).sum(-1) * (cfg.hop_length / cfg.sample_rate)


@dataclass(frozen=True)
class FeatureConfig:
    window_s: float = 2.0
    frame_width: int = 80
    frame_height: int = 60
    max_frames: int = 8  # 4 fps x 2 s; faster cameras are re-sampled evenly in time
    sample_rate: int = 16_000
    n_fft: int = 1024  # 64 ms: resolves ~16 Hz, enough for a 1x-shaft-speed imbalance line
    hop_length: int = 320  # 20 ms -> 100 mel frames per 2 s window
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    max_lines: int = 16  # more lines in one window are sub-sampled; their count is kept

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.max_frames < 1 or self.max_lines < 1:
            raise ValueError("window_s, max_frames and max_lines must be positive")
        if self.audio_frames % 4:
            raise ValueError(f"window_s * sample_rate / hop_length = {self.audio_frames} must be a multiple of 4 "
                             "(the audio encoder halves time twice)")
        if self.frame_height % 4 or self.frame_width % 4:
            raise ValueError("frame sizes must be multiples of 4")

    @property
    def audio_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def audio_frames(self) -> int:  # mel frames used (the trailing centred frame is dropped)
        return self.audio_samples // self.hop_length

    @property
    def frame_size(self) -> tuple[int, int]:
        return (self.frame_width, self.frame_height)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mel_centres_hz(self) -> np.ndarray:
        """Centre frequency of each mel band (HTK mel scale, torchaudio's default)."""
        def hz_to_mel(f):
            return 2595.0 * np.log10(1.0 + f / 700.0)

        mels = np.linspace(hz_to_mel(self.f_min), hz_to_mel(self.f_max), self.n_mels + 2)
        return 700.0 * (10 ** (mels / 2595.0) - 1.0)  # (n_mels + 2,) edges; centres are [1:-1]


@dataclass
class WindowFeatures:
    """One window, model-ready but still numpy (what the training cache stores)."""

    asset: str
    start: float
    end: float
    frames: np.ndarray  # (n_f, H, W, 3) uint8, n_f <= max_frames, time-ordered
    frame_times: np.ndarray  # (n_f,) seconds from window start
    mel: np.ndarray  # (n_mels, audio_frames) float32 log-mel (natural log)
    audio_mask: np.ndarray  # (audio_frames,) bool: mel frame covered by received audio
    log_emb: np.ndarray  # (n_l, 384) float32, n_l <= max_lines
    log_times: np.ndarray  # (n_l,) seconds from window start
    log_levels: np.ndarray  # (n_l,) int64 level ids
    log_codes: list[str | None]  # (n_l,) raw codes
    log_text: list[str]  # (n_l,) raw messages (for attribution)
    log_count: int  # all lines in the window, before sub-sampling
    log_present: bool
    serials: list[str] = field(default_factory=list)
    log_speakers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n_l,) SPEAKERS ids
    # stereo calls: log-mel and mask per CHANNELS entry, (2, n_mels, audio_frames) / (2, audio_frames)
    channel_mel: np.ndarray | None = None
    channel_mask: np.ndarray | None = None

    @property
    def present(self) -> dict[str, bool]:
        return {"frames": len(self.frames) > 0, "audio": bool(self.audio_mask.any()), "logs": self.log_present}


@dataclass
class WindowBatch:
    """Tensors for B windows. Masks are True where data is real."""

    frames: "Any"  # (B, T_f, 3, H, W) float32 in [0, 1], or its uint8 bytes (`collate(..., float_frames=False)`)
    frame_mask: "Any"  # (B, T_f) bool
    frame_times: "Any"  # (B, T_f) float32, fraction of the window
    mel: "Any"  # (B, n_mels, T_a) float32 log-mel
    audio_mask: "Any"  # (B, T_a) bool
    log_emb: "Any"  # (B, L, 384) float32
    log_levels: "Any"  # (B, L) int64
    log_code_state: "Any"  # (B, L) int64: CODE_NONE / CODE_KNOWN / CODE_UNKNOWN
    log_times: "Any"  # (B, L) float32, fraction of the window
    log_mask: "Any"  # (B, L) bool
    log_count: "Any"  # (B,) float32, all lines in the window
    log_present: "Any"  # (B,) bool
    # (B, T_f, H, W, 3) uint8: the bytes behind `frames`, where the batch was made from them (the
    # frame memo hashes these, a quarter of the float32 pixels); None after `to` another device
    frame_pixels: "Any" = None
    log_speakers: "Any" = None  # (B, L) int64 SPEAKERS ids; None: unknown
    channel_mel: "Any" = None  # (B, 2, n_mels, T_a) per CHANNELS entry; None: no stereo window in the batch
    channel_mask: "Any" = None  # (B, 2, T_a) bool

    def to(self, device) -> "WindowBatch":
        moved = {k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()
                 if k != "frame_pixels" and v is not None}
        return WindowBatch(**moved, frame_pixels=self.frame_pixels if self.frames.device == moved["frames"].device else None)

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    def present(self):
        """(B, 3) bool: frames, audio, logs present."""
        import torch

        return torch.stack([self.frame_mask.any(1), self.audio_mask.any(1), self.log_present], dim=1)


class Featurizer:
    def __init__(self, cfg: FeatureConfig = FeatureConfig(), text: TextEncoder | None = None):
        self.cfg = cfg
        self._text = text
        self._mel: tuple[Spectrogram, MelScale] | None = None  # built on the first audio (`_log_mel`)

    @property
    def text(self) -> TextEncoder:
        if self._text is None:
            from models.text import shared_text_encoder

            self._text = shared_text_encoder()
        return self._text

    def featurize_many(self, windows: Sequence[WindowInputs]) -> list[WindowFeatures]:
        """Batch the text encoder across windows (one call for all new lines)."""
        kept = [self._pick_lines(w) for w in windows]
        flat = [p.msg for lines in kept for _, p in lines]
        emb = self.text.embed(flat) if flat else np.zeros((0, EMBED_DIM), np.float32)
        mels = self._log_mel([self._canvas(w) for w in windows])
        stereo = [i for i, w in enumerate(windows) if w.channels]
        channel_mels = self._log_mel([self._canvas(windows[i], windows[i].channels.get(c, []))
                                      for i in stereo for c in CHANNELS])
        per_window = {i: channel_mels[2 * j: 2 * j + 2] for j, i in enumerate(stereo)}
        out, pos = [], 0
        for i, (w, lines, mel) in enumerate(zip(windows, kept, mels)):
            f = self._featurize(w, lines, emb[pos:pos + len(lines)], mel)
            if i in per_window:
                f.channel_mel = np.stack([m for m, _ in per_window[i]])
                f.channel_mask = np.stack([k for _, k in per_window[i]])
            out.append(f)
            pos += len(lines)
        return out

    def featurize(self, window: WindowInputs) -> WindowFeatures:
        return self.featurize_many([window])[0]

    # ── per modality ──────────────────────────────────────────────────────────────────────
    def _pick_lines(self, w: WindowInputs) -> list:
        lines = sorted(w.logs, key=lambda x: x[0])
        if len(lines) <= self.cfg.max_lines:
            return lines
        keep = np.linspace(0, len(lines) - 1, self.cfg.max_lines).round().astype(int)
        return [lines[i] for i in keep]

    def _featurize(self, w: WindowInputs, lines: list, emb: np.ndarray, mel_mask) -> WindowFeatures:
        frames, frame_times = self._frames(w)
        mel, audio_mask = mel_mask
        present_other = len(frames) > 0 or bool(audio_mask.any())
        serials = []
        for _, p in w.logs:
            if p.serial and p.serial not in serials:
                serials.append(p.serial)
        return WindowFeatures(
            asset=w.asset, start=w.start, end=w.end, frames=frames, frame_times=frame_times, mel=mel,
            audio_mask=audio_mask, log_emb=emb.astype(np.float32),
            log_times=np.array([t - w.start for t, _ in lines], np.float32),
            log_levels=np.array([LEVELS.get((p.level or "").lower(), N_LEVELS - 1) for _, p in lines], np.int64),
            log_codes=[p.code for _, p in lines], log_text=[p.msg for _, p in lines],
            log_count=len(w.logs), log_present=bool(w.logs) or present_other, serials=serials,
            log_speakers=np.array([speaker_id(p.speaker) for _, p in lines], np.int64),
        )

    def _frames(self, w: WindowInputs) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        items = sorted(w.frames, key=lambda x: x[0])
        if len(items) > cfg.max_frames:
            keep = np.linspace(0, len(items) - 1, cfg.max_frames).round().astype(int)
            items = [items[i] for i in keep]
        shape = (cfg.frame_height, cfg.frame_width, 3)
        arrays = []
        for _, img in items:
            if img.shape != shape:  # a monitor decoding to another size: fix it here, not silently in the model
                from PIL import Image

                img = np.asarray(Image.fromarray(img).convert("RGB").resize(cfg.frame_size, Image.Resampling.BILINEAR))
            arrays.append(img)
        frames = np.stack(arrays).astype(np.uint8) if arrays else np.zeros((0, *shape), np.uint8)
        return frames, np.array([t - w.start for t, _ in items], np.float32)

    def _canvas(self, w: WindowInputs, chunks: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Audio chunks (default: the window's mono `audio`) laid on a window-long canvas by start
        time; (samples, covered)."""
        import torch

        cfg = self.cfg
        n = cfg.audio_samples
        canvas = np.zeros(n, np.float32)
        covered = np.zeros(n, bool)
        for t, samples in (w.audio if chunks is None else chunks):
            if w.sample_rate != cfg.sample_rate:
                import torchaudio.functional as AF

                samples = AF.resample(torch.from_numpy(np.asarray(samples, np.float32)), w.sample_rate, cfg.sample_rate).numpy()
            off = int(round((t - w.start) * cfg.sample_rate))
            lo, hi = max(off, 0), min(off + len(samples), n)
            if hi > lo:
                canvas[lo:hi] = samples[lo - off:hi - off]
                covered[lo:hi] = True
        return canvas, covered

    def _log_mel(self, canvases: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batched log-mel (natural log) and per-frame masks; all-masked zeros without audio."""
        import torch

        cfg = self.cfg
        out: list = [(np.zeros((cfg.n_mels, cfg.audio_frames), np.float32), np.zeros(cfg.audio_frames, bool))] * len(canvases)
        todo = [i for i, (_, cov) in enumerate(canvases) if cov.any()]
        if not todo:
            return out
        if self._mel is None:
            import torchaudio

            # torchaudio's MelSpectrogram in two parts: its power step (|z| ** 2, a complex abs
            # then a square) took longer than the FFT itself; re² + im² halves the whole log-mel
            self._mel = (torchaudio.transforms.Spectrogram(n_fft=cfg.n_fft, hop_length=cfg.hop_length, power=None, center=True),
                         torchaudio.transforms.MelScale(n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, f_min=cfg.f_min,
                                                        f_max=cfg.f_max, n_stft=cfg.n_fft // 2 + 1))
        spectrogram, mel_scale = self._mel
        with torch.inference_mode():
            wave = torch.from_numpy(np.stack([canvases[i][0] for i in todo]))
            z = spectrogram(wave)  # (b, n_fft/2 + 1, T) complex
            mel = mel_scale(z.real.square() + z.imag.square())[:, :, : cfg.audio_frames]  # (b, n_mels, T_a)
            logmel = torch.log(mel + 1e-6).numpy().astype(np.float32)
        # a mel frame is real when most of the samples under its centre hop were received
        h = cfg.hop_length
        centres = np.arange(cfg.audio_frames) * h
        lo, hi = np.clip(centres - h // 2, 0, cfg.audio_samples), np.clip(centres + h // 2, 0, cfg.audio_samples)
        covered = np.stack([canvases[i][1] for i in todo])  # (b, samples)
        csum = np.zeros((len(todo), covered.shape[1] + 1), np.int32)
        np.cumsum(covered, axis=1, dtype=np.int32, out=csum[:, 1:])
        masks = (csum[:, hi] - csum[:, lo]) >= 0.5 * (hi - lo)  # (b, audio_frames)
        out = list(out)
        for j, i in enumerate(todo):
            out[i] = (logmel[j], masks[j])
        return out


def collate(items: Sequence[WindowFeatures], cfg: FeatureConfig, code_vocab: set[str] | frozenset[str] = frozenset(),
            float_frames: bool = True) -> WindowBatch:
    """Stack features into padded tensors with masks. `code_vocab`: log codes seen in training.
    `float_frames=False` leaves the frames uint8 (a view of `frame_pixels`): the model converts
    them (`models.fusion.float_frames`), and with a frame memo only the frames it has not seen."""
    import torch

    B, T, L = len(items), cfg.max_frames, cfg.max_lines
    frames = np.zeros((B, T, cfg.frame_height, cfg.frame_width, 3), np.uint8)
    frame_mask = np.zeros((B, T), bool)
    frame_times = np.zeros((B, T), np.float32)
    mel = np.zeros((B, cfg.n_mels, cfg.audio_frames), np.float32)
    audio_mask = np.zeros((B, cfg.audio_frames), bool)
    log_emb = np.zeros((B, L, EMBED_DIM), np.float32)
    log_levels = np.full((B, L), N_LEVELS - 1, np.int64)
    log_state = np.zeros((B, L), np.int64)
    log_times = np.zeros((B, L), np.float32)
    log_mask = np.zeros((B, L), bool)
    log_count = np.zeros(B, np.float32)
    log_present = np.zeros(B, bool)
    log_speakers = np.zeros((B, L), np.int64)
    stereo = any(f.channel_mel is not None for f in items)
    channel_mel = np.zeros((B, len(CHANNELS), cfg.n_mels, cfg.audio_frames), np.float32) if stereo else None
    channel_mask = np.zeros((B, len(CHANNELS), cfg.audio_frames), bool) if stereo else None
    for i, f in enumerate(items):
        log_speakers[i, :len(f.log_speakers)] = f.log_speakers
        if f.channel_mel is not None:
            assert channel_mel is not None and channel_mask is not None, "allocated when any window is stereo"
            channel_mel[i], channel_mask[i] = f.channel_mel, f.channel_mask
        nf, nl = len(f.frames), len(f.log_text)
        frames[i, :nf] = f.frames
        frame_mask[i, :nf] = True
        frame_times[i, :nf] = f.frame_times / cfg.window_s
        mel[i] = f.mel
        audio_mask[i] = f.audio_mask
        log_emb[i, :nl] = f.log_emb
        log_levels[i, :nl] = f.log_levels
        log_state[i, :nl] = [CODE_NONE if not c else CODE_KNOWN if c in code_vocab else CODE_UNKNOWN for c in f.log_codes]
        log_times[i, :nl] = f.log_times / cfg.window_s
        log_mask[i, :nl] = True
        log_count[i] = f.log_count
        log_present[i] = f.log_present
    t = torch.from_numpy
    return WindowBatch(
        frames=t(frames).permute(0, 1, 4, 2, 3).float().div_(255.0) if float_frames else t(frames).permute(0, 1, 4, 2, 3),
        frame_pixels=t(frames),
        frame_mask=t(frame_mask), frame_times=t(frame_times),
        mel=t(mel), audio_mask=t(audio_mask), log_emb=t(log_emb), log_levels=t(log_levels), log_code_state=t(log_state),
        log_times=t(log_times), log_mask=t(log_mask), log_count=t(log_count), log_present=t(log_present),
        log_speakers=t(log_speakers), channel_mel=t(channel_mel) if stereo else None,
        channel_mask=t(channel_mask) if stereo else None,
    )


