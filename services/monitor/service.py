"""The monitor process: consume/validate → align → batch → score → sink → commit.

Two threads, one job each:
- the **consume thread** (owns the KafkaConsumer, which is not thread-safe): polls, validates with
  the contract, dead-letters rejects, rate-limits floods, aligns windows, cuts batches with a
  snapshot of the offsets they make safe to commit, pauses partitions when the pipeline is full;
- the **score thread**: scores each batch (torch releases the GIL, so decoding of the next records
  overlaps inference), runs the event lifecycle and writes events + offsets + state in one SQL
  transaction, retrying through database outages (backpressure then pauses consumption).
An outbox relay thread publishes committed event changes to fw.events at least once.

Offsets live in SQL (seek there on assignment); Kafka commits are made afterwards for lag tools only.

Rebalances: kafka-python 3 runs the group protocol on its own I/O thread. Revocation runs there
while the consume thread is blocked inside poll(), so it may change the consume state; it waits for
the batch in flight without blocking the I/O loop (heartbeats go on). Assignment completes in a
background task that can finish after poll() has returned, so it is only recorded there and applied
by the consume thread between polls.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import TopicPartition
from kafka.errors import CorruptRecordError
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.net.selector import KernelEvent
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, NotSupportedError, OperationalError, ProgrammingError, \
    StatementError

from models.inputs import WindowInputs
from schemas.envelope import Accepted, ContractLimits, DecodeOptions, Kind, decode
from schemas.events import Attribution
from services.kafka import Topics, make_consumer, make_producer
from streamlogic.event_lifecycle import EventLifecycle, ScoredWindow
from streamlogic.ratelimit import AssetRateLimiter
from schemas.errors import FusionwatchError
from services.db import redact
from services.monitor.dlq import DeadLetters
from services.monitor.sink import AssetSnapshot, CallPoint, CommitBatch, Fenced, NonFiniteValue, SqlSink, find_nonfinite
from streamlogic.windows import AlignedWindow, Position, WindowAligner
from services.observability import metrics as m
from services.settings import Settings

log = logging.getLogger(__name__)
TP = tuple[str, int]
_NOT_LIFECYCLE = ("expected", "log_memory", "adaptation")  # other parts of the committed per-asset state
PAST_END_GRACE_S = 5.0
MAX_QUEUED_BATCHES = 4  # batches cut but not yet scored: beyond this, consumption pauses
REVOKE_WAIT_S = 30.0  # a revocation waits this long for the batch in flight (a database outage)


class Scorer(Protocol):
    version: str
    decode_options: DecodeOptions

    def score(self, windows: list[WindowInputs]) -> list[Any]: ...


@dataclass
class _Batch:
    windows: list[AlignedWindow]
    offsets: dict[TP, tuple[int, int]]
    assets: dict[str, tuple[int, float, list[str]]]  # asset -> (partition, next_start, expected modalities)
    epochs: dict[TP, int]  # the sink's ownership epochs at cut time
    log_ids: dict[TP, str]  # topic ids of the logs the offsets count records of


@dataclass
class _Restore:
    states: dict[str, dict]  # asset -> lifecycle JSON


@dataclass
class _Forget:
    assets: list[str]


@dataclass
class MonitorStats:
    records: int = 0  # fetched from the input topics (each record is then exactly one of:)
    aligned: int = 0  # ... added to at least one window
    rejected: int = 0  # ... dead-lettered for a contract violation or rate limit
    late: int = 0  # ... dead-lettered as late
    replayed: int = 0  # ... already accounted for before a restart (offset <= processed_through)
    windows: int = 0
    events_opened: int = 0
    events_closed: int = 0
    commits: int = 0
    fenced: int = 0
    corrupt: int = 0  # ... records the Kafka client could not parse, skipped by offset (also in rejected)
    nonfinite: int = 0  # scored windows or states dropped for NaN/inf
    latencies: list[float] = field(default_factory=list)  # window close → committed, seconds


class Monitor:
    def __init__(self, settings: Settings, bootstrap: str, engine: Engine, scorer: Scorer,
                 topics: Topics | None = None, group_id: str | None = None, limits: ContractLimits | None = None,
                 on_change=None):
        self.settings, self.cfg = settings, settings.monitor
        self.bootstrap, self.scorer = bootstrap, scorer
        self.topics = topics or Topics.from_settings(settings.kafka)
        self.group_id = group_id or self.cfg.group_id
        self.limits = limits or ContractLimits(max_future_skew_s=self.cfg.max_future_skew_s)
        self.kind_of = {self.topics.frames: Kind.FRAME, self.topics.audio: Kind.AUDIO, self.topics.logs: Kind.LOG}
        self.sink = SqlSink(engine, self.group_id)
        # wall_clock: no record stamped ahead of the consumer's clock moves an asset's watermark
        self.aligner = WindowAligner(self.cfg.window_s, self.cfg.hop_s, self.cfg.allowed_lateness_s,
                                     self.cfg.modality_timeout_s, wall_clock=time.time)
        self.lifecycle = EventLifecycle(self.cfg.open_after, self.cfg.close_after)
        # the scorer's per-asset stream state (log memory, adaptation), committed with the rest
        self._scorer_state = hasattr(scorer, "stream_state")
        self.rate = AssetRateLimiter(self.cfg.per_asset_max_records_per_s)
        self.stats = MonitorStats()
        self.on_change = on_change  # callback(EventChange) after commit, e.g. to print events live
        self.call_centre = settings.profile == "callcenter"
        # unbounded so that control items (restore/forget) never block; batches are capped by
        # MAX_QUEUED_BATCHES through backpressure
        self._queue: queue.Queue = queue.Queue()
        self._committed: queue.Queue = queue.Queue()  # offsets the score thread made durable
        self._fenced: queue.Queue = queue.Queue()
        self._writer_error: BaseException | None = None
        self._processed: dict[TP, int] = {}  # processed_through per owned partition
        self._last_seen: dict[TP, int] = {}
        self._cut_seen: dict[TP, int] = {}
        self._pending: list[AlignedWindow] = []
        self._pending_since = 0.0
        self._last_cut = time.monotonic()
        self._thresholds: dict[str, float] = {}
        self._thresholds_at = 0.0
        self._resets: list[tuple[int, str]] = []  # pending "new normal" requests (baseline_resets rows)
        self._phases: dict[str, str] = {}  # asset -> baseline phase last reported
        self._assigned: set[TP] = set()
        self._incoming: list[list[TP]] = []  # assignments recorded by the I/O thread, not applied yet
        self._incoming_lock = threading.Lock()
        self._paused = False
        self._assignment_changed = False  # backpressure re-checks the consumer's pause set after a rebalance
        self._lag_reported = 0.0
        self._past_end: dict[TP, float] = {}  # when a position was first seen past the log end
        self._topic_ids: dict[TP, Any] = {}  # topic id when last assigned: detects re-created topics
        self.ready = threading.Event()  # model loaded and partitions assigned
        self._stop = threading.Event()  # the run's stop flag: retry loops give up when it is set
        self._failing_since: float | None = None  # monotonic time of the first failed commit of a run of them
        self._failure = ""
        self._good_state: dict[str, dict] = {}  # asset -> scorer stream state last committed (or restored)
        self.consumer = None
        self.dlq = None

    # ── consume thread ─────────────────────────────────────────────────────────────────────
    def run(self, stop: threading.Event) -> MonitorStats:
        self._stop = stop
        self.dlq = DeadLetters(make_producer(self.settings.kafka, self.bootstrap), self.topics.dlq)
        self.consumer = make_consumer(self.settings.kafka, self.bootstrap, self.group_id)
        self.consumer.subscribe(list(self.topics.inputs), listener=_RebalanceListener(self))
        writer = threading.Thread(target=self._score_loop, name="fw-score", daemon=True)
        writer.start()
        try:
            while not stop.is_set():
                if self._writer_error:
                    raise self._writer_error
                self._drain_feedback()
                try:
                    polled = self.consumer.poll(timeout_ms=50, max_records=self.settings.kafka.max_poll_records)
                except CorruptRecordError as e:  # the client cannot parse a record: skip it, never stop
                    self._skip_corrupt(e)
                    continue
                # records fetched before an assignment was applied were read from Kafka's position,
                # not ours: they are read again after the seek to the stored offset
                fresh = self._apply_assignments()
                now = time.time()
                for tp, records in polled.items():
                    if (tp.topic, tp.partition) not in fresh:
                        for rec in records:
                            self._handle(tp, rec, now)
                positions = self._positions()
                self._hold_behind(positions)
                self._pending.extend(self.aligner.ready())
                self._maybe_cut()
                self._backpressure()
                self._report_lag(positions)
            self._shutdown(writer)
        except BaseException:
            self._queue.put(None)
            raise
        finally:
            self.consumer.close(autocommit=False)
            self.dlq.close()
        return self.stats

    def _handle(self, tp: TopicPartition, rec, now: float) -> None:
        key: TP = (tp.topic, tp.partition)
        if key not in self._assigned:
            return
        self._last_seen[key] = rec.offset
        kind = self.kind_of[tp.topic]
        self.stats.records += 1
        m.RECORDS_CONSUMED.labels(topic=tp.topic).inc()
        res = decode(kind, rec.key, rec.value, rec.headers, now, self.limits, self.scorer.decode_options)
        if not isinstance(res, Accepted):
            return self._dead_letter(tp, rec, res.reason, res.detail)
        env = res.envelope
        if not self.rate.allow((env.asset, kind), env.time, now):
            m.RATE_LIMITED_RECORDS.labels(asset=m.asset_labels(env.asset)).inc()
            return self._dead_letter(tp, rec, "rate_limited", f"asset {env.asset} exceeds "
                                     f"{self.cfg.per_asset_max_records_per_s:g} records per event-second on {tp.topic}")
        if self.aligner.add(env, res.payload, Position(tp.topic, tp.partition, rec.offset)):
            self.stats.aligned += 1
            m.observe_record(env.asset, kind.value, now)
        elif rec.offset <= self._processed.get(key, -1):
            self.stats.replayed += 1  # replayed after a restart: already accounted for before the crash
        else:
            self.stats.late += 1
            m.LATE_RECORDS.labels(topic=tp.topic).inc()
            self._dead_letter(tp, rec, "late", f"event time {env.time:.3f} is behind the watermark of asset "
                                               f"{env.asset} (allowed lateness {self.cfg.allowed_lateness_s:g} s)",
                              count_rejected=False)

    def _dead_letter(self, tp: TopicPartition, rec, reason: str, detail: str, count_rejected: bool = True) -> None:
        if count_rejected:
            self.stats.rejected += 1
        m.observe_rejected(tp.topic, reason)
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", tp.topic, tp.partition, rec.offset, reason, detail)
        self.dlq.send(tp.topic, tp.partition, rec.offset, rec.key, rec.value, rec.headers, reason, detail)

    def _skip_corrupt(self, error: CorruptRecordError) -> None:
        """poll() raised because the client could not parse a record (e.g. a header name that is not
        UTF-8): it raises again on every poll and every restart. Find the record, dead-letter what is
        known of it (the client keeps no bytes of it), and seek past it."""
        where = _corrupt_position(self.consumer)
        if where is None or (where[0].topic, where[0].partition) not in self._assigned:
            raise FusionwatchError(f"the Kafka client cannot parse a fetched record and does not say which ({error}); "
                                   "inspect the input topics and skip the record with a consumer-group offset reset") from error
        tp, offset = where
        key: TP = (tp.topic, tp.partition)
        self._last_seen[key] = offset
        self.stats.records += 1
        self.stats.corrupt += 1
        m.RECORDS_CONSUMED.labels(topic=tp.topic).inc()
        m.CORRUPT_RECORDS.labels(topic=tp.topic).inc()
        self._dead_letter(tp, _Unreadable(offset), "corrupt_record", f"the Kafka client could not parse the record "
                                                                      f"({str(error)[:300]}); skipped")
        self.consumer.seek(tp, offset + 1)

    def _maybe_cut(self, force: bool = False) -> None:
        """Cut a batch: enough windows, waited long enough, or offsets to move on."""
        now = time.monotonic()
        if self._pending and not self._pending_since:
            self._pending_since = now
        # dynamic batching: while the score stage is busy, windows gather into the next batch
        # (up to max_batch) instead of queueing as many small ones, each with its own SQL commit
        busy = self._queue.unfinished_tasks > 0
        due = (len(self._pending) >= self.cfg.max_batch
               or (self._pending and not busy and now - self._pending_since >= self.cfg.max_wait_ms / 1000)
               or (not self._pending and now - self._last_cut >= 1.0 and self._last_seen != self._cut_seen))
        if not (due or force) or (self._queue_full() and not force):
            return
        low = self.aligner.low_water()
        offsets = {}
        for tp in self._assigned:
            if tp not in self._last_seen:
                continue
            nxt = low.get(tp, self._last_seen[tp] + 1)
            self._processed[tp] = max(self._processed.get(tp, -1), self._last_seen[tp])
            offsets[tp] = (nxt, self._processed[tp])
        assets = {}
        for a in {w.inputs.asset for w in self._pending}:  # only these changed since the last cut
            nxt, expected = self.aligner.snapshot(a)
            if nxt is not None:
                part = self.aligner._assets[a].partition
                assets[a] = (part if part is not None else -1, nxt, expected)
        windows, self._pending, self._pending_since = self._pending, [], 0.0
        self._cut_seen = dict(self._last_seen)
        log_ids = {tp: str(self._topic_ids[tp]) for tp in offsets if self._topic_ids.get(tp) is not None}
        self._queue.put(_Batch(windows, offsets, assets, self.sink.epochs(self._assigned), log_ids))
        self._last_cut = now
        if not self.cfg.overlap and not force:
            self._wait_writer_idle()  # naive mode: consume, then score and commit, strictly in turn

    def _backpressure(self) -> None:
        """Pause every partition while the score stage is full; resume when it drains.

        Reconciled with the consumer's own pause set each time rather than a flag: kafka-python 3
        keeps a partition's pause across a rebalance when the partition stays assigned, so a
        pause made before a revocation outlived the resume that ran while nothing was assigned
        (found by the slow-database fault scenario: the remaining member stalled for good)."""
        full = self._queue_full() or len(self._pending) > self.cfg.max_pending_windows \
            or self.aligner.buffered() > 40 * self.cfg.max_pending_windows
        if full:
            paused = self.consumer.paused() if self._paused else set()
            todo = [tp for tp in (TopicPartition(*k) for k in self._assigned) if tp not in paused]
            if todo:
                self.consumer.pause(*todo)
        elif self._paused or self._assignment_changed:
            paused = self.consumer.paused()
            if paused:
                self.consumer.resume(*paused)
        self._assignment_changed = False
        if full != self._paused:
            self._paused = full
            m.PAUSED_PARTITIONS.set(len(self._assigned) if full else 0)

    def _queue_full(self) -> bool:
        return self._queue.qsize() >= MAX_QUEUED_BATCHES

    def _drain_feedback(self) -> None:
        committed = {}
        while not self._committed.empty():
            committed.update(self._committed.get_nowait())
        if committed:
            # Kafka's own group offsets are for lag tools only; the truth is in SQL.
            offsets = {TopicPartition(*tp): OffsetAndMetadata(o, "", -1) for tp, o in committed.items()
                       if tp in self._assigned}
            if offsets:
                try:
                    self.consumer.commit_async(offsets)
                except Exception as e:  # lag reporting must never stop scoring
                    log.debug("kafka commit for lag monitoring failed: %s", e)
        while not self._fenced.empty():
            tps = self._fenced.get_nowait()
            self.stats.fenced += 1
            log.warning("fenced on %s: another member owns it now; reloading from the database", tps)
            # an asset's state spans partition p of every input topic (co-partitioned): reload and
            # re-seek all of them, not only the topics the fenced batch happened to hold offsets
            # of — a topic left at its old position would replay records the restored state has
            # already passed, and dead-letter them as late
            parts = {p for _, p in tps}
            self._reload([TopicPartition(*tp) for tp in sorted(self._assigned) if tp[1] in parts])

    def _positions(self) -> dict[TP, tuple[int | None, int | None]]:
        """(high watermark, position) of each assigned partition, read once per loop.

        The position is taken as the offset after the last record handled, which is exact for
        what poll returned; the consumer is asked only where that looks behind the log end or is
        unknown (after a seek), because kafka-python's position() re-validates every partition on
        each call: for 24 partitions it was the consume thread's largest cost (bench pipeline)."""
        out: dict[TP, tuple[int | None, int | None]] = {}
        for key in self._assigned:
            tp = TopicPartition(*key)
            try:
                hw = self.consumer.highwater(tp)
                seen = self._last_seen.get(key)
                pos = seen + 1 if seen is not None else None
                if pos is None or hw is None or pos < hw:  # a gap (e.g. transaction markers) or a backlog
                    pos = self.consumer.position(tp, timeout_ms=0)
            except Exception:
                hw = pos = None
            out[key] = (hw, pos)
        return out

    def _hold_behind(self, positions: dict[TP, tuple[int | None, int | None]]) -> None:
        """Tell the aligner which modalities still have unread records (see WindowAligner.hold)."""
        behind: dict[int, list[Kind]] = {}
        for (topic, part), (hw, pos) in positions.items():
            tp = TopicPartition(topic, part)
            if self._paused or hw is None or pos is None or pos < hw:
                behind.setdefault(part, []).append(self.kind_of[topic])
            if self._recreated((topic, part)):  # metadata refreshed after the (re)assignment
                self._restart_partition(tp, f"{topic}[{part}] was re-created (new topic id)")
            else:
                self._check_past_end(tp, hw, pos)
        self.aligner.hold(behind)

    def _check_past_end(self, tp: TopicPartition, hw: int | None, pos: int | None) -> None:
        """A position past the log end that persists over several fetches means the broker lost
        the partition's log (the embedded broker restarted empty; a cluster was rebuilt). Kafka
        answers OFFSET_OUT_OF_RANGE and the consumer resets itself; Tansu answers nothing, so the
        consumer would wait until the new log grows past the old offset and silently skip every
        record before it. Start the partition again from its first record instead."""
        key = (tp.topic, tp.partition)
        if self._paused or hw is None or pos is None or pos <= hw:
            self._past_end.pop(key, None)
            return
        since = self._past_end.setdefault(key, time.monotonic())
        if time.monotonic() - since < PAST_END_GRACE_S:  # a high watermark from an older fetch
            return
        self._restart_partition(tp, f"{tp.topic}[{tp.partition}]: committed position {pos} is past the end "
                                    f"of the log ({hw})")

    def _restart_partition(self, tp: TopicPartition, why: str) -> None:
        log.error("%s: the broker lost this partition's records (e.g. the embedded broker restarted empty); "
                  "reading it again from offset 0", why)
        key = (tp.topic, tp.partition)
        self._past_end.pop(key, None)
        self.consumer.seek(tp, 0)
        self._processed[key] = -1
        self._last_seen.pop(key, None)

    def _report_lag(self, positions: dict[TP, tuple[int | None, int | None]]) -> None:
        now = time.monotonic()
        if now - self._lag_reported < 0.5:  # a gauge scraped every few seconds: no need for 20 Hz
            return
        self._lag_reported = now
        for (topic, part), (hw, pos) in positions.items():
            m.set_lag(topic, part, hw, pos)

    # ── rebalance ──────────────────────────────────────────────────────────────────────────
    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """I/O thread, consume thread blocked in poll(): let the batch in flight commit, then
        drop everything held for these partitions (their next owner starts from SQL)."""
        tps = {(tp.topic, tp.partition) for tp in revoked}
        with self._incoming_lock:  # assignments of these partitions not applied yet are moot
            self._incoming = [[tp for tp in a if tp not in tps] for a in self._incoming]
        deadline = time.monotonic() + REVOKE_WAIT_S
        while self._writer_busy() and not self._writer_error and time.monotonic() < deadline:
            await KernelEvent("_sleep", 0.01)  # the I/O loop's own sleep: heartbeats keep flowing
        if self._writer_busy():
            log.warning("revoking partitions with a batch still uncommitted after %.0f s; "
                        "its commit will be fenced", REVOKE_WAIT_S)
        parts = {p for _, p in tps}
        self._forget_partitions(parts)
        self._assigned -= tps
        self.sink.release(list(tps))
        m.forget_partitions(list(tps))
        log.info("partitions revoked: %s", sorted(parts))

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """I/O thread, possibly after poll() returned: record only (see the module docstring)."""
        with self._incoming_lock:
            self._incoming.append([(tp.topic, tp.partition) for tp in assigned])

    def _apply_assignments(self) -> set[TP]:
        """Consume thread: take on the partitions the group gave us since the last poll."""
        with self._incoming_lock:
            incoming, self._incoming = self._incoming, []
        fresh = {tp for a in incoming for tp in a} - self._assigned
        if fresh:
            self._assignment_changed = True
            self._assigned |= fresh
            self._reload([TopicPartition(*tp) for tp in sorted(fresh)])
            log.info("partitions assigned: %s", sorted({p for _, p in fresh}))
        if incoming:
            self.ready.set()
        return fresh

    def _reload(self, tps: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in tps]
        parts = {p for _, p in keys}
        self._forget_partitions(parts)
        stored, states = self.sink.claim(keys)
        for tp in tps:
            key = (tp.topic, tp.partition)
            self._last_seen.pop(key, None)
            recreated = self._recreated(key)  # remember every assigned partition's topic id
            log_id = self._topic_ids.get(key)
            # the stored offsets count records of another log: re-created since this process (or,
            # from the id stored with them, any process) last committed them
            old_log = key in stored and log_id is not None and (
                recreated or stored[key].log_id not in (None, str(log_id)))
            if old_log:
                log.error("%s[%d] was re-created (new topic id; e.g. the embedded broker restarted empty): "
                          "its stored offset %d belongs to the old log; reading it from offset 0",
                          tp.topic, tp.partition, stored[key].next_offset)
                self.consumer.seek(tp, 0)
                self._processed[key] = -1
            elif key in stored:
                self.consumer.seek(tp, stored[key].next_offset)
                self._processed[key] = stored[key].processed_through
            else:
                self.consumer.seek_to_beginning(tp)
                self._processed[key] = -1
        for st in states:
            self.aligner.restore(st.asset_id, st.partition, st.last_window_start, st.lifecycle.get("expected", []))
        self._queue.put(_Restore({st.asset_id: st.lifecycle for st in states}))

    def _recreated(self, tp: TP) -> bool:
        """True when the topic's id changed since this process last assigned `tp`: the offsets
        stored for it count records of a log that no longer exists. (A real cluster answers
        OFFSET_OUT_OF_RANGE only when the new log is shorter; Tansu never does.)"""
        cluster = getattr(getattr(self.consumer, "_client", None), "cluster", None)
        topic_id = cluster.topic_id(tp[0]) if cluster is not None else None
        if topic_id is None:
            return False
        prior, self._topic_ids[tp] = self._topic_ids.get(tp, topic_id), topic_id
        return prior != topic_id

    def _forget_partitions(self, parts: set[int]) -> None:
        assets = [a for p in parts for a in self.aligner.assets(p)]
        for p in parts:
            self.aligner.drop_partition(p)
        self._pending = [w for w in self._pending if w.partition not in parts]
        if assets:
            self._queue.put(_Forget(assets))

    def _writer_busy(self) -> bool:
        return bool(self._queue.unfinished_tasks or not self._queue.empty())

    def _wait_writer_idle(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._writer_busy() and time.monotonic() < deadline:
            if self._writer_error:
                return
            time.sleep(0.01)

    def _shutdown(self, writer: threading.Thread) -> None:
        """SIGTERM: commit what is scored, leave the group. Open windows are simply not committed:
        the next owner rebuilds them from the stored offsets."""
        self._pending.extend(self.aligner.ready())
        self._maybe_cut(force=True)
        self._queue.put(None)
        writer.join(timeout=60)
        self._drain_feedback()

    # ── score thread ───────────────────────────────────────────────────────────────────────
    def _score_loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    if isinstance(item, _Restore):
                        self._good_state.update(item.states)
                        for asset, state in item.states.items():
                            self.lifecycle.restore(asset, {k: v for k, v in state.items() if k not in _NOT_LIFECYCLE})
                            if self._scorer_state:
                                self.scorer.restore_stream(asset, state)
                    elif isinstance(item, _Forget):
                        for asset in item.assets:
                            self._forget(asset)
                    else:
                        self._score_and_commit(item)
                finally:
                    self._queue.task_done()
        except BaseException as e:  # surface in the consume thread, which stops the service
            log.exception("score/sink stage failed")
            self._writer_error = e

    def _score_and_commit(self, batch: _Batch) -> None:
        self._refresh_thresholds()
        resets = self._apply_baseline_resets(batch)
        changes = []
        calls: dict[str, list[CallPoint]] = {}
        for i in range(0, len(batch.windows), self.cfg.max_batch):
            chunk = batch.windows[i: i + self.cfg.max_batch]
            t0 = time.perf_counter()
            scores = self.scorer.score([w.inputs for w in chunk])
            present = {k: sum(bool(s.present.get(k)) for s in scores) for k in ("frames", "audio", "logs")}
            m.observe_batch(present, len(chunk), [s.score for s in scores], time.perf_counter() - t0)
            if self._scorer_state:
                for asset in {w.inputs.asset for w in chunk}:
                    m.set_adaptation(asset, self.scorer.adaptation(asset))
                    self._report_baseline(asset, self.scorer.baseline_phase(asset))
            for w, s in zip(chunk, scores):
                where = find_nonfinite(s)
                if where:  # a NaN must not reach the lifecycle, the state or SQL: drop the window, count it
                    self._drop_nonfinite("window", w.inputs.asset, f"window {w.inputs.start:.0f}: score field {where}")
                    continue
                changes.extend(self.lifecycle.update(self._scored_window(w, s)))
                if self.call_centre and s.frustration is not None and s.sentiment:
                    calls.setdefault(w.inputs.asset, []).append(
                        CallPoint(w.inputs.end, s.sentiment, float(s.frustration), w.inputs.start))
        snapshot = CommitBatch(changes=changes, calls=calls, offsets=batch.offsets, assets={
            a: AssetSnapshot(part, nxt, expected, self._finite_state(a))
            for a, (part, nxt, expected) in batch.assets.items()}, epochs=batch.epochs, log_ids=batch.log_ids,
            baseline_resets=resets)
        self.dlq.flush()  # dead letters must be durable before the offsets that skip them
        if not self._commit_with_retry(snapshot):
            return  # stopping: nothing of this batch was committed; its records are read again
        self._good_state.update({a: snap.lifecycle for a, snap in snapshot.assets.items()})
        now = time.time()
        for w in batch.windows:
            lat = now - w.closed_at
            m.WINDOW_DECISION_LATENCY.observe(lat)
            self.stats.latencies.append(lat)
        del self.stats.latencies[:-100_000]
        self.stats.windows += len(batch.windows)
        self.stats.commits += 1
        for c in changes:
            if c.change == "opened":
                self.stats.events_opened += 1
                m.event_opened(c.data.severity, c.data.kind)
            elif c.change == "closed":
                self.stats.events_closed += 1
                m.event_closed(c.data.severity, c.data.kind)
            if self.on_change:
                self.on_change(c)
        self._committed.put({tp: o for tp, (o, _) in batch.offsets.items()})

    def _asset_state(self, asset: str) -> dict:
        """What is committed per asset besides the stream position: the event lifecycle and the
        scorer's stream state (models/logmemory.py, models/adaptation.py)."""
        state = copy.deepcopy(self.lifecycle.state(asset))
        if self._scorer_state:
            state.update(self.scorer.stream_state(asset))
        return state

    def _finite_state(self, asset: str) -> dict:
        """The asset's state to commit; a non-finite one (a model statistic overflowed) is never
        written: the scorer's stream state goes back to the last committed one, and the asset
        keeps scoring from there."""
        state = self._asset_state(asset)
        where = find_nonfinite(state)
        if not where:
            return state
        self._drop_nonfinite("state", asset, f"state field {where}")
        good = self._good_state.get(asset)
        if self._scorer_state:
            if good is not None:
                self.scorer.restore_stream(asset, good)
            else:
                self.scorer.forget_stream(asset)
        state = self._asset_state(asset)
        if find_nonfinite(state):  # the lifecycle itself (it only ever sees finite windows)
            raise NonFiniteValue(f"the event lifecycle state of asset {asset} is not finite after a roll-back")
        return state

    def _drop_nonfinite(self, what: str, asset: str, detail: str) -> None:
        self.stats.nonfinite += 1
        m.NONFINITE_DROPPED.labels(what=what).inc()
        log.warning("asset %s: %s is NaN or infinite; dropped (not scored, not stored)", asset, detail)

    def commit_health(self) -> tuple[bool, str]:
        """Readiness: False once SQL commits have kept failing for `commit_failing_unready_s`."""
        since = self._failing_since
        if since is None or time.monotonic() - since < self.cfg.commit_failing_unready_s:
            return True, ""
        return False, f"SQL commits failing for {time.monotonic() - since:.0f} s ({self._failure})"

    def _forget(self, asset: str) -> None:
        self._good_state.pop(asset, None)
        self.lifecycle.forget(asset)
        if self._scorer_state:
            self.scorer.forget_stream(asset)

    def _commit_with_retry(self, batch: CommitBatch) -> bool:
        """Commit, retrying through outages; False when the stop flag ended the retries (nothing
        of the batch committed: its records are read again by whoever owns them next)."""
        delay = 0.2
        while True:
            if self._stop.is_set() and self._failing_since is not None:
                return False  # stopping during an outage: no new attempt (each may wait a connect timeout)
            try:
                with_sql = self.sink.commit(batch)
                m.SQL_WRITE.observe(with_sql)
                self._failing_since = None
                return True
            except Fenced as f:
                # drop this batch: its windows are re-done by whoever owns the partition now
                if not f.stale:  # a stale batch's partitions were already claimed again or released
                    self._fenced.put([tp for tp in batch.offsets])
                for asset in batch.assets:
                    self._forget(asset)
                log.warning("%s", f)
                return True
            except (NonFiniteValue, DataError, ProgrammingError, NotSupportedError) as e:
                # the same batch fails the same way on every try: stop instead of retrying forever
                m.SQL_WRITE_FAILURES.inc()
                raise FusionwatchError(
                    f"the database refused a batch for a reason retrying cannot fix: {self._db_error(e)}. "
                    "The monitor stops rather than loop; please report this with the log above") from e
            except (OperationalError, IntegrityError, DBAPIError) as e:
                m.SQL_WRITE_FAILURES.inc()
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self._failure = self._db_error(e)
                log.warning("database write failed (%s); retrying in %.1f s — consumption pauses meanwhile",
                            self._failure, delay)
                if self._stop.wait(delay):  # SIGTERM inside an outage: give the batch up, exit now
                    log.warning("stopping with a batch uncommitted (the database is failing); its records will "
                                "be read again")
                    return False
                delay = min(delay * 2, 5.0)
            except StatementError as e:  # raised before the database saw it (e.g. a value JSON cannot hold)
                m.SQL_WRITE_FAILURES.inc()
                raise FusionwatchError(f"a batch could not be written: {self._db_error(e)}; "
                                       "the monitor stops rather than loop; please report this") from e

    def _db_error(self, e: BaseException) -> str:
        text = str(getattr(e, "orig", None) or e).strip().splitlines()
        return redact(text[0][:200] if text else type(e).__name__, self.sink.engine.url)

    def _refresh_thresholds(self) -> None:
        """Threshold overrides and operators' "new normal" requests, read from SQL every 10 s."""
        if time.monotonic() - self._thresholds_at < 10:
            return
        try:
            self._thresholds = self.sink.load_thresholds()
            self._resets = self.sink.pending_baseline_resets()
        except (OperationalError, DBAPIError):
            pass  # keep the last known overrides during an outage
        self._thresholds_at = time.monotonic()

    def _report_baseline(self, asset: str, phase) -> None:
        """Metrics of the asset's baseline, and one log line when it starts learning or starts watching."""
        m.set_baseline(asset, phase.phase == "learning", phase.seen)
        if self._phases.get(asset) == phase.phase or self.call_centre:
            self._phases[asset] = phase.phase
            return
        self._phases[asset] = phase.phase
        if phase.phase == "learning":
            log.info("%s: learning its own normal from its first windows (%d so far); until then only the guard "
                     "threshold opens an event", asset, phase.seen)
        else:
            log.info("%s: baseline learned from %d windows; watching", asset, phase.seen)

    def _apply_baseline_resets(self, batch: _Batch) -> list[int]:
        """Restart the baseline of each asset an operator marked "new normal" whose state this batch
        commits: the request is marked applied in the same transaction as the restarted state."""
        if not self._resets or not self._scorer_state:
            return []
        applied, left = [], []
        for rid, asset in self._resets:
            if asset in batch.assets:
                self.scorer.rebaseline(asset)
                applied.append(rid)
                log.info("asset %s: new normal requested (reset #%d): learning its baseline again", asset, rid)
            else:
                left.append((rid, asset))
        self._resets = left
        return applied

    def _scored_window(self, w: AlignedWindow, s) -> ScoredWindow:
        win = w.inputs
        guard = getattr(s, "guard", 1.0)  # the guard threshold's factor while the asset learns its baseline
        score, kind = float(s.score), s.kind
        threshold = self._thresholds.get(win.asset, s.threshold / guard) * guard
        if self.call_centre and s.frustration is not None:
            # a call escalates on sustained frustration, not on "unusual" audio
            score, threshold, kind = float(s.frustration), self.cfg.escalation_threshold, "escalation"
        m.set_threshold(win.asset, threshold)
        attribution = Attribution(
            modality_shares=s.modality_shares, cross_modal_share=s.cross_modal_share,
            top_frames=[_iso(t) for t in s.top_frame_times],
            frame_region=list(s.frame_region) if s.frame_region else None,
            audio_band_hz=list(s.audio_band_hz) if s.audio_band_hz else None,
            top_log_lines=list(s.top_log_lines), log_codes=list(s.log_codes))
        serials = sorted({p.serial for _, p in win.logs if p.serial})
        codes = {p.code for _, p in win.logs if p.code}
        attribution.log_codes = sorted(set(attribution.log_codes) | codes)
        lines = [p.msg for _, p in win.logs if p.code or (p.level or "").upper() in ("WARN", "WARNING", "ERROR", "CRITICAL")]
        if self.call_centre:  # transcript lines are the evidence of a call
            lines = [f"{p.speaker}: {p.msg}" if p.speaker else p.msg for _, p in win.logs]
        return ScoredWindow(asset=win.asset, start=win.start, end=win.end, score=score, threshold=threshold,
                            model_version=self.scorer.version, attribution=attribution, kind=kind,
                            log_lines=lines[:10], serials=serials, evidence=w.evidence,
                            learning=not self.call_centre and getattr(s, "baseline", "watching") == "learning",
                            judged=self.call_centre or getattr(s, "judged", True))


class _Unreadable:
    """Stands in for a record the client could not parse: only its offset is known."""

    key = value = None
    headers: list = []

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


def _iso(t: float) -> str:
    from schemas.envelope import format_time

    return format_time(t)


class _RebalanceListener(AsyncConsumerRebalanceListener):
    """Async, so that waiting for the batch in flight does not stop the I/O loop's heartbeats."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    async def on_partitions_revoked(self, revoked):
        await self.monitor.on_revoked(list(revoked))

    async def on_partitions_lost(self, lost):  # evicted (e.g. a zombie): the same cleanup
        await self.monitor.on_revoked(list(lost))

    async def on_partitions_assigned(self, assigned):
        self.monitor.on_assigned(list(assigned))
