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
    baseline: str = "watching"
    judged: bool = True
    guard: float = 1.0
    speech_s: dict[str, float] | None = None


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


@dataclass
class _Phase:
    phase: str = "watching"
    judged: bool = True
    seen: int = 0


class PoisonableScorer(BrightnessScorer):
    """BrightnessScorer with a per-asset stream state (a running mean of its scores, committed with
    the monitor's state like the real scorer's adaptation), and two ways to go wrong on purpose, as
    an overflowing model statistic would: a window holding the log line "poison: nan score" scores
    NaN; one holding "poison: nan state" turns the asset's running mean into NaN, and from then on
    every window of that asset scores NaN — until the monitor rolls the state back."""

    version = "poisonable-test-1"

    def __init__(self, threshold: float = 0.5):
        super().__init__(threshold)
        self._state: dict[str, dict] = {}

    def score(self, windows):
        out = super().score(windows)
        for w, s in zip(windows, out):
            lines = {p.msg for _, p in w.logs}
            st = self._state.setdefault(w.asset, {"mean": 0.0, "n": 0})
            if "poison: nan state" in lines:
                st["mean"] = float("nan")
            if "poison: nan score" in lines or st["mean"] != st["mean"]:
                s.score = s.raw = float("nan")
            else:
                st["n"] += 1
                st["mean"] += (s.score - st["mean"]) / st["n"]
        return out

    def stream_state(self, asset: str) -> dict:
        return {"adaptation": dict(self._state.get(asset, {"mean": 0.0, "n": 0}))}

    def restore_stream(self, asset: str, state: dict) -> None:
        if isinstance(state.get("adaptation"), dict):
            self._state[asset] = dict(state["adaptation"])

    def forget_stream(self, asset: str) -> None:
        self._state.pop(asset, None)

    def rebaseline(self, asset: str) -> None:  # a "new normal": the running mean starts again
        self._state.pop(asset, None)

    def adaptation(self, asset: str) -> dict[str, float]:
        return {}

    def baseline_phase(self, asset: str) -> _Phase:
        return _Phase(seen=self._state.get(asset, {}).get("n", 0))


class BaselineScorer(BrightnessScorer):
    """Brightness as one score component's surprise (10 x mean brightness: dark 1.6, level 160 6.3,
    bright 8.6) through the model's own per-asset baseline (models/adaptation.py), with its
    learning phase and guard threshold: what the monitor does with learning and "new normal" can
    be tested against a known answer."""

    version = "baseline-test-1"

    def __init__(self, threshold: float = 5.0, learn_windows: int = 20, judge_after: int = 5, guard: float = 2.0):
        from models.adaptation import BaselineConfig, SurpriseAdapter

        super().__init__(threshold)
        self.adapter = SurpriseAdapter(BaselineConfig(step=0.01, learn_windows=learn_windows, judge_after=judge_after))
        self.guard = guard

    def score(self, windows):
        out = super().score(windows)
        for w, s in sorted(zip(windows, out), key=lambda p: p[0].start):
            ph = self.adapter.phase(w.asset)
            surprise = np.array([10.0 * s.raw])
            s.score = float(self.adapter.adapt(w.asset, surprise, np.array([bool(w.frames)]))[0])
            s.guard = self.guard if ph.phase == "learning" else 1.0
            s.threshold, s.baseline, s.judged = self._threshold * s.guard, ph.phase, ph.judged
        return out

    def stream_state(self, asset: str) -> dict:
        return {"adaptation": self.adapter.state(asset)}

    def restore_stream(self, asset: str, state: dict) -> None:
        self.adapter.restore(asset, state.get("adaptation", {}))

    def forget_stream(self, asset: str) -> None:
        self.adapter.forget(asset)

    def rebaseline(self, asset: str) -> None:
        self.adapter.forget(asset)

    def adaptation(self, asset: str) -> dict[str, float]:
        off = self.adapter.offset(asset)
        return {} if off is None else {"frames": float(off[0])}

    def baseline_phase(self, asset: str):
        return self.adapter.phase(asset)
