"""eSpeak NG, the one offline speech engine: the simulator's callers and the summarizer's narrator.

Route: the `espeakng-loader` wheel (a pinned dependency) ships `libespeak-ng.so` and its voice
data; it is called through ctypes in synchronous mode, one utterance at a time, so each one's
exact length is known. When that library cannot be loaded (another platform), Debian's
`espeak-ng` program is the fallback (`-w` writes a complete WAV).

libespeak-ng is one process-wide engine: its synth callback, voice and parameters are global, and
the simulator and the summarizer may share a process (`fusionwatch up`, the tests). So there is
one engine object per process, and each synthesis holds its lock and sets every parameter first.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from schemas.errors import DependencyUnavailable

# from speak_lib.h: espeak_AUDIO_OUTPUT, espeak_PARAMETER, position type and text flags
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    """Which voice and how it speaks (eSpeak's own ranges)."""

    name: str = "en-us"
    rate_wpm: int = 165  # 80..450
    pitch: int = 50  # 0..100
    pitch_range: int = 50  # 0..100, monotone..lively
    volume: int = 100  # 0..200


class Engine(Protocol):
    route: str
    rate: int  # the engine's own sample rate

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        """(mono float32 samples in [-1, 1], sample rate); ValueError for an unknown voice."""
        ...


class _Library:
    route = "library"

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise OSError(f"espeak_Initialize failed ({self.rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: ctypes must not collect it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, count, _events) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice.name!r}; try 'en-us' or 'en'")
        for param, value in ((_RATE, voice.rate_wpm), (_VOLUME, voice.volume), (_PITCH, voice.pitch),
                             (_RANGE, voice.pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode("utf-8")
        rc = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if rc != 0:
            raise RuntimeError(f"espeak_Synth returned {rc}")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0, self.rate


class _Program:
    route = "binary"
    rate = 22050  # what espeak-ng writes

    def __init__(self) -> None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise OSError("espeak-ng is not on PATH")
        self.exe = exe

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            done = subprocess.run([self.exe, "-v", voice.name, "-s", str(voice.rate_wpm), "-p", str(voice.pitch),
                                   "-a", str(voice.volume), "-w", tmp.name, "--", text], capture_output=True, timeout=60)
            if done.returncode != 0:
                raise ValueError(f"espeak-ng failed for voice {voice.name!r}: {done.stderr.decode(errors='replace')[:200]}")
            with wave.open(tmp.name, "rb") as w:
                rate, channels = w.getframerate(), w.getnchannels()
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, channels)
        return pcm[:, 0].astype(np.float32) / 32768.0, rate


class _Locked:
    """An engine behind the process's one speech lock (libespeak-ng is global and not re-entrant)."""

    def __init__(self, engine: _Library | _Program):
        self._engine, self.route, self.rate = engine, engine.route, engine.rate

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        with _LOCK:
            return self._engine.synth(text, voice)


_LOCK = threading.Lock()
_ENGINES: dict[type, _Locked] = {}  # one per route: the library is initialised once per process
_FAILED: dict[type, str] = {}  # routes that did not load, and why (not retried)


def engine(route: str = "auto") -> Engine:
    """The process's speech engine: "library" (the wheel's libespeak-ng), "binary" (Debian's
    espeak-ng) or "auto" (the library, else the program)."""
    kinds = {"auto": (_Library, _Program), "library": (_Library,), "binary": (_Program,)}.get(route)
    if kinds is None:
        raise ValueError(f"route must be auto, library or binary, not {route!r}")
    errors = []
    with _LOCK:
        for kind in kinds:
            if kind not in _ENGINES and kind not in _FAILED:
                try:
                    _ENGINES[kind] = _Locked(kind())
                except Exception as e:  # noqa: BLE001 - try the next route, report all of them
                    _FAILED[kind] = str(e)
            if kind in _ENGINES:
                return _ENGINES[kind]
            errors.append(f"{kind.route}: {_FAILED[kind]}")
    raise DependencyUnavailable("no offline speech engine: install the espeakng-loader wheel (`make venv`) "
                                "or Debian's espeak-ng (`apt-get install espeak-ng`); " + "; ".join(errors))
