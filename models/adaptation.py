"""Each station's own normal: an explicit learning phase, then a baseline that follows slow drift.

Where it sits: between the component tails (`FusionModel.tails`: each score component turned into
surprise, -log P_normal) and their combination (`combine_components`) — in the scorer (streaming,
`SurpriseAdapter`) and in every table that calibration and `fusionwatch eval` combine
(`adapt_table`, called by `FusionModel.combine_arrays`), so the monitor scores exactly what was
calibrated and evaluated.

Why: the tails are fitted on the calibration stations. A station the model has not seen (another
lamp, another microphone mounting, a replaced pump) has some component's surprise high all the
time; without a baseline of its own that is an alarm that never ends. Under normal operation a
component's surprise is Exp(1) by construction: median log 2, interquartile range log 3.

Rule, per asset, in window order:
- **learning** (the first `learn_windows` windows): every window's surprise goes into a buffer;
  from `judge_after` windows on, each component is re-centred on the buffer's exact median and
  re-scaled by its interquartile range (below); before that nothing is judged. The monitor lets
  only a guard threshold open an event while an asset learns (`learning_guard` × the threshold).
- **watching**: the median and spread are fixed from the buffer; the median then follows slow
  change by sign steps of `step` nats per window (the stochastic-approximation median, Robbins and
  Monro 1951), so a fault of L windows moves it by at most `step` × L.
A component's surprise s becomes log 2 + (s − log 2 − offset) / spread above the baseline's median
and s − offset below it, where offset = max(median − log 2, 0) and spread = IQR / log 3 clipped
to [1, `max_spread`]: a quiet station is never made louder nor sharper. Masked components are
neither adapted nor learned from. An operator's "new normal" (`forget`) starts learning again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

NORMAL_MEDIAN = math.log(2.0)  # median of Exp(1): the surprise of normal operation
NORMAL_IQR = math.log(3.0)  # its interquartile range
MAX_SPREAD = 3.0  # a station may be found at most 3x noisier than the calibration stations

Phase = Literal["learning", "watching"]


@dataclass(frozen=True)
class BaselineConfig:
    step: float = 0.01  # nats per window the watching median moves; 0 turns all adaptation off
    learn_windows: int = 120  # windows of the asset's own operation its baseline is learned from
    judge_after: int = 20  # windows before any window of a new baseline is judged at all

    def __post_init__(self) -> None:
        if self.step < 0 or self.learn_windows < 0 or self.judge_after < 0:
            raise ValueError("adapt_step, learn_windows and judge_after must be >= 0 (adapt_step 0: no adaptation)")
        if self.judge_after > self.learn_windows:
            raise ValueError("judge_after must not exceed learn_windows")

    @property
    def enabled(self) -> bool:
        return self.step > 0


@dataclass(frozen=True)
class WindowPhase:
    phase: Phase
    judged: bool  # False: too few of the asset's windows seen to judge this one
    seen: int  # the asset's windows before this one (since its last new baseline)


class _AssetBaseline:
    """One asset's baseline: the learning buffer, then the median and spread it gave."""

    def __init__(self, n: int):
        self.seen = 0
        self.buffer: list[np.ndarray] = []  # learning: one (C,) row per window, NaN where masked
        self.median = np.full(n, NORMAL_MEDIAN)
        self.spread = np.ones(n)

    def fit_buffer(self, min_rows: int) -> None:
        """Median and spread from the buffer, per component with at least `min_rows` values."""
        rows = np.asarray(self.buffer, dtype=np.float64)  # (k, C)
        have = np.isfinite(rows).sum(0) >= max(min_rows, 1)
        if not have.any():
            return
        q25, q50, q75 = np.nanquantile(rows[:, have], [0.25, 0.5, 0.75], axis=0)
        self.median[have] = q50
        self.spread[have] = np.clip((q75 - q25) / NORMAL_IQR, 1.0, MAX_SPREAD)


