"""Score calibration: per-asset normalisation and a threshold set for a false-alarm budget.

Where it sits: after training, `calibrate` runs on raw window scores of held-out *normal*
operation (never the evaluation run); the result is saved as `calibration.json` beside the
weights, and the scorer turns raw scores into calibrated ones with it.

1. Per asset, raw scores are normalised by a robust location and scale (median, IQR/1.349),
   shrunk towards the pooled values when the asset has few windows (empirical Bayes with
   `prior_windows` pseudo-windows), so a quiet and a noisy camera share one threshold scale.
2. The event lifecycle opens an event after `open_after` consecutive windows over the threshold,
   so the statistic that matters is the running minimum over `open_after` windows. Its
   exceedances over a high threshold u are declustered into runs (one run ~ one event) and the
   run peaks are modelled with a generalised Pareto distribution (peaks over threshold, Coles
   2001, ch. 4-5). The threshold is the return level for the budget: at most `budget_events`
   events per asset per `budget_hours` of normal operation. When the calibration data are long
   enough to contain that many runs, the empirical level is used instead of the tail model.

Pure numpy/scipy: no torch, no I/O beyond JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from schemas.errors import FusionwatchError


class CalibrationError(FusionwatchError):
    pass


@dataclass
class AssetCalibration:
    loc: float
    scale: float
    threshold: float  # in normalised units
    windows: int = 0


@dataclass
class TailFit:
    method: str  # "pot" (GPD return level), "empirical", or "floor"
    u: float = 0.0  # POT threshold (normalised units)
    xi: float = 0.0  # GPD shape
    sigma: float = 0.0  # GPD scale
    clusters: int = 0  # exceedance runs above u
    rate_u: float = 0.0  # runs per window above u
    target_rate: float = 0.0  # allowed events per window


@dataclass
class Calibration:
    pooled: AssetCalibration
    assets: dict[str, AssetCalibration] = field(default_factory=dict)
    tail: TailFit = field(default_factory=lambda: TailFit("floor"))
    budget_events: float = 1.0
    budget_hours: float = 8.0
    hop_s: float = 1.0
    open_after: int = 2
    windows: int = 0

    def _for(self, asset: str) -> AssetCalibration:
        return self.assets.get(asset, self.pooled)

    def normalise(self, asset: str, raw: float | np.ndarray):
        c = self._for(asset)
        return (np.asarray(raw, dtype=np.float64) - c.loc) / c.scale

    def threshold(self, asset: str) -> float:
        return float(self._for(asset).threshold)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(pooled=AssetCalibration(**d["pooled"]), assets={k: AssetCalibration(**v) for k, v in d.get("assets", {}).items()},
                   tail=TailFit(**d.get("tail", {"method": "floor"})),
                   **{k: d[k] for k in ("budget_events", "budget_hours", "hop_s", "open_after", "windows") if k in d})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        return cls.from_dict(json.loads(path.read_text()))


def robust_loc_scale(x: np.ndarray, min_scale: float = 1e-6) -> tuple[float, float]:
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    return float(q50), max(float(q75 - q25) / 1.349, min_scale)


def runs_statistic(scores: np.ndarray, open_after: int) -> np.ndarray:
    """Running minimum over `open_after` consecutive windows (the lifecycle opens an event when
    all of them are over the threshold)."""
    if open_after <= 1 or len(scores) < open_after:
        return scores.copy() if open_after <= 1 else np.zeros(0)
    stacked = np.stack([scores[i: len(scores) - open_after + 1 + i] for i in range(open_after)])
    return stacked.min(0)


def cluster_peaks(x: np.ndarray, u: float, gap: int) -> np.ndarray:
    """Peaks of runs of x > u; runs closer than `gap` windows are one cluster (runs declustering)."""
    idx = np.flatnonzero(x > u)
    if not len(idx):
        return np.zeros(0)
    splits = np.flatnonzero(np.diff(idx) > gap) + 1
    return np.array([x[g].max() for g in np.split(idx, splits)])


def fit_gpd(excess: np.ndarray, xi_bounds: tuple[float, float] = (-0.5, 0.5)) -> tuple[float, float]:
    """(xi, sigma) of a generalised Pareto distribution by maximum likelihood (scipy), with the
    shape kept within `xi_bounds`: beyond +-0.5 a few hundred points cannot tell, and a heavy
    fitted tail would make thresholds explode."""
    from scipy.stats import genpareto

    if len(excess) < 5 or float(np.std(excess)) < 1e-9:
        return 0.0, max(float(np.mean(excess)) if len(excess) else 1.0, 1e-3)
    xi, _, sigma = genpareto.fit(excess, floc=0.0)
    if not np.isfinite(xi) or not np.isfinite(sigma) or sigma <= 0:
        return 0.0, float(np.mean(excess))
    if not xi_bounds[0] <= xi <= xi_bounds[1]:  # refit with the shape pinned at the bound
        xi = float(np.clip(xi, *xi_bounds))
        sigma = float(genpareto.fit(excess, f0=xi, floc=0.0)[2])
    return float(xi), float(sigma)


def return_level(u: float, xi: float, sigma: float, rate_u: float, target_rate: float) -> float:
    """Level exceeded by runs at `target_rate` per window, given runs exceed u at `rate_u`."""
    m = rate_u / target_rate
    if m <= 1:
        return u
    if abs(xi) < 1e-6:
        return u + sigma * math.log(m)
    return u + sigma / xi * (m ** xi - 1.0)


# open_after/close_after defaults: the monitor's (streamlogic.event_lifecycle; models/ does not import services/)
def calibrate(raw: np.ndarray, assets: np.ndarray | list[str], starts: np.ndarray, budget_events: float = 1.0,
              budget_hours: float = 8.0, hop_s: float = 1.0, open_after: int = 3, close_after: int = 3,
              per_asset: bool = True, prior_windows: int = 300, u_quantile: float = 0.99, min_clusters: int = 30,
              min_threshold: float = 3.0) -> Calibration:
    """Fit normalisation and the budget threshold on raw scores of normal operation.

    `raw`, `assets`, `starts`: one entry per window. `min_threshold` (normalised units) keeps a
    threshold from collapsing into the bulk of normal scores when the tail is very thin.
    """
    raw = np.asarray(raw, dtype=np.float64)
    assets = np.asarray(assets)
    starts = np.asarray(starts, dtype=np.float64)
    ok = np.isfinite(raw)
    raw, assets, starts = raw[ok], assets[ok], starts[ok]
    if len(raw) < 50:
        raise CalibrationError(f"calibration needs at least 50 scored normal windows, got {len(raw)}; "
                               "give it a longer normal recording")
    loc, scale = robust_loc_scale(raw)
    pooled = AssetCalibration(loc, scale, 0.0, len(raw))
    per: dict[str, AssetCalibration] = {}
    norm = np.empty_like(raw)
    stats = []
    for a in np.unique(assets):
        sel = assets == a
        n = int(sel.sum())
        if per_asset:
            la, sa = robust_loc_scale(raw[sel])
            w = n / (n + prior_windows)  # shrink towards the pooled values
            la, sa = w * la + (1 - w) * loc, w * sa + (1 - w) * scale
        else:
            la, sa = loc, scale
        per[str(a)] = AssetCalibration(la, sa, 0.0, n)
        order = np.argsort(starts[sel])
        s = (raw[sel][order] - la) / sa
        t = starts[sel][order]
        # consecutive runs only: a gap in time breaks the running minimum
        breaks = np.flatnonzero(np.diff(t) > hop_s * 1.5) + 1
        for seg in np.split(s, breaks):
            stats.append(runs_statistic(seg, open_after))
        norm[sel] = (raw[sel] - la) / sa
    e = np.concatenate(stats) if stats else np.zeros(0)
    target_rate = budget_events / (budget_hours * 3600.0 / hop_s)
    n_win = len(e)
    # empirical when the data hold enough budget periods to read the level directly
    allowed = target_rate * n_win
    if allowed >= 5:
        u = float(np.quantile(e, u_quantile))
        peaks = np.sort(cluster_peaks(e, u, close_after))[::-1]
        k = int(math.floor(allowed))
        thr = float(peaks[k]) if k < len(peaks) else u
        tail = TailFit("empirical", u=u, clusters=len(peaks), rate_u=len(peaks) / n_win, target_rate=target_rate)
    else:
        # the highest u that still leaves enough runs to fit (bias falls with u, variance rises)
        for q in (u_quantile, 0.98, 0.95, 0.9, 0.8):
            u = float(np.quantile(e, min(q, u_quantile)))
            peaks = cluster_peaks(e, u, close_after)
            if len(peaks) >= min_clusters:
                break
        rate_u = len(peaks) / max(n_win, 1)
        # A bounded (xi < 0) tail fitted on a few hundred runs promises an upper end that hours of
        # normal operation may well exceed; for a false-alarm budget the exponential tail (xi = 0)
        # is the conservative floor.
        xi, sigma = fit_gpd(peaks - u, xi_bounds=(0.0, 0.5))
        thr = return_level(u, xi, sigma, rate_u, target_rate)
        tail = TailFit("pot", u=u, xi=xi, sigma=sigma, clusters=len(peaks), rate_u=rate_u, target_rate=target_rate)
    thr = max(thr, min_threshold)
    pooled.threshold = thr
    for c in per.values():
        c.threshold = thr
    return Calibration(pooled=pooled, assets=per, tail=tail, budget_events=budget_events, budget_hours=budget_hours,
                       hop_s=hop_s, open_after=open_after, windows=len(raw))
