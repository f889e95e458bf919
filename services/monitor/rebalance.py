"""Group rebalances: partitions taken away and given.

kafka-python 3 runs the group protocol on its own I/O thread. Revocation runs there while the
consume thread is blocked inside poll(), so it may change the consume state; it waits for the
batch in flight without blocking the I/O loop (heartbeats go on). Assignment completes in a
background task that can finish after poll() has returned, so it is only recorded there and
applied by the consume thread between polls.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.net.selector import KernelEvent

from services.monitor.backpressure import Backpressure
from services.monitor.recovery import PartitionRecovery
from services.monitor.scoring import ScoreStage
from services.monitor.sink import SqlSink
from services.monitor.state import TP, PartitionBook
from services.observability import metrics as m

log = logging.getLogger(__name__)
REVOKE_WAIT_S = 30.0  # a revocation waits this long for the batch in flight (a database outage)


class Rebalancer:
    def __init__(self, book: PartitionBook, stage: ScoreStage, recovery: PartitionRecovery, sink: SqlSink,
                 backpressure: Backpressure, ready: threading.Event):
        self.book, self.stage, self.recovery, self.sink = book, stage, recovery, sink
        self.backpressure, self.ready = backpressure, ready
        self._incoming: list[list[TP]] = []  # assignments recorded by the I/O thread, not applied yet
        self._lock = threading.Lock()

    def pending(self) -> int:
        with self._lock:
            return len(self._incoming)

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """I/O thread, consume thread blocked in poll(): let the batch in flight commit, then
        drop everything held for these partitions (their next owner starts from SQL)."""
        tps = {(tp.topic, tp.partition) for tp in revoked}
        with self._lock:  # assignments of these partitions not applied yet are moot
            self._incoming = [[tp for tp in a if tp not in tps] for a in self._incoming]
        deadline = time.monotonic() + REVOKE_WAIT_S
        while self.stage.busy() and not self.stage.error and time.monotonic() < deadline:
            await KernelEvent("_sleep", 0.01)  # the I/O loop's own sleep: heartbeats keep flowing
        if self.stage.busy():
            log.warning("revoking partitions with a batch still uncommitted after %.0f s; "
                        "its commit will be fenced", REVOKE_WAIT_S)
        parts = {p for _, p in tps}
        self.recovery.forget_partitions(parts)
        self.book.assigned -= tps
        self.sink.release(list(tps))
        m.forget_partitions(list(tps))
        log.info("partitions revoked: %s", sorted(parts))

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """I/O thread, possibly after poll() returned: record only."""
        with self._lock:
            self._incoming.append([(tp.topic, tp.partition) for tp in assigned])

    def apply(self) -> set[TP]:
        """Consume thread: take on the partitions the group gave us since the last poll."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        fresh = {tp for a in incoming for tp in a} - self.book.assigned
        if fresh:
            self.backpressure.assignment_changed = True
            self.book.assigned |= fresh
            self.recovery.reload([TopicPartition(*tp) for tp in sorted(fresh)])
            log.info("partitions assigned: %s", sorted({p for _, p in fresh}))
        if incoming:
            self.ready.set()
        return fresh


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Async, so that waiting for the batch in flight does not stop the I/O loop's heartbeats."""

    def __init__(self, rebalancer: Rebalancer):
        self.rebalancer = rebalancer

    async def on_partitions_revoked(self, revoked):
        await self.rebalancer.on_revoked(list(revoked))

    async def on_partitions_lost(self, lost):  # evicted (e.g. a zombie): the same cleanup
        await self.rebalancer.on_revoked(list(lost))

    async def on_partitions_assigned(self, assigned):
        self.rebalancer.on_assigned(list(assigned))
