"""The monitor process: consume/validate → align → batch → score → sink → commit.

`Monitor` wires small parts, each with one job:
- RecordIntake (intake.py): decode with the contract, rate-limit, align; dead-letter the rest;
- BatchCutter (batching.py): closed windows → batches with the offsets they make safe to commit;
- Backpressure (backpressure.py): pause partitions while the score stage is full;
- PartitionRecovery (recovery.py): resume from SQL on assignment, restart lost logs;
- Rebalancer (rebalance.py): partitions revoked and assigned by the group;
- ScoreStage (scoring.py), on its own thread: score, event lifecycle, one SQL commit per batch
  through the Committer (committer.py), which retries through database outages.
The consume thread owns the KafkaConsumer (not thread-safe) and the PartitionBook (state.py).
An outbox relay thread publishes committed event changes to fw.events at least once.

Offsets live in SQL (seek there on assignment); Kafka commits are made afterwards for lag tools only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CorruptRecordError
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Engine

from schemas.envelope import ContractLimits, Kind
from services.kafka import Topics, make_consumer, make_producer
from services.monitor.backpressure import Backpressure
from services.monitor.batching import BatchCutter
from services.monitor.committer import Committer
from services.monitor.dlq import DeadLetters
from services.monitor.intake import RecordIntake
from services.monitor.rebalance import RebalanceListener, Rebalancer
from services.monitor.recovery import PartitionRecovery, Positions
from services.monitor.scoring import Scorer, ScoreStage
from services.monitor.sink import SqlSink
from services.monitor.state import PartitionBook, PipelineGauges
from services.observability import metrics as m
from services.profiles import get_profile
from services.settings import Settings
from streamlogic.event_lifecycle import EventChange
from streamlogic.windows import WindowAligner

log = logging.getLogger(__name__)
LAG_REPORT_S = 0.5  # a gauge scraped every few seconds: no need to set it at poll rate


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
                 on_change: Callable[[EventChange], None] | None = None):
        self.settings, self.cfg = settings, settings.monitor
        self.bootstrap, self.scorer = bootstrap, scorer
        self.topics = topics or Topics.from_settings(settings.kafka)
        self.group_id = group_id or self.cfg.group_id
        self.kind_of = {self.topics.frames: Kind.FRAME, self.topics.audio: Kind.AUDIO, self.topics.logs: Kind.LOG}
        self.sink = SqlSink(engine, self.group_id)
        self.stats = MonitorStats()
        self.book = PartitionBook()
        self.ready = threading.Event()  # model loaded and partitions assigned
        self._stop = threading.Event()  # the run's stop flag: commit retries give up when it is set
        # wall_clock: no record stamped ahead of the consumer's clock moves an asset's watermark
        self.aligner = WindowAligner(self.cfg.window_s, self.cfg.hop_s, self.cfg.allowed_lateness_s,
                                     self.cfg.modality_timeout_s, wall_clock=time.time,
                                     stop_after_s=self.cfg.stream_stopped_s)
        limits = limits or ContractLimits(max_future_skew_s=self.cfg.max_future_skew_s)
        decode_options = scorer.decode_options
        if decode_options.channel_names:  # the model hears a call's channels apart: the operator says whose is which
            decode_options = replace(decode_options, channel_names=tuple(self.cfg.call_channels))
        self.intake = RecordIntake(self.cfg, self.kind_of, limits, decode_options, self.aligner, self.book,
                                   self.stats)
        self.committer = Committer(self.sink, self._stop, self.cfg.commit_failing_unready_s)
        self.stage = ScoreStage(self.cfg, scorer, self.sink, self.committer, self.stats,
                                flush_dead_letters=self._flush_dead_letters,
                                policy=get_profile(settings.profile).window_policy(self.cfg), on_change=on_change)
        self.cutter = BatchCutter(self.cfg, self.aligner, self.book)
        self.backpressure = Backpressure()
        self.recovery = PartitionRecovery(self.book, self.aligner, self.sink, self.stage, self.cutter, self.kind_of)
        self.rebalancer = Rebalancer(self.book, self.stage, self.recovery, self.sink, self.backpressure, self.ready)
        self._lag_reported = 0.0
        self.consumer: KafkaConsumer  # opened by run()

    # ── consume thread ─────────────────────────────────────────────────────────────────────
    def run(self, stop: threading.Event) -> MonitorStats:
        self._stop = self.committer.stop = stop
        # not idempotent: fw.dlq is at-least-once, and a broker restart must not stop the copies
        dlq_producer = make_producer(self.settings.kafka, self.bootstrap, idempotent=False)
        dlq = self.intake.dlq = DeadLetters(dlq_producer, self.topics.dlq)
        self.consumer = self.recovery.consumer = make_consumer(self.settings.kafka, self.bootstrap, self.group_id)
        self.consumer.subscribe(list(self.topics.inputs), listener=RebalanceListener(self.rebalancer))
        scorer_thread = threading.Thread(target=self.stage.run, name="fw-score", daemon=True)
        scorer_thread.start()
        try:
            while not stop.is_set():
                if self.stage.error:
                    raise self.stage.error
                self.drain_feedback()
                try:
                    polled = self.consumer.poll(timeout_ms=50, max_records=self.settings.kafka.max_poll_records)
                except CorruptRecordError as e:  # the client cannot parse a record: skip it, never stop
                    self.intake.skip_corrupt(self.consumer, e)
                    continue
                # records fetched before an assignment was applied were read from Kafka's position,
                # not ours: they are read again after the seek to the stored offset
                fresh = self.rebalancer.apply()
                now = time.time()
                for tp, records in polled.items():
                    if (tp.topic, tp.partition) not in fresh:
                        for rec in records:
                            self.intake.handle(tp, rec, now)
                positions = self.recovery.positions()
                self.recovery.hold_behind(positions, self.backpressure.paused)
                self.cutter.add(self.aligner.ready())
                self.cutter.add_stopped(self.aligner.stopped())
                self._cut()
                self.backpressure.apply(self.consumer, self.book.assigned, self._full())
                self._report_lag(positions)
            self._shutdown(scorer_thread)
        except BaseException:
            self.stage.put(None)
            raise
        finally:
            self.consumer.close(autocommit=False)
            dlq.close()
        return self.stats

    def _cut(self, force: bool = False) -> None:
        batch = self.cutter.cut(self.sink.epochs, scoring=self.stage.scoring(), full=self.stage.full(), force=force)
        if batch is None:
            return
        self.stage.put(batch)
        if not self.cfg.overlap and not force:
            self.stage.wait_idle()  # naive mode: consume, then score and commit, strictly in turn

    def _full(self) -> bool:
        return (self.stage.full() or len(self.cutter.pending) > self.cfg.max_pending_windows
                or self.aligner.buffered() > 40 * self.cfg.max_pending_windows)

    def _flush_dead_letters(self) -> None:
        if self.intake.dlq is not None:
            self.intake.dlq.flush()

    def drain_feedback(self) -> None:
        """Take the score stage's feedback: offsets made durable (committed to Kafka for lag tools
        only; the truth is in SQL) and fenced partitions (reloaded from SQL)."""
        committed = {}
        while not self.stage.committed.empty():
            committed.update(self.stage.committed.get_nowait())
        if committed:
            offsets = {TopicPartition(*tp): OffsetAndMetadata(o, "", -1) for tp, o in committed.items()
                       if tp in self.book.assigned}
            if offsets:
                try:
                    self.consumer.commit_async(offsets)
                except Exception as e:  # noqa: BLE001 - lag reporting must never stop scoring
                    log.debug("kafka commit for lag monitoring failed: %s", e)
        while not self.stage.fenced.empty():
            tps = self.stage.fenced.get_nowait()
            self.stats.fenced += 1
            log.warning("fenced on %s: another member owns it now; reloading from the database", tps)
            # an asset's state spans partition p of every input topic (co-partitioned): reload and
            # re-seek all of them, not only the topics the fenced batch happened to hold offsets
            # of — a topic left at its old position would replay records the restored state has
            # already passed, and dead-letter them as late
            parts = {p for _, p in tps}
            self.recovery.reload([TopicPartition(*tp) for tp in sorted(self.book.assigned) if tp[1] in parts])

    def _report_lag(self, positions: Positions) -> None:
        now = time.monotonic()
        if now - self._lag_reported < LAG_REPORT_S:
            return
        self._lag_reported = now
        for (topic, part), (hw, pos) in positions.items():
            m.set_lag(topic, part, hw, pos)

    def _shutdown(self, scorer_thread: threading.Thread) -> None:
        """SIGTERM: commit what is scored, leave the group. Open windows are simply not committed:
        the next owner rebuilds them from the stored offsets."""
        self.cutter.add(self.aligner.ready())
        self._cut(force=True)
        self.stage.put(None)
        scorer_thread.join(timeout=60)
        self.drain_feedback()

    # ── for the runner, benchmarks and tests ───────────────────────────────────────────────
    def commit_health(self) -> tuple[bool, str]:
        """Readiness: False once SQL commits have kept failing for `commit_failing_unready_s`."""
        return self.committer.health()

    def gauges(self) -> PipelineGauges:
        return PipelineGauges(assigned=sorted(self.book.assigned), incoming=self.rebalancer.pending(),
                              paused=self.backpressure.paused, buffered=self.aligner.buffered(),
                              pending=len(self.cutter.pending), queued=self.stage.work.qsize(),
                              in_flight=self.stage.work.unfinished_tasks)
