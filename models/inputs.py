"""What the model sees of one window of one asset: decoded media, already small.

The monitor (from Kafka) and the training/eval datasets (from the simulator or recordings) both
build these with the same aligner, so the model is trained on exactly what it will score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.envelope import LogPayload


@dataclass
class WindowInputs:
    asset: str
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (capture time, (H, W, 3) uint8)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (chunk start, (N,) float32 mono)
    logs: list[tuple[float, LogPayload]] = field(default_factory=list)  # (time, parsed line)
    sample_rate: int = 16_000
    # per-speaker channels of a stereo call ("agent", "customer"), each as `audio` is; `audio` then
    # holds their mix. Empty for mono sources (every factory stream, a mono call)
    channels: dict[str, list[tuple[float, np.ndarray]]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.end - self.start
