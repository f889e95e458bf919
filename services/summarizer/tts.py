"""Offline text-to-speech for the narration: espeak-ng, no network, no model download.

Where it sits: between the narrator (sentences) and the renderer (the audio track).

Route: the `espeakng-loader` wheel (a pinned dependency) ships `libespeak-ng.so` and its voice
data; we call the library directly through ctypes in synchronous mode, one sentence at a time,
so every sentence's exact length is known (that is what times the subtitle cues). When the wheel's
library cannot be loaded (another platform), Debian's `espeak-ng` binary is the fallback route
(`--stdout` gives a WAV). espeak-ng keeps global state, so one lock serialises all synthesis in a
process; a sentence takes milliseconds, far below the render itself.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from schemas.errors import DependencyUnavailable

log = logging.getLogger(__name__)

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / flags from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1
_ESPEAK_VOLUME, _ESPEAK_PITCH, _ESPEAK_RANGE = 2, 3, 4  # espeak_PARAMETER: defaults 100, 50, 50
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Speech:
    """Synthesised sentences, each as its own float32 mono array at `sample_rate`."""

    sample_rate: int
    sentences: tuple[str, ...]
    clips: tuple[np.ndarray, ...]

    def durations(self) -> list[float]:
        return [len(c) / self.sample_rate for c in self.clips]


class _LibEspeak:
    """libespeak-ng through ctypes (process-wide singleton: the library is not re-entrant)."""

    _instance: "_LibEspeak | None" = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                      espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise OSError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: ctypes must not collect it
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()
        self._voice: tuple[str, int] | None = None

    @classmethod
    def get(cls) -> "_LibEspeak":
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, count, _events) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: str, wpm: int) -> np.ndarray:
        from services.espeak import ESPEAK_LOCK

        with self.lock, ESPEAK_LOCK:
            # the engine is global (services/espeak.py): re-install our callback, voice and parameters
            self.lib.espeak_SetSynthCallback(self._callback)
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}; try 'en-us' or 'en'")
            for param, value in ((_ESPEAK_RATE, int(wpm)), (_ESPEAK_VOLUME, 100), (_ESPEAK_PITCH, 50), (_ESPEAK_RANGE, 50)):
                self.lib.espeak_SetParameter(param, value, 0)
            self._voice = (voice, wpm)
            self._chunks = []
            data = text.encode("utf-8")
            rc = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if rc != 0:
                raise RuntimeError(f"espeak_Synth returned {rc}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


def _binary_synth(binary: str) -> Callable[[str, str, int], tuple[np.ndarray, int]]:
    def synth(text: str, voice: str, wpm: int) -> tuple[np.ndarray, int]:
        import tempfile
        import wave

        # -w writes a complete WAV (the --stdout stream has no final sizes in its header)
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run([binary, "-v", voice, "-s", str(wpm), "-w", tmp.name, "--", text], capture_output=True,
                           timeout=60, check=True)
            with wave.open(tmp.name, "rb") as w:
                rate, channels = w.getframerate(), w.getnchannels()
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, channels)
        return pcm[:, 0].astype(np.float32) / 32768.0, rate

    return synth


class Speaker:
    """`Speaker(voice, wpm).speak(sentences) -> Speech`, through whichever espeak-ng route works."""

    def __init__(self, voice: str = "en-us", wpm: int = 185, route: str = "auto"):
        self.voice, self.wpm = voice, wpm
        self.route = ""
        self._lib: _LibEspeak | None = None
        self._bin = None
        if route in ("auto", "library"):
            try:
                self._lib = _LibEspeak.get()
                self.route = "library"
            except Exception as e:  # wheel missing or library not loadable on this platform
                if route == "library":
                    raise DependencyUnavailable(f"espeak-ng library from espeakng-loader did not load ({e}); "
                                                "reinstall with `pip install espeakng-loader`") from None
                log.warning("espeak-ng library did not load (%s); trying the espeak-ng binary", e)
        if not self.route:
            binary = shutil.which("espeak-ng")
            if binary is None:
                raise DependencyUnavailable("no offline TTS: install the espeakng-loader wheel (pip) or Debian's "
                                            "espeak-ng (`apt-get install espeak-ng`)")
            self._bin = _binary_synth(binary)
            self.route = "binary"

    @property
    def sample_rate(self) -> int:
        if self._lib is not None:
            return self._lib.sample_rate
        return 22050

    def speak(self, sentences: Sequence[str]) -> Speech:
        clips = []
        for sentence in sentences:
            if self._lib is not None:
                clip = self._lib.synth(sentence, self.voice, self.wpm)
                rate = self._lib.sample_rate
            else:
                clip, rate = self._bin(sentence, self.voice, self.wpm)  # type: ignore[misc]
                if rate != self.sample_rate:
                    clip = _resample(clip, rate, self.sample_rate)
            clips.append(_trim(clip))
        return Speech(self.sample_rate, tuple(sentences), tuple(clips))


def _trim(clip: np.ndarray, floor: float = 0.003) -> np.ndarray:
    """Drop leading/trailing near-silence so cue times match the voice."""
    loud = np.flatnonzero(np.abs(clip) > floor)
    if len(loud) == 0:
        return clip.astype(np.float32)
    return clip[max(0, loud[0] - 200): loud[-1] + 400].astype(np.float32)


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    from services.summarizer.evidence import resample

    return resample(samples, rate, target)