class SurpriseAdapter:
    """Streaming per-asset baselines; `adapt` one window at a time, in each asset's window order."""

    def __init__(self, cfg: BaselineConfig):
        self.cfg = cfg
        self._assets: dict[str, _AssetBaseline] = {}

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def phase(self, asset: str) -> WindowPhase:
        """The phase the asset's next window is scored in."""
        b = self._assets.get(asset)
        seen = b.seen if b is not None else 0
        if not self.enabled:
            return WindowPhase("watching", True, seen)
        return WindowPhase("learning" if seen < self.cfg.learn_windows else "watching", seen >= self.cfg.judge_after, seen)

    def adapt(self, asset: str, surprise: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """This window's surprise (C,) adapted to the asset's baseline, then the baseline updated."""
        surprise = np.asarray(surprise, dtype=np.float64)
        if not self.enabled:
            return surprise
        mask = np.asarray(mask, dtype=bool) & np.isfinite(surprise)
        b = self._assets.get(asset)
        if b is None:
            b = self._assets[asset] = _AssetBaseline(len(surprise))
        adapted = np.where(mask, _apply(surprise, b.median, b.spread), surprise)
        if b.seen < self.cfg.learn_windows:
            # kept to 1e-3 nats: the committed state is then small and restores to the same baseline
            b.buffer.append(np.where(mask, np.round(surprise, 3), np.nan))
            if b.seen + 1 >= self.cfg.judge_after:
                b.fit_buffer(min_rows=max(self.cfg.judge_after // 2, 1))
            if b.seen + 1 >= self.cfg.learn_windows:
                b.buffer = []  # watching from the next window on: the baseline is fixed
        else:
            b.median += np.where(mask, self.cfg.step * np.sign(surprise - b.median), 0.0)
        b.seen += 1
        return adapted

    def offset(self, asset: str) -> np.ndarray | None:
        """Nats taken off each component at its baseline's median (None: asset not seen yet)."""
        b = self._assets.get(asset)
        return None if b is None else np.maximum(b.median - NORMAL_MEDIAN, 0.0)

    def forget(self, asset: str) -> None:
        """A new normal: the asset learns its baseline again from its next windows."""
        self._assets.pop(asset, None)

    def state(self, asset: str) -> dict:
        """JSON of an asset's baseline: committed by the monitor with its offsets (as `LogMemory`'s)."""
        b = self._assets.get(asset)
        if b is None:
            return {}
        return {"seen": b.seen, "phase": self.phase(asset).phase, "median": b.median.tolist(),
                "spread": b.spread.tolist(),
                "buffer": [[None if not math.isfinite(v) else float(v) for v in row] for row in b.buffer]}

    def restore(self, asset: str, state: dict) -> None:
        if not state:
            self.forget(asset)
            return
        median = np.asarray(state["median"], dtype=np.float64)
        b = _AssetBaseline(len(median))
        b.median = median
        if "spread" in state:
            b.seen = int(state["seen"])
            b.spread = np.asarray(state["spread"], dtype=np.float64)
            b.buffer = [np.array([np.nan if v is None else v for v in row], dtype=np.float64) for row in state["buffer"]]
        else:  # the sign-step state of earlier versions: a per-component count, no spread
            b.seen = max(int(max(state.get("seen", [0]), default=0)), self.cfg.learn_windows)
        if not (np.isfinite(b.median).all() and np.isfinite(b.spread).all()):
            b = _AssetBaseline(len(median))  # a corrupt state must not blind the asset: learn again
        self._assets[asset] = b


def _apply(surprise: np.ndarray, median: np.ndarray, spread: np.ndarray) -> np.ndarray:
    offset = np.maximum(median - NORMAL_MEDIAN, 0.0)
    centre = NORMAL_MEDIAN + offset
    above = NORMAL_MEDIAN + (surprise - centre) / spread
    return np.where(surprise > centre, above, np.maximum(surprise - offset, 0.0))


def adapt_table(surprise: np.ndarray, mask: np.ndarray, asset_idx: np.ndarray, starts: np.ndarray,
                cfg: BaselineConfig) -> np.ndarray:
    """`SurpriseAdapter` over a table of windows (N, C), each asset in start order; rows may come
    in any order. The same object as the scorer's, so the two cannot drift apart."""
    out = np.asarray(surprise, dtype=np.float64).copy()
    if not cfg.enabled or len(out) == 0:
        return out
    adapter = SurpriseAdapter(cfg)
    for i in np.lexsort((starts, asset_idx)):
        out[i] = adapter.adapt(str(asset_idx[i]), out[i], mask[i])
    return out


def table_phases(asset_idx: np.ndarray, starts: np.ndarray, cfg: BaselineConfig) -> tuple[np.ndarray, np.ndarray]:
    """(learning, judged) per row of a window table: what `SurpriseAdapter.phase` says of each."""
    n = len(asset_idx)
    rank = np.empty(n, dtype=np.int64)
    for a in np.unique(asset_idx):
        idx = np.flatnonzero(asset_idx == a)
        rank[idx[np.argsort(starts[idx], kind="stable")]] = np.arange(len(idx))
    if not cfg.enabled:
        return np.zeros(n, bool), np.ones(n, bool)
    return rank < cfg.learn_windows, rank >= cfg.judge_after
