"""Commit a scored batch to SQL, retrying through database outages.

A transient failure (connection lost, a lock, a serialisation failure) is retried with backoff
while consumption pauses behind it; a failure that would repeat on every try stops the monitor
with a sentence; a fenced batch (another member owns the partition now) is dropped; a stop request
during an outage gives the batch up — nothing of it was committed, so its records are read again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    StatementError,
)

from schemas.errors import FusionwatchError
from services.db import redact
from services.monitor.sink import CommitBatch, Fenced, NonFiniteValue, SqlSink
from services.observability import metrics as m

log = logging.getLogger(__name__)
MAX_RETRY_DELAY_S = 5.0


@dataclass(frozen=True)
class CommitOutcome:
    status: Literal["committed", "fenced", "stopped"]
    fence: Fenced | None = None


class Committer:
    def __init__(self, sink: SqlSink, stop: threading.Event, unready_after_s: float):
        self.sink, self.stop, self.unready_after_s = sink, stop, unready_after_s
        self.failing_since: float | None = None  # monotonic time of the first failed commit of a run of them
        self.failure = ""

    def commit(self, batch: CommitBatch) -> CommitOutcome:
        delay = 0.2
        while True:
            if self.stop.is_set() and self.failing_since is not None:
                return CommitOutcome("stopped")  # no new attempt: each may wait a connect timeout
            try:
                m.SQL_WRITE.observe(self.sink.commit(batch))
                self.failing_since = None
                return CommitOutcome("committed")
            except Fenced as f:
                return CommitOutcome("fenced", f)
            except (NonFiniteValue, DataError, ProgrammingError, NotSupportedError) as e:
                m.SQL_WRITE_FAILURES.inc()
                raise FusionwatchError(
                    f"the database refused a batch for a reason retrying cannot fix: {self.describe(e)}. "
                    "The monitor stops rather than loop; please report this with the log above") from e
            except (OperationalError, IntegrityError, DBAPIError) as e:
                m.SQL_WRITE_FAILURES.inc()
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.failure = self.describe(e)
                log.warning("database write failed (%s); retrying in %.1f s — consumption pauses meanwhile",
                            self.failure, delay)
                if self.stop.wait(delay):  # SIGTERM inside an outage: give the batch up, exit now
                    log.warning("stopping with a batch uncommitted (the database is failing); its records will "
                                "be read again")
                    return CommitOutcome("stopped")
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
            except StatementError as e:  # raised before the database saw it (e.g. a value JSON cannot hold)
                m.SQL_WRITE_FAILURES.inc()
                raise FusionwatchError(f"a batch could not be written: {self.describe(e)}; "
                                       "the monitor stops rather than loop; please report this") from e

    def health(self) -> tuple[bool, str]:
        """Readiness: False once commits have kept failing for `unready_after_s`."""
        since = self.failing_since
        if since is None or time.monotonic() - since < self.unready_after_s:
            return True, ""
        return False, f"SQL commits failing for {time.monotonic() - since:.0f} s ({self.failure})"

    def describe(self, e: BaseException) -> str:
        text = str(getattr(e, "orig", None) or e).strip().splitlines()
        return redact(text[0][:200] if text else type(e).__name__, self.sink.engine.url)
