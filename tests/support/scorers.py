"""A transparent scorer for testing the monitor's mechanics (exactly-once, rebalance, DLQ)
independently of the learned model: score = mean frame brightness. The learned model is tested
end to end elsewhere; this lets a test know exactly which windows must become events."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.envelope import DecodeOptions


@dataclass
class BrightnessScore:
    score: float
    threshold: float
    raw: float
    present: dict[str, bool]
    modality_shares: dict[str, float] = field(default_factory=lambda: {"frames": 1.0})
    cross_modal_share: float = 0.0
    top_frame_times: list[float] = field(default_factory=list)
    frame_region: tuple[float, float, float, float] | None = None
    audio_band_hz: tuple[float, float] | None = None
    top_log_lines: list[str] = field(default_factory=list)
    log_codes: list[str] = field(default_factory=list)
    kind: str | None = None
    sentiment: dict | None = None
    frustration: float | None = None


class BrightnessScorer:
    version = "brightness-test-1"
    decode_options = DecodeOptions(frame_size=(16, 12))

    def __init__(self, threshold: float = 0.5):
        self._threshold = threshold

    def threshold(self, asset: str) -> float:
        return self._threshold

    def score(self, windows):
        out = []
        for w in windows:
            values = [float(img.mean()) / 255.0 for _, img in w.frames]
            s = float(np.mean(values)) if values else 0.0
            top = [t for t, img in sorted(w.frames, key=lambda f: -f[1].mean())[:2]]
            out.append(BrightnessScore(s, self._threshold, s, {"frames": bool(w.frames), "audio": bool(w.audio),
                                                                  "logs": bool(w.logs)}, top_frame_times=top))
        return out
