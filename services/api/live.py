"""Live updates for the review page: Server-Sent Events fed by polling the events table.

Why polling: the monitor writes events in its own process (or machine), and SQL is the one place
every writer already goes through; a once-a-second indexed query per open page is cheap and needs
no extra broker subscription in the API.

Why the overlap: `updated_at` is set before a transaction commits, so a slow transaction can make a
row visible after a later one was already sent. Each poll therefore looks back `OVERLAP` behind the
cursor and skips the (id, updated_at) pairs it has already sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import AsyncIterator

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy.orm import Session, sessionmaker

from schemas import api as shapes
from services.api import queries

OVERLAP = timedelta(seconds=5)
BATCH = 500
RETRY_MS = 3000


def parse_cursor(last_event_id: str | None) -> datetime | None:
    if not last_event_id:
        return None
    try:
        t = datetime.fromisoformat(last_event_id)
    except ValueError:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def _fetch(sessions: sessionmaker[Session], after: datetime) -> list[shapes.LiveEvent]:
    with sessions() as session:
        return [
            shapes.LiveEvent(id=e.id, asset=e.asset_id, status=e.status, severity=e.severity, kind=e.kind,
                             verdict=e.verdict, start_time=e.start_time, updated_at=e.updated_at)
            for e in queries.changed_since(session, after, BATCH)
        ]


async def changes(sessions: sessionmaker[Session], after: datetime | None, poll_s: float,
                  max_s: float) -> AsyncIterator[ServerSentEvent]:
    """Yield one `event` message per created/changed event row after `after` (default: now), for at
    most `max_s` seconds. The message id is the row's updated_at, so a reconnecting EventSource
    (Last-Event-ID) resumes where it stopped."""
    sent: dict[tuple[str, datetime], datetime] = {}
    deadline = anyio.current_time() + max_s
    if after is None:
        # a fresh page has just loaded the queue: what is already visible is not news
        cursor = datetime.now(timezone.utc)
        for row in await anyio.to_thread.run_sync(_fetch, sessions, cursor - OVERLAP):
            if row.updated_at <= cursor:
                sent[(row.id, row.updated_at)] = row.updated_at
    else:
        cursor = after
    yield ServerSentEvent(comment="fusionwatch live events", retry=RETRY_MS)
    while anyio.current_time() < deadline:
        rows = await anyio.to_thread.run_sync(_fetch, sessions, cursor - OVERLAP)
        for row in rows:
            key = (row.id, row.updated_at)
            if key in sent:
                continue
            sent[key] = row.updated_at
            cursor = max(cursor, row.updated_at)
            yield ServerSentEvent(event="event", id=row.updated_at.isoformat(), data=row.model_dump(mode="json"))
        if len(rows) == BATCH and all((r.id, r.updated_at) in sent for r in rows):
            # a burst larger than one batch inside the overlap: step past it instead of re-reading it
            cursor = rows[-1].updated_at + OVERLAP
        horizon = cursor - 2 * OVERLAP
        for key in [k for k, t in sent.items() if t < horizon]:
            del sent[key]
        await anyio.sleep(poll_s)
