"""Offline text-to-speech for the narration: espeak-ng, no network, no model download.

Where it sits: between the narrator (sentences) and the renderer (the audio track).

The engine is services/speech.py, one sentence at a time, so every sentence's exact length is
known (that is what times the subtitle cues); a sentence takes milliseconds, far below the render.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from services.speech import Voice, engine


@dataclass(frozen=True)
class Speech:
    """Synthesised sentences, each as its own float32 mono array at `sample_rate`."""

    sample_rate: int
    sentences: tuple[str, ...]
    clips: tuple[np.ndarray, ...]

    def durations(self) -> list[float]:
        return [len(c) / self.sample_rate for c in self.clips]


class Speaker:
    """`Speaker(voice, wpm).speak(sentences) -> Speech`, through whichever espeak-ng route works."""

    def __init__(self, voice: str = "en-us", wpm: int = 185, route: str = "auto"):
        self.voice = Voice(voice, rate_wpm=wpm)
        self.engine = engine(route)
        self.route = self.engine.route

    @property
    def sample_rate(self) -> int:
        return self.engine.rate

    def speak(self, sentences: Sequence[str]) -> Speech:
        clips = []
        for sentence in sentences:
            clip, rate = self.engine.synth(sentence, self.voice)
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
