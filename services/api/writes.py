"""Every database write the review API makes: status changes, verdicts, manual thresholds.

Where it sits: the reviewers' way back into the data path. A verdict written here is read by
`recalibration.recalibrate` (thresholds) and `recalibration.labelled_windows` (training labels).
Each action also appends an `event_reviews` row, so the event keeps its current verdict while the
audit trail keeps who did what, when and why — including verdicts that were later changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from schemas import api as shapes
from schemas.tables import AssetThreshold, Event, EventReview, ThresholdChange

# Which human status may follow which. "open"/"closed" belong to the monitor's lifecycle;
# reviewers move an event on to acknowledged and resolved, never back.
_ALLOWED_FROM = {
    "acknowledged": {"open", "closed", "acknowledged"},
    "resolved": {"open", "closed", "acknowledged", "resolved"},
}


@dataclass(frozen=True)
class WriteRefused:
    """A write that contradicts the event's state (HTTP 409)."""

    message: str


def _now() -> datetime:
    return datetime.now(timezone.utc)


def set_status(session: Session, event_id: str, status: str, review: shapes.ReviewIn) -> Event | WriteRefused | None:
    """Acknowledge or resolve. None when the event does not exist."""
    event = session.get(Event, event_id, with_for_update=True)
    if event is None:
        return None
    if event.status not in _ALLOWED_FROM[status]:
        return WriteRefused(f"event {event_id} is {event.status}; it cannot become {status}")
    event.status = status
    event.updated_at = _now()
    action = "acknowledge" if status == "acknowledged" else "resolve"
    session.add(EventReview(event_id=event_id, action=action, reviewer=review.reviewer, note=review.note))
    return event


def set_verdict(session: Session, event_id: str, verdict: shapes.VerdictIn) -> Event | None:
    """Label an event real or false alarm (re-labelling replaces the verdict; history stays in
    event_reviews). None when the event does not exist."""
    event = session.get(Event, event_id, with_for_update=True)
    if event is None:
        return None
    now = _now()
    event.verdict = verdict.verdict
    event.verdict_kind = verdict.kind or event.kind
    event.reviewer = verdict.reviewer
    event.verdict_note = verdict.note
    event.verdict_at = now
    event.updated_at = now
    session.add(EventReview(event_id=event_id, action="label", reviewer=verdict.reviewer, verdict=verdict.verdict,
                            verdict_kind=event.verdict_kind, note=verdict.note, at=now))
    return event


def set_threshold(session: Session, asset: str, new: float, actor: str, reason: str,
                  old: float | None = None) -> ThresholdChange:
    """Put a per-asset threshold in force and record the change. `old` is the threshold in force
    before when there was no override row (the calibrated one), so the history starts from it."""
    row = session.get(AssetThreshold, asset, with_for_update=True)
    now = _now()
    if row is None:
        session.add(AssetThreshold(asset_id=asset, threshold=new, updated_at=now))
    else:
        old = row.threshold
        row.threshold = new
        row.updated_at = now
    change = ThresholdChange(asset_id=asset, old_threshold=old, new_threshold=new, actor=actor, reason=reason, at=now)
    session.add(change)
    session.flush()
    return change
