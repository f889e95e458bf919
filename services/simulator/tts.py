"""Offline speech synthesis for the call-centre simulator: eSpeak NG with a tone of voice.

The engine is services/speech.py (no network, no model download). Tone is varied the way
people's voices change when they get angry — faster, louder, higher and with a wider pitch
range — plus a post-processing "harshness" (soft clipping and
pre-emphasis, the pressed voice quality of shouting). Output is a telephone-band (300–3400 Hz)
mono float32 signal at the requested rate.

Synthesis is cached per (text, voice, tone), so templated scripts cost little after warm-up.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from services.speech import Voice, engine

_LOCK = threading.Lock()
_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_CACHE_MAX = 256  # utterances (~100-300 KB each): templated agent lines repeat, slot-filled ones rarely


@dataclass(frozen=True)
class Tone:
    """How something is said. Defaults are a calm speaker."""

    rate_wpm: int = 165  # eSpeak 80..450
    pitch: int = 50  # 0..100
    pitch_range: int = 50  # 0..100, monotone..lively
    volume: int = 100  # 0..200
    harshness: float = 0.0  # 0..1: soft clipping + pre-emphasis (pressed, shouted voice)

    @classmethod
    def for_anger(cls, anger: float, base_pitch: int = 50, base_rate: int = 165) -> "Tone":
        a = float(np.clip(anger, 0.0, 1.0))
        return cls(rate_wpm=int(base_rate + 55 * a), pitch=int(min(95, base_pitch + 25 * a)),
                   pitch_range=int(50 + 40 * a), volume=int(95 + 85 * a), harshness=a)


def _synth(text: str, voice: str, tone: Tone) -> tuple[np.ndarray, int]:
    spoken = Voice(voice, tone.rate_wpm, tone.pitch, tone.pitch_range, tone.volume)
    try:
        return engine().synth(text, spoken)
    except ValueError:  # a voice this eSpeak lacks: its plain English one
        return engine().synth(text, dataclasses.replace(spoken, name="en"))


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited resampling by FFT (speech snippets are short; no extra dependency)."""
    if src == dst or len(x) == 0:
        return x
    n_out = int(round(len(x) * dst / src))
    spec = np.fft.rfft(x)
    keep = n_out // 2 + 1
    spec = spec[:keep] if len(spec) >= keep else np.pad(spec, (0, keep - len(spec)))
    return (np.fft.irfft(spec, n_out) * (n_out / len(x))).astype(np.float32)


def _telephone(x: np.ndarray, sr: int, harshness: float) -> np.ndarray:
    if harshness > 0:
        drive = 1.0 + 5.0 * harshness
        x = np.tanh(drive * x * 1.5) / np.tanh(drive * 1.5)  # pressed voice: clipped, rich in harmonics
        x = np.append(x[:1], x[1:] - 0.5 * harshness * x[:-1])  # brighter spectrum
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    spec *= (f >= 300) & (f <= 3400)
    return np.fft.irfft(spec, len(x)).astype(np.float32)


def speak(text: str, voice: str = "en-us", tone: Tone = Tone(), sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 speech at `sample_rate`, telephone band, cached."""
    key = (text, voice, tone, sample_rate)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
        raw, rate = _synth(text, voice, tone)
    out = _telephone(_resample(raw, rate, sample_rate), sample_rate, tone.harshness)
    out.setflags(write=False)
    with _LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return out
