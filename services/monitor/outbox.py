"""Outbox relay: publish committed event changes to fw.events, at least once.

Rows are written in the monitor's SQL transaction; this thread sends the unsent ones in order,
flushes, then marks them sent. A crash between send and mark re-sends: consumers de-duplicate on
the CloudEvent `id` (event id + revision), which is stable.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError

from schemas.tables import Outbox, utcnow
from services.db import session_factory
from services.observability import metrics as m

log = logging.getLogger(__name__)
CONTENT_TYPE = b"application/cloudevents+json"


class OutboxRelay:
    def __init__(self, engine: Engine, producer, topic: str, interval_s: float = 0.25, batch: int = 500):
        self.sessions = session_factory(engine)
        self.producer, self.topic, self.interval_s, self.batch = producer, topic, interval_s, batch
        self.sent = 0

    def relay_once(self) -> int:
        with self.sessions() as s:
            q = select(Outbox).where(Outbox.sent_at.is_(None)).order_by(Outbox.id).limit(self.batch)
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)  # two relays never hold the same rows
            rows = s.scalars(q).all()
            if not rows:
                m.OUTBOX_PENDING.set(0)
                s.rollback()
                return 0
            futures = [self.producer.send(self.topic, key=row.payload["subject"].encode(),
                                          value=json.dumps(row.payload, separators=(",", ":")).encode(),
                                          headers=[("content-type", CONTENT_TYPE)])
                       for row in rows]
            self.producer.flush()
            # flush() returns whether or not the broker took them: mark only the rows up to the
            # first that failed, so the rest go again, in order, on the next round
            delivered = sum(1 for _ in itertools.takewhile(lambda f: f.succeeded(), futures))
            if delivered < len(rows):
                error = futures[delivered].exception
                log.warning("outbox relay: %d of %d event changes not delivered (%s: %s); retrying",
                            len(rows) - delivered, len(rows), type(error).__name__, error)
            rows = rows[:delivered]
            if not rows:
                s.rollback()
                return 0
            s.execute(update(Outbox).where(Outbox.id.in_([r.id for r in rows])).values(sent_at=utcnow()))
            s.commit()
            m.OUTBOX_PENDING.set(s.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))) or 0)
        self.sent += len(rows)
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self.relay_once() >= self.batch:
                    continue
            except DBAPIError as e:
                log.warning("outbox relay: database unavailable (%s); retrying", str(e.orig).splitlines()[0][:120])
            except Exception as e:  # noqa: BLE001 - keep relaying; the rows stay unsent
                log.warning("outbox relay failed: %s; retrying", e)
            stop.wait(self.interval_s)
        try:
            self.relay_once()  # last flush on shutdown
        except Exception:  # noqa: BLE001
            pass
