"""Each station's own normal, learned while it runs: per-asset adaptation of component surprise.

Where it sits: between the component tails (`FusionModel.tails`: each score component turned into
surprise, -log P_normal) and their combination (`combine_components`) — in the scorer (streaming,
`SurpriseAdapter`) and in every table that calibration and `fusionwatch eval` combine
(`adapt_table`, called by `FusionModel.combine_arrays`), so the monitor scores exactly what was
calibrated and evaluated.

Why: the tails are fitted on the calibration stations. A station whose camera or microphone sits
off their normal as a whole (another lamp, another mounting) has one component's surprise high
all the time; a pooled threshold must then stay high for every station, and event recall pays
(docs/model.md, "The threshold is the least certain number"). Under normal operation a
component's surprise is Exp(1) by construction, so its median is log 2; a station whose running
median sits above that is shifted, not failing.

Rule, per asset and component, in window order: a running median m of the surprise, estimated by
sign steps (the stochastic-approximation median, Robbins and Monro 1951; "frugal streaming", Ma et
al. 2013: one number per component, so the state the monitor commits stays small) — steps of
1/(n+1) while the estimate is young, then `step`; once `warmup` windows are seen, the window's
surprise is lowered by m's excess over log 2 (never raised: a quiet station is not made louder).
A fault of L windows moves m by at most `step` × L, so a fault is not learned as normal in the
time it takes to raise an event; a station that changed for good is, in about 1/`step` windows
per nat. Masked components are neither adapted nor learned from.
"""

from __future__ import annotations

import math

import numpy as np

NORMAL_MEDIAN = math.log(2.0)  # median of Exp(1): the surprise of normal operation


class SurpriseAdapter:
    """Streaming per-asset adaptation; `adapt` one window at a time, in each asset's window order."""

    def __init__(self, step: float, warmup: int):
        if step < 0 or warmup < 0:
            raise ValueError("adaptation step and warm-up must be >= 0 (step 0: no adaptation)")
        self.step, self.warmup = float(step), int(warmup)
        self._median: dict[str, np.ndarray] = {}  # per asset: running median of each component
        self._seen: dict[str, np.ndarray] = {}  # per asset: windows each component was present in

    @property
    def enabled(self) -> bool:
        return self.step > 0

    def adapt(self, asset: str, surprise: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """This window's surprise (C,) adapted to the asset, then the asset's medians updated."""
        surprise = np.asarray(surprise, dtype=np.float64)
        if not self.enabled:
            return surprise
        mask = np.asarray(mask, dtype=bool)
        m = self._median.setdefault(asset, np.full(len(surprise), NORMAL_MEDIAN))
        n = self._seen.setdefault(asset, np.zeros(len(surprise), dtype=np.int64))
        adapted = np.maximum(surprise - np.where(mask, self._excess(m, n), 0.0), 0.0)
        gain = np.maximum(self.step, 1.0 / (n + 1))
        m += np.where(mask, gain * np.sign(surprise - m), 0.0)
        n += mask
        return adapted

    def offset(self, asset: str) -> np.ndarray | None:
        """What is taken off each component of the asset's next window (None: not seen yet)."""
        if asset not in self._median:
            return None
        return self._excess(self._median[asset], self._seen[asset])

    def _excess(self, median: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """The running median's excess over log 2, for components past their warm-up."""
        return np.where(seen >= self.warmup, np.maximum(median - NORMAL_MEDIAN, 0.0), 0.0)

    def forget(self, asset: str) -> None:
        self._median.pop(asset, None)
        self._seen.pop(asset, None)

    def state(self, asset: str) -> dict:
        """JSON of an asset's estimate: committed by the monitor with its offsets (as `LogMemory`'s)."""
        if asset not in self._median:
            return {}
        return {"median": self._median[asset].tolist(), "seen": self._seen[asset].tolist()}

    def restore(self, asset: str, state: dict) -> None:
        if state:
            self._median[asset] = np.asarray(state["median"], dtype=np.float64)
            self._seen[asset] = np.asarray(state["seen"], dtype=np.int64)
        else:
            self.forget(asset)


def adapt_table(surprise: np.ndarray, mask: np.ndarray, asset_idx: np.ndarray, starts: np.ndarray, step: float,
                warmup: int) -> np.ndarray:
    """`SurpriseAdapter` over a table of windows (N, C), each asset in start order; rows may come
    in any order. The same object as the scorer's, so the two cannot drift apart."""
    out = np.asarray(surprise, dtype=np.float64).copy()
    if step <= 0 or len(out) == 0:
        return out
    adapter = SurpriseAdapter(step, warmup)
    for i in np.lexsort((starts, asset_idx)):
        out[i] = adapter.adapt(str(asset_idx[i]), out[i], mask[i])
    return out
