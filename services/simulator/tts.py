"""Offline speech synthesis for the call-centre simulator: eSpeak NG with a tone of voice.

Uses the libespeak-ng and voice data shipped in the `espeakng-loader` wheel through ctypes (no
network, no system package); falls back to the Debian `espeak-ng` command when the library cannot
be loaded. Tone is varied the way people's voices change when they get angry — faster, louder,
higher and with a wider pitch range — plus a post-processing "harshness" (soft clipping and
pre-emphasis, the pressed voice quality of shouting). Output is a telephone-band (300–3400 Hz)
mono float32 signal at the requested rate.

Synthesis is cached per (text, voice, tone), so templated scripts cost little after warm-up.
eSpeak keeps global state: one lock serialises all calls in the process.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from schemas.errors import DependencyUnavailable

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4  # espeak_PARAMETER
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


class _Espeak:
    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise OSError("espeak_Initialize failed")
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def _on_audio(wav, n, _events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = proto(_on_audio)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    def synth(self, text: str, voice: str, tone: Tone) -> np.ndarray:
        from services.espeak import ESPEAK_LOCK

        with ESPEAK_LOCK:  # one global engine: re-install our callback and parameters (services/espeak.py)
            self.lib.espeak_SetSynthCallback(self._callback)
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                self.lib.espeak_SetVoiceByName(b"en")
            for param, value in ((_RATE, tone.rate_wpm), (_VOLUME, tone.volume), (_PITCH, tone.pitch), (_RANGE, tone.pitch_range)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            self.lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None)
            self.lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


class _EspeakCli:
    """The Debian `espeak-ng` program (Makefile sysdeps installs it)."""

    def __init__(self) -> None:
        self.exe = shutil.which("espeak-ng")
        if not self.exe:
            raise OSError("espeak-ng not on PATH")
        self.rate = 22050

    def synth(self, text: str, voice: str, tone: Tone) -> np.ndarray:
        from schemas.envelope import parse_wav

        out = subprocess.run([self.exe, "--stdout", "-v", voice, "-s", str(tone.rate_wpm), "-p", str(tone.pitch),
                              "-a", str(tone.volume), text], capture_output=True, check=True, timeout=30).stdout
        # espeak-ng writes a streaming WAV whose RIFF sizes are 0xFFFFFFFF; patch the data size
        pos = out.find(b"data")
        fixed = out[:pos + 4] + (len(out) - pos - 8).to_bytes(4, "little") + out[pos + 8:]
        samples, rate, _ = parse_wav(fixed)
        self.rate = rate
        return samples[:, 0]


_ENGINE: _Espeak | _EspeakCli | None = None


def _engine() -> _Espeak | _EspeakCli:
    global _ENGINE
    if _ENGINE is None:
        errors = []
        for cls in (_Espeak, _EspeakCli):
            try:
                _ENGINE = cls()
                break
            except Exception as e:  # try the next route
                errors.append(f"{cls.__name__}: {e}")
        else:
            raise DependencyUnavailable("no speech synthesiser: install the espeakng-loader wheel (`make venv`) "
                                        "or Debian's espeak-ng (`make sysdeps`); " + "; ".join(errors))
    return _ENGINE


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
        engine = _engine()
        raw = engine.synth(text, voice, tone)
        rate = engine.rate
    out = _telephone(_resample(raw, rate, sample_rate), sample_rate, tone.harshness)
    out.setflags(write=False)
    with _LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return out
