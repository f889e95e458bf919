"""Pause every owned partition while the score stage is full; resume when it drains."""

from __future__ import annotations

from kafka import TopicPartition

from services.monitor.state import TP
from services.observability import metrics as m


class Backpressure:
    def __init__(self):
        self.paused = False
        self.assignment_changed = False  # re-check the consumer's pause set after a rebalance

    def apply(self, consumer, assigned: set[TP], full: bool) -> None:
        """Reconciled with the consumer's own pause set each time rather than trusting a flag:
        kafka-python 3 keeps a partition's pause across a rebalance when the partition stays
        assigned, so a pause made before a revocation outlives a resume made while nothing was
        assigned, and the member would stall for good."""
        if full:
            paused = consumer.paused() if self.paused else set()
            todo = [tp for tp in (TopicPartition(*k) for k in assigned) if tp not in paused]
            if todo:
                consumer.pause(*todo)
        elif self.paused or self.assignment_changed:
            paused = consumer.paused()
            if paused:
                consumer.resume(*paused)
        self.assignment_changed = False
        if full != self.paused:
            self.paused = full
            m.PAUSED_PARTITIONS.set(len(assigned) if full else 0)
