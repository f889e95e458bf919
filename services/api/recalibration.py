"""The feedback loop: reviewers' verdicts make the next alerts better.

Where it sits: after review. `recalibrate` reads false-alarm verdicts and raises per-asset thresholds
(`asset_thresholds`, which the monitor applies on top of the checkpoint's calibration); it runs from
the scheduler, from `fusionwatch recalibrate`, and from POST /api/recalibrate. `labelled_windows`
hands the labelled time ranges to the next `fusionwatch train` for the supervised heads.

The rule, per asset, over the look-back period:
1. False events that would still fire at the threshold in force (their stored score timeline still
   opens an event through the monitor's hysteresis) are counted against the false-alarm budget the
   model was calibrated for (default one per asset per shift), over the shifts actually observed.
2. Within budget: nothing changes — a model that meets its budget is not made deafer.
3. Over budget: the threshold goes just above the peak scores of enough of those false events (the
   lowest ones first) to bring the count back within budget, but
   - at most `max_step` × the threshold in force per run (one bad labelling session cannot blind an asset),
   - at most `max_total` × the calibrated threshold (the one before the first recorded change),
   - and strictly below the opening score of every confirmed real event on that asset — the highest
     threshold at which its timeline still opens an event — so a recalibration never hides a fault
     that a reviewer confirmed.
Every change is written to `threshold_changes` with the actor and a reason a person can read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schemas.tables import Asset, AssetThreshold, Event, ThresholdChange
from services.api import writes
from services.settings import Settings

log = logging.getLogger(__name__)


class LabelledWindow(NamedTuple):
    """A reviewed time range of one asset: the supervision signal for `fusionwatch train`."""

    asset: str
    start: datetime
    end: datetime
    verdict: str  # real | false_alarm
    kind: str  # what the reviewer said it was (verdict kind), else the event's kind


def labelled_windows(session: Session, since: datetime | None = None) -> list[LabelledWindow]:
    """Every labelled event as (asset, start, end, verdict, kind), oldest first. An event without an
    end time (still open when labelled) ends at its last scored window."""
    stmt = select(Event).where(Event.verdict.in_(("real", "false_alarm"))).order_by(Event.start_time, Event.id)
    if since is not None:
        stmt = stmt.where(Event.start_time >= since)
    out = []
    for e in session.scalars(stmt):
        end = e.end_time or _last_score_time(e) or e.start_time
        out.append(LabelledWindow(e.asset_id, e.start_time, end, str(e.verdict), e.verdict_kind or e.kind))
    return out


def _last_score_time(e: Event) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(e.scores[-1][0]).replace("Z", "+00:00"))
    except (IndexError, TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def score_values(e: Event) -> list[float]:
    values = []
    for point in e.scores or []:
        try:
            values.append(float(point[1]))
        except (IndexError, TypeError, ValueError):
            continue
    return values


def opening_score(scores: list[float], open_after: int, fallback: float) -> float:
    """The highest threshold at which this score timeline still opens an event: the best run of
    `open_after` consecutive windows, scored by its lowest window (the lifecycle opens on
    `open_after` consecutive windows at or over the threshold)."""
    if len(scores) < open_after:
        return fallback
    return max(min(scores[i:i + open_after]) for i in range(len(scores) - open_after + 1))


def _above(x: float, margin: float) -> float:
    return x + margin * abs(x)


def _below(x: float, margin: float) -> float:
    return x - margin * abs(x)


@dataclass
class AssetPlan:
    """What recalibration found for one asset and what it proposes (None: leave it)."""

    asset: str
    current: float
    calibrated: float
    shifts: float
    allowed: int
    still_firing: list[tuple[float, str]]  # (peak, event id) of false events that still fire
    real_cap: tuple[float, str] | None  # (highest allowed threshold, event id) from confirmed real events
    proposed: float | None = None
    notes: list[str] = field(default_factory=list)

    def reason(self) -> str:
        n = len(self.still_firing)
        return (f"{n} false alarm(s) still above the threshold in {self.shifts:.1f} shift(s), budget {self.allowed}; "
                + "; ".join(self.notes))


def _threshold_in_force(session: Session, asset: str) -> float | None:
    row = session.get(AssetThreshold, asset)
    if row is not None:
        return row.threshold
    return session.scalar(select(Event.threshold).where(Event.asset_id == asset)
                          .order_by(Event.start_time.desc()).limit(1))


def calibrated_threshold(session: Session, asset: str, current: float) -> float:
    first = session.scalar(select(ThresholdChange.old_threshold).where(ThresholdChange.asset_id == asset,
                                                                       ThresholdChange.old_threshold.is_not(None))
                           .order_by(ThresholdChange.at, ThresholdChange.id).limit(1))
    return first if first is not None else current


def _observed_shifts(session: Session, asset: str, window_start: datetime, now: datetime, shift_h: float) -> float:
    seen = session.scalar(select(Asset.first_seen).where(Asset.id == asset))
    if seen is None:
        seen = session.scalar(select(func.min(Event.start_time)).where(Event.asset_id == asset))
    start = max(window_start, seen) if seen else window_start
    return max(1.0, (now - start).total_seconds() / 3600.0 / shift_h)


def plan(session: Session, settings: Settings, now: datetime | None = None) -> list[AssetPlan]:
    """Work out, without writing, what recalibration would do for every asset with false alarms."""
    rc = settings.recalibration
    open_after = settings.monitor.open_after
    now = now or datetime.now(timezone.utc)
    window_start = now - timedelta(days=rc.lookback_days)
    assets = session.scalars(select(Event.asset_id).where(Event.verdict == "false_alarm",
                                                          Event.start_time >= window_start).distinct()).all()
    plans = []
    for asset in sorted(assets):
        current = _threshold_in_force(session, asset)
        if current is None:
            continue
        false_events = session.scalars(select(Event).where(Event.asset_id == asset, Event.verdict == "false_alarm",
                                                           Event.start_time >= window_start)).all()
        still = sorted(
            (e.peak_score, e.id) for e in false_events
            if opening_score(score_values(e), open_after, e.peak_score) >= current
        )
        real_cap = None
        for e in session.scalars(select(Event).where(Event.asset_id == asset, Event.verdict == "real")):
            cap = _below(opening_score(score_values(e), open_after, e.peak_score), rc.margin)
            if real_cap is None or cap < real_cap[0]:
                real_cap = (cap, e.id)
        shifts = _observed_shifts(session, asset, window_start, now, rc.shift_hours)
        p = AssetPlan(asset=asset, current=current, calibrated=calibrated_threshold(session, asset, current), shifts=shifts,
                      allowed=math.floor(rc.false_alarms_per_shift * shifts + 1e-9), still_firing=still,
                      real_cap=real_cap)
        _propose(p, rc.margin, rc.max_step, rc.max_total)
        plans.append(p)
    return plans


def _propose(p: AssetPlan, margin: float, max_step: float, max_total: float) -> None:
    excess = len(p.still_firing) - p.allowed
    if excess <= 0:
        p.notes.append("within budget, unchanged")
        return
    peak, event = p.still_firing[excess - 1]  # suppress the `excess` lowest-peaked false events
    target = _above(peak, margin)
    p.notes.append(f"target just above peak {peak:.4g} of false event {event}")
    limits = [(p.current * max_step, f"capped at x{max_step:g} of the threshold in force per run"),
              (p.calibrated * max_total, f"capped at x{max_total:g} of the calibrated threshold {p.calibrated:.4g}")]
    if p.real_cap is not None:
        limits.append((p.real_cap[0], f"kept below the opening score of confirmed real event {p.real_cap[1]}"))
    new = target
    for limit, why in limits:
        if limit < new:
            new = limit
            p.notes.append(why)
    if new <= p.current * (1 + 1e-9):
        p.notes.append(f"no raise possible above {p.current:.4g}")
        return
    p.proposed = new


def recalibrate(session: Session, settings: Settings, *, actor: str = "recalibrate", now: datetime | None = None,
                dry_run: bool = False) -> list[ThresholdChange]:
    """Raise thresholds of assets whose false alarms exceed the budget; returns the changes (written
    to `asset_thresholds` and `threshold_changes` in the caller's transaction unless dry_run)."""
    changes = []
    for p in plan(session, settings, now):
        if p.proposed is None:
            log.info("recalibration %s: %s", p.asset, p.reason())
            continue
        if dry_run:
            changes.append(ThresholdChange(asset_id=p.asset, old_threshold=p.current, new_threshold=p.proposed,
                                           actor=actor, reason=p.reason(), at=now or datetime.now(timezone.utc)))
        else:
            changes.append(writes.set_threshold(session, p.asset, p.proposed, actor, p.reason(), old=p.current))
        log.info("recalibration %s: %.4g -> %.4g (%s)", p.asset, p.current, p.proposed, p.reason())
    return changes
