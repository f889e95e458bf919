"""The monitor's stream state, shared by its parts and owned by the consume thread.

Which partitions this member owns and how far each is read, handled and cut: the one place these
offsets live in memory, so each collaborator reads the same book instead of keeping its own copy.
Durable truth is in SQL (services/monitor/sink.py); this is rebuilt from there on assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TP = tuple[str, int]  # (topic, partition)


@dataclass
class PartitionBook:
    assigned: set[TP] = field(default_factory=set)
    processed: dict[TP, int] = field(default_factory=dict)  # processed_through: offsets accounted for
    last_seen: dict[TP, int] = field(default_factory=dict)  # last offset handled since the last seek
    cut_seen: dict[TP, int] = field(default_factory=dict)  # last_seen when the last batch was cut
    topic_ids: dict[TP, Any] = field(default_factory=dict)  # topic id when last assigned: detects re-creation

    def seen(self, tp: TP, offset: int) -> None:
        self.last_seen[tp] = offset

    def rewind(self, tp: TP, processed: int = -1) -> None:
        """The partition is read again from a seek: nothing after `processed` is accounted for."""
        self.processed[tp] = processed
        self.last_seen.pop(tp, None)

    def moved_since_cut(self) -> bool:
        return self.last_seen != self.cut_seen


@dataclass(frozen=True)
class PipelineGauges:
    """A snapshot of where records are inside the monitor, for benchmarks and fault tests."""

    assigned: list[TP]
    incoming: int  # assignments recorded by the group's I/O thread, not applied yet
    paused: bool
    buffered: int  # records held by the aligner in open windows
    pending: int  # closed windows not yet cut into a batch
    queued: int  # batches waiting for the score stage
    in_flight: int  # batches queued or being scored and committed
