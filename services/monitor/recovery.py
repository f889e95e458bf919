"""Where each owned partition stands, and how it recovers: seek to the offsets stored in SQL on
assignment, and start again from the first record when the broker lost the partition's log.

Offsets live in SQL with the events they produced, so a partition is always resumed from there.
Two kinds of loss are detected here because the embedded broker (Tansu) reports neither: a topic
re-created under the same name (a new topic id), and a committed position past the log's end.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer, TopicPartition

from schemas.envelope import Kind
from services.monitor.batching import BatchCutter
from services.monitor.scoring import Forget, Restore, ScoreStage
from services.monitor.sink import SqlSink
from services.monitor.state import TP, PartitionBook
from streamlogic.windows import WindowAligner

log = logging.getLogger(__name__)
PAST_END_GRACE_S = 5.0  # a position past the end for longer than this is a lost log, not a stale watermark
Positions = dict[TP, tuple[int | None, int | None]]  # (high watermark, position)


class PartitionRecovery:
    def __init__(self, book: PartitionBook, aligner: WindowAligner, sink: SqlSink, stage: ScoreStage,
                 cutter: BatchCutter, kind_of: dict[str, Kind]):
        self.book, self.aligner, self.sink, self.stage, self.cutter, self.kind_of = (
            book, aligner, sink, stage, cutter, kind_of)
        self.consumer: KafkaConsumer  # opened by Monitor.run
        self._past_end: dict[TP, float] = {}  # when a position was first seen past the log end

    def positions(self) -> Positions:
        """(high watermark, position) of each assigned partition, read once per loop.

        The position is taken as the offset after the last record handled, which is exact for
        what poll returned; the consumer is asked only where that looks behind the log end or is
        unknown (after a seek), because kafka-python's position() re-validates every partition on
        each call: for 24 partitions it was the consume thread's largest cost (bench pipeline)."""
        out: Positions = {}
        for key in self.book.assigned:
            tp = TopicPartition(*key)
            try:
                hw = self.consumer.highwater(tp)
                seen = self.book.last_seen.get(key)
                pos = seen + 1 if seen is not None else None
                if pos is None or hw is None or pos < hw:  # a gap (e.g. transaction markers) or a backlog
                    pos = self.consumer.position(tp, timeout_ms=0)
            except Exception:  # noqa: BLE001 - unknown for now: treated as behind
                hw = pos = None
            out[key] = (hw, pos)
        return out

    def hold_behind(self, positions: Positions, paused: bool) -> None:
        """Tell the aligner which modalities still have unread records (see WindowAligner.hold),
        and restart partitions whose log was lost."""
        behind: dict[int | None, list[Kind]] = {}
        for (topic, part), (hw, pos) in positions.items():
            tp = TopicPartition(topic, part)
            if paused or hw is None or pos is None or pos < hw:
                behind.setdefault(part, []).append(self.kind_of[topic])
            if self.recreated((topic, part)):  # metadata refreshed after the (re)assignment
                self._restart(tp, f"{topic}[{part}] was re-created (new topic id)")
            else:
                self._check_past_end(tp, hw, pos, paused)
        self.aligner.hold(behind)

    def _check_past_end(self, tp: TopicPartition, hw: int | None, pos: int | None, paused: bool) -> None:
        """A position past the log end that persists over several fetches means the broker lost
        the partition's log (the embedded broker restarted empty; a cluster was rebuilt). Kafka
        answers OFFSET_OUT_OF_RANGE and the consumer resets itself; Tansu answers nothing, so the
        consumer would wait until the new log grows past the old offset and silently skip every
        record before it. Start the partition again from its first record instead."""
        key = (tp.topic, tp.partition)
        if paused or hw is None or pos is None or pos <= hw:
            self._past_end.pop(key, None)
            return
        since = self._past_end.setdefault(key, time.monotonic())
        if time.monotonic() - since < PAST_END_GRACE_S:  # a high watermark from an older fetch
            return
        self._restart(tp, f"{tp.topic}[{tp.partition}]: committed position {pos} is past the end of the log ({hw})")

    def _restart(self, tp: TopicPartition, why: str) -> None:
        log.error("%s: the broker lost this partition's records (e.g. the embedded broker restarted empty); "
                  "reading it again from offset 0", why)
        key = (tp.topic, tp.partition)
        self._past_end.pop(key, None)
        self.consumer.seek(tp, 0)
        self.book.rewind(key)

    def recreated(self, tp: TP) -> bool:
        """True when the topic's id changed since this process last assigned `tp`: the offsets
        stored for it count records of a log that no longer exists. (A real cluster answers
        OFFSET_OUT_OF_RANGE only when the new log is shorter; Tansu never does.)"""
        cluster = getattr(getattr(self.consumer, "_client", None), "cluster", None)
        topic_id = cluster.topic_id(tp[0]) if cluster is not None else None
        if topic_id is None:
            return False
        prior, self.book.topic_ids[tp] = self.book.topic_ids.get(tp, topic_id), topic_id
        return prior != topic_id

    def reload(self, tps: list[TopicPartition]) -> None:
        """Claim these partitions in SQL and resume each from its stored offsets and state."""
        keys = [(tp.topic, tp.partition) for tp in tps]
        self.forget_partitions({p for _, p in keys})
        stored, states = self.sink.claim(keys)
        for tp in tps:
            key = (tp.topic, tp.partition)
            self.book.last_seen.pop(key, None)
            recreated = self.recreated(key)  # remember every assigned partition's topic id
            log_id = self.book.topic_ids.get(key)
            # the stored offsets count records of another log: re-created since this process (or,
            # from the id stored with them, any process) last committed them
            old_log = key in stored and log_id is not None and (
                recreated or stored[key].log_id not in (None, str(log_id)))
            if old_log:
                log.error("%s[%d] was re-created (new topic id; e.g. the embedded broker restarted empty): "
                          "its stored offset %d belongs to the old log; reading it from offset 0",
                          tp.topic, tp.partition, stored[key].next_offset)
                self.consumer.seek(tp, 0)
                self.book.processed[key] = -1
            elif key in stored:
                self.consumer.seek(tp, stored[key].next_offset)
                self.book.processed[key] = stored[key].processed_through
            else:
                self.consumer.seek_to_beginning(tp)
                self.book.processed[key] = -1
        for st in states:
            self.aligner.restore(st.asset_id, st.partition, st.last_window_start, st.lifecycle.get("expected", []))
        self.stage.put(Restore({st.asset_id: st.lifecycle for st in states}))

    def forget_partitions(self, parts: set[int]) -> None:
        """Drop everything held in memory for these partitions (their state is reloaded from SQL
        by whoever owns them next, this member included)."""
        assets = [a for p in parts for a in self.aligner.assets(p)]
        for p in parts:
            self.aligner.drop_partition(p)
        self.cutter.drop_partitions(parts)
        if assets:
            self.stage.put(Forget(assets))
