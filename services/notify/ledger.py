"""The notifier's SQL state: what was delivered (or given up on) per event revision and channel,
the dead letters, and the highest severity seen per event.

A ledger row is written as soon as its channel acknowledged (or was dead-lettered), before the
Kafka offset is committed: a record read again after a crash, restart or rebalance skips every
channel that already has its row. What can still repeat is one attempt: a crash after the receiver
acknowledged and before the row committed sends that revision to that channel once more, with the
same Idempotency-Key / payload `id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from schemas.tables import NotifyDeadLetter, NotifyDelivery, NotifyEventState, utcnow
from services.db import session_scope
from services.notify.rules import rank

DELIVERED, DEAD_LETTERED = "delivered", "dead_lettered"


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    revision: int
    channel: str
    transition: str
    payload: dict
    attempts: int
    first_attempt_at: datetime
    last_attempt_at: datetime
    last_error: str


class Ledger:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def finished(self, event_id: str, revision: int) -> dict[str, str]:
        """channel → outcome for this revision."""
        with self.sessions() as s:
            rows = s.execute(select(NotifyDelivery.channel, NotifyDelivery.outcome).where(
                NotifyDelivery.event_id == event_id, NotifyDelivery.revision == revision)).all()
        return {channel: outcome for channel, outcome in rows}

    def told_of_open(self, event_id: str) -> set[str]:
        """Channels delivered an opened or escalated notification of this event."""
        with self.sessions() as s:
            return set(s.scalars(select(NotifyDelivery.channel).where(
                NotifyDelivery.event_id == event_id, NotifyDelivery.outcome == DELIVERED,
                NotifyDelivery.transition.in_(("opened", "escalated")))))

    def delivered(self, event_id: str, revision: int, channel: str, transition: str, attempts: int) -> None:
        self._insert(NotifyDelivery(event_id=event_id, revision=revision, channel=channel, transition=transition,
                                    outcome=DELIVERED, attempts=attempts))

    def dead_letter(self, d: DeadLetter) -> None:
        """The dead letter and its ledger row in one transaction: it is never retried again."""
        try:
            with session_scope(self.sessions) as s:
                s.add(NotifyDelivery(event_id=d.event_id, revision=d.revision, channel=d.channel,
                                     transition=d.transition, outcome=DEAD_LETTERED, attempts=d.attempts))
                s.add(NotifyDeadLetter(event_id=d.event_id, revision=d.revision, channel=d.channel,
                                       transition=d.transition, payload=d.payload, attempts=d.attempts,
                                       first_attempt_at=d.first_attempt_at, last_attempt_at=d.last_attempt_at,
                                       last_error=d.last_error))
        except IntegrityError:
            pass  # another notifier finished this revision for this channel first (a rebalance)

    def dead_letters(self, limit: int = 100) -> list[NotifyDeadLetter]:
        with self.sessions() as s:
            return list(s.scalars(select(NotifyDeadLetter).order_by(NotifyDeadLetter.id.desc()).limit(limit)))

    def seen_severity(self, event_id: str) -> str | None:
        with self.sessions() as s:
            row = s.get(NotifyEventState, event_id)
            return row.severity if row else None

    def remember(self, event_id: str, asset: str, revision: int, severity: str) -> None:
        """Keep the highest severity and the latest revision seen (severity never falls in an event)."""
        with session_scope(self.sessions) as s:
            row = s.get(NotifyEventState, event_id)
            if row is None:
                s.add(NotifyEventState(event_id=event_id, asset_id=asset, revision=revision, severity=severity))
            else:
                row.revision = max(row.revision, revision)
                if rank(severity) > rank(row.severity):
                    row.severity = severity

    def prune(self, older_than_days: float) -> int:
        cutoff = utcnow() - timedelta(days=older_than_days)
        with session_scope(self.sessions) as s:
            n = s.execute(delete(NotifyDelivery).where(NotifyDelivery.finished_at < cutoff)).rowcount
            s.execute(delete(NotifyEventState).where(NotifyEventState.updated_at < cutoff))
            s.execute(delete(NotifyDeadLetter).where(NotifyDeadLetter.created_at < cutoff))
        return n or 0

    def _insert(self, row: NotifyDelivery) -> None:
        try:
            with session_scope(self.sessions) as s:
                s.add(row)
        except IntegrityError:
            pass  # already recorded: a second notifier after a rebalance, or a replay
