"""Every fetched record becomes exactly one of: aligned into a window, replayed (accounted for
before a restart), or dead-lettered with a reason (contract violation, rate limit, late, corrupt).
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import TopicPartition
from kafka.errors import CorruptRecordError

from schemas.envelope import Accepted, ContractLimits, DecodeOptions, Kind, decode
from schemas.errors import FusionwatchError
from services.monitor.dlq import DeadLetters
from services.monitor.state import TP, PartitionBook
from services.observability import metrics as m
from services.settings import MonitorSettings
from streamlogic.ratelimit import AssetRateLimiter
from streamlogic.windows import Position, WindowAligner

log = logging.getLogger(__name__)


class RecordIntake:
    def __init__(self, cfg: MonitorSettings, kind_of: dict[str, Kind], limits: ContractLimits,
                 decode_options: DecodeOptions, aligner: WindowAligner, book: PartitionBook, stats):
        self.cfg, self.kind_of, self.limits, self.decode_options = cfg, kind_of, limits, decode_options
        self.aligner, self.book, self.stats = aligner, book, stats
        self.rate = AssetRateLimiter(cfg.per_asset_max_records_per_s)
        self.dlq: DeadLetters | None = None  # opened by Monitor.run

    def handle(self, tp: TopicPartition, rec, now: float) -> None:
        key: TP = (tp.topic, tp.partition)
        if key not in self.book.assigned:
            return
        self.book.seen(key, rec.offset)
        kind = self.kind_of[tp.topic]
        self.stats.records += 1
        m.RECORDS_CONSUMED.labels(topic=tp.topic).inc()
        res = decode(kind, rec.key, rec.value, rec.headers, now, self.limits, self.decode_options)
        if not isinstance(res, Accepted):
            return self.dead_letter(tp, rec, res.reason, res.detail)
        env = res.envelope
        assert res.payload is not None, "the monitor decodes media (DecodeOptions.decode_media)"
        if not self.rate.allow((env.asset, kind), env.time, now):
            m.RATE_LIMITED_RECORDS.labels(asset=m.asset_labels(env.asset)).inc()
            return self.dead_letter(tp, rec, "rate_limited", f"asset {env.asset} exceeds "
                                    f"{self.cfg.per_asset_max_records_per_s:g} records per event-second on {tp.topic}")
        if self.aligner.add(env, res.payload, Position(tp.topic, tp.partition, rec.offset)):
            self.stats.aligned += 1
            m.observe_record(env.asset, kind.value, now)
        elif rec.offset <= self.book.processed.get(key, -1):
            self.stats.replayed += 1  # replayed after a restart: already accounted for before the crash
        else:
            self.stats.late += 1
            m.LATE_RECORDS.labels(topic=tp.topic).inc()
            self.dead_letter(tp, rec, "late", f"event time {env.time:.3f} is behind the watermark of asset "
                                              f"{env.asset} (allowed lateness {self.cfg.allowed_lateness_s:g} s)",
                             count_rejected=False)

    def dead_letter(self, tp: TopicPartition, rec, reason: str, detail: str, count_rejected: bool = True) -> None:
        assert self.dlq is not None, "dead letters are opened by Monitor.run"
        if count_rejected:
            self.stats.rejected += 1
        m.observe_rejected(tp.topic, reason)
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", tp.topic, tp.partition, rec.offset, reason, detail)
        self.dlq.send(tp.topic, tp.partition, rec.offset, rec.key, rec.value, rec.headers, reason, detail)

    def skip_corrupt(self, consumer, error: CorruptRecordError) -> None:
        """poll() raised because the client could not parse a record (e.g. a header name that is not
        UTF-8): it raises again on every poll and every restart. Find the record, dead-letter what is
        known of it (the client keeps no bytes of it), and seek past it."""
        where = _corrupt_position(consumer)
        if where is None or (where[0].topic, where[0].partition) not in self.book.assigned:
            raise FusionwatchError(f"the Kafka client cannot parse a fetched record and does not say which ({error}); "
                                   "inspect the input topics and skip the record with a consumer-group offset reset") from error
        tp, offset = where
        self.book.seen((tp.topic, tp.partition), offset)
        self.stats.records += 1
        self.stats.corrupt += 1
        m.RECORDS_CONSUMED.labels(topic=tp.topic).inc()
        m.CORRUPT_RECORDS.labels(topic=tp.topic).inc()
        self.dead_letter(tp, _Unreadable(offset), "corrupt_record", f"the Kafka client could not parse the record "
                                                                    f"({str(error)[:300]}); skipped")
        consumer.seek(tp, offset + 1)


class _Unreadable:
    """Stands in for a record the client could not parse: only its offset is known."""

    key = value = None
    headers: list[Any] = []

    def __init__(self, offset: int):
        self.offset = offset


def _corrupt_position(consumer) -> tuple[TopicPartition, int] | None:
    """(partition, offset) of the record a CorruptRecordError is about. kafka-python 3 raises it
    from its fetcher without naming the record; the partition's parsed fetch it was reading stays
    there, positioned at the record that failed (kafka/consumer/fetcher.py, PartitionRecords)."""
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    tp, offset = getattr(part, "topic_partition", None), getattr(part, "next_fetch_offset", None)
    if tp is None or offset is None:
        return None
    return tp, offset
