"""The score stage: its own thread scores each batch, runs the event lifecycle and commits
events + offsets + per-asset state in one SQL transaction.

torch releases the GIL, so the consume thread decodes the next records while a batch is scored.
Work arrives on a queue, in order: batches to score, and the restore / forget orders that the
consume thread issues when partitions move, so the stage never scores an asset whose state is
stale. The stage's feedback goes back on two queues the consume thread drains: offsets made
durable (for Kafka's lag tools) and fenced partitions (to reload from SQL).
"""

from __future__ import annotations

import copy
import logging
import queue
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.envelope import DecodeOptions, format_time
from schemas.events import Attribution
from services.monitor.committer import Committer
from services.monitor.sink import AssetSnapshot, CallPoint, CommitBatch, NonFiniteValue, SqlSink, find_nonfinite
from services.monitor.state import TP
from services.observability import metrics as m
from services.profiles.base import WindowPolicy
from services.settings import MonitorSettings
from streamlogic.event_lifecycle import EventChange, ScoredWindow
from streamlogic.windows import AlignedWindow

if TYPE_CHECKING:
    from models.inputs import WindowInputs
    from models.scorer import WindowScore

log = logging.getLogger(__name__)
MAX_QUEUED_BATCHES = 4  # batches cut but not yet scored: beyond this, consumption pauses
_NOT_LIFECYCLE = ("expected", "log_memory", "adaptation")  # other parts of the committed per-asset state


class Scorer(Protocol):
    version: str
    decode_options: DecodeOptions

    def score(self, windows: list[WindowInputs]) -> Sequence[WindowScore]: ...


@runtime_checkable
class StreamScorer(Scorer, Protocol):
    """A scorer that keeps per-asset stream state (log memory, baseline adaptation): committed with
    the asset's lifecycle, restored on assignment, forgotten on revocation."""

    def stream_state(self, asset: str) -> dict: ...
    def restore_stream(self, asset: str, state: dict) -> None: ...
    def forget_stream(self, asset: str) -> None: ...
    def rebaseline(self, asset: str) -> None: ...
    def adaptation(self, asset: str) -> dict[str, float]: ...
    def baseline_phase(self, asset: str): ...


@dataclass
class Batch:
    windows: list[AlignedWindow]
    offsets: dict[TP, tuple[int, int]]  # partition -> (next offset, processed_through)
    assets: dict[str, tuple[int, float, list[str]]]  # asset -> (partition, next window start, expected modalities)
    epochs: dict[TP, int]  # the sink's ownership epochs at cut time
    log_ids: dict[TP, str]  # topic ids of the logs the offsets count records of
    # assets whose streams stopped (as `assets`): their open events close; their state is committed
    # only where that changed it (after a restart every silent asset of a partition stops again)
    stopped: dict[str, tuple[int, float, list[str]]] = field(default_factory=dict)


@dataclass
class Restore:
    states: dict[str, dict]  # asset -> committed state (lifecycle + scorer stream state)


@dataclass
class Forget:
    assets: list[str]


WorkItem = Batch | Restore | Forget | None  # None: stop


class ScoreStage:
    def __init__(self, cfg: MonitorSettings, scorer: Scorer, sink: SqlSink, committer: Committer, stats,
                 flush_dead_letters: Callable[[], None], policy: WindowPolicy,
                 on_change: Callable[[EventChange], None] | None = None):
        self.cfg, self.scorer, self.sink, self.committer, self.stats = cfg, scorer, sink, committer, stats
        self.stream: StreamScorer | None = scorer if isinstance(scorer, StreamScorer) else None
        if self.stream is None and hasattr(scorer, "stream_state"):  # half a protocol: its state would be lost
            missing = [n for n in ("stream_state", "restore_stream", "forget_stream", "rebaseline", "adaptation",
                                   "baseline_phase") if not hasattr(scorer, n)]
            raise TypeError(f"{type(scorer).__name__} keeps stream state but lacks {', '.join(missing)} (StreamScorer)")
        self.flush_dead_letters, self.policy, self.on_change = flush_dead_letters, policy, on_change
        self.lifecycle = policy.lifecycle()  # what opens and closes an event: the profile's
        # unbounded so that restore/forget orders never block; batches are capped by backpressure
        self.work: queue.Queue[WorkItem] = queue.Queue()
        self.committed: queue.Queue[dict[TP, int]] = queue.Queue()  # offsets made durable
        self.fenced: queue.Queue[list[TP]] = queue.Queue()
        self.error: BaseException | None = None
        self._good_state: dict[str, dict] = {}  # asset -> state last committed (or restored)
        self._thresholds: dict[str, float] = {}
        self._thresholds_at = 0.0
        self._resets: list[tuple[int, str]] = []  # pending "new normal" requests (baseline_resets rows)
        self._phases: dict[str, str] = {}  # asset -> baseline phase last reported

    # ── the consume thread's side ──────────────────────────────────────────────────────────
    def put(self, item: WorkItem) -> None:
        self.work.put(item)

    def busy(self) -> bool:
        return bool(self.work.unfinished_tasks or not self.work.empty())

    def scoring(self) -> bool:
        return self.work.unfinished_tasks > 0

    def full(self) -> bool:
        return self.work.qsize() >= MAX_QUEUED_BATCHES

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.busy() and time.monotonic() < deadline:
            if self.error:
                return
            time.sleep(0.01)

    # ── the score thread ───────────────────────────────────────────────────────────────────
    def run(self) -> None:
        try:
            while True:
                item = self.work.get()
                try:
                    if item is None:
                        return
                    if isinstance(item, Restore):
                        self._restore(item.states)
                    elif isinstance(item, Forget):
                        for asset in item.assets:
                            self.forget(asset)
                    else:
                        self._score_and_commit(item)
                finally:
                    self.work.task_done()
        except BaseException as e:  # surfaced in the consume thread, which stops the service
            log.exception("score/sink stage failed")
            self.error = e

    def _restore(self, states: dict[str, dict]) -> None:
        self._good_state.update(states)
        for asset, state in states.items():
            self.lifecycle.restore(asset, {k: v for k, v in state.items() if k not in _NOT_LIFECYCLE})
            if self.stream:
                self.stream.restore_stream(asset, state)

    def forget(self, asset: str) -> None:
        self._good_state.pop(asset, None)
        self.lifecycle.forget(asset)
        if self.stream:
            self.stream.forget_stream(asset)

    def _score_and_commit(self, batch: Batch) -> None:
        self._refresh_overrides()
        resets = self._apply_baseline_resets(batch)
        changes: list[EventChange] = []
        calls: dict[str, list[CallPoint]] = {}
        for i in range(0, len(batch.windows), self.cfg.max_batch):
            chunk = batch.windows[i: i + self.cfg.max_batch]
            t0 = time.perf_counter()
            scores = self.scorer.score([w.inputs for w in chunk])
            present = {k: sum(bool(s.present.get(k)) for s in scores) for k in ("frames", "audio", "logs")}
            m.observe_batch(present, len(chunk), [s.score for s in scores], time.perf_counter() - t0)
            if self.stream:
                for asset in {w.inputs.asset for w in chunk}:
                    m.set_adaptation(asset, self.stream.adaptation(asset))
                    self._report_baseline(asset, self.stream.baseline_phase(asset))
            for w, s in zip(chunk, scores):
                where = find_nonfinite(s)
                if where:  # a NaN must not reach the lifecycle, the state or SQL: drop the window, count it
                    self._drop_nonfinite("window", w.inputs.asset, f"window {w.inputs.start:.0f}: score field {where}")
                    continue
                changes.extend(self.lifecycle.update(self._scored_window(w, s)))
                point = self.policy.call_point(w.inputs, s)
                if point is not None:
                    calls.setdefault(w.inputs.asset, []).append(point)
        assets = dict(batch.assets)
        for asset, position in batch.stopped.items():  # after its last windows, scored above or in an earlier batch
            before = copy.deepcopy(self.lifecycle.state(asset))
            closed = self.lifecycle.stop(asset)
            m.STREAMS_STOPPED.labels(closed="true" if closed else "false").inc()
            for c in closed:
                log.info("%s sent nothing for %.0f s: its stream stopped; event %s closes at its last window "
                         "over the threshold", asset, self.cfg.stream_stopped_s, c.data.event_id)
            changes.extend(closed)
            if self.lifecycle.state(asset) != before:
                assets.setdefault(asset, position)
        snapshot = CommitBatch(changes=changes, calls=calls, offsets=batch.offsets, assets={
            a: AssetSnapshot(part, nxt, expected, self._finite_state(a))
            for a, (part, nxt, expected) in assets.items()}, epochs=batch.epochs, log_ids=batch.log_ids,
            baseline_resets=resets)
        self.flush_dead_letters()  # dead letters must be durable before the offsets that skip them
        outcome = self.committer.commit(snapshot)
        if outcome.status == "stopped":
            return  # nothing of this batch was committed; its records are read again
        if outcome.status == "fenced":
            # dropped: its windows are re-done by whoever owns the partition now
            if outcome.fence is not None and not outcome.fence.stale:  # stale: already claimed again or released
                self.fenced.put(list(batch.offsets))
            for asset in assets:
                self.forget(asset)
            log.warning("%s", outcome.fence)
            return
        self._good_state.update({a: snap.lifecycle for a, snap in snapshot.assets.items()})
        self._count(batch, changes)
        self.committed.put({tp: o for tp, (o, _) in batch.offsets.items()})

    def _count(self, batch: Batch, changes: list[EventChange]) -> None:
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

    # ── per-asset state ────────────────────────────────────────────────────────────────────
    def asset_state(self, asset: str) -> dict:
        """What is committed per asset besides the stream position: the event lifecycle and the
        scorer's stream state (models/logmemory.py, models/adaptation.py)."""
        state = copy.deepcopy(self.lifecycle.state(asset))
        if self.stream:
            state.update(self.stream.stream_state(asset))
        return state

    def _finite_state(self, asset: str) -> dict:
        """The asset's state to commit; a non-finite one (a model statistic overflowed) is never
        written: the scorer's stream state goes back to the last committed one, and the asset
        keeps scoring from there."""
        state = self.asset_state(asset)
        where = find_nonfinite(state)
        if not where:
            return state
        self._drop_nonfinite("state", asset, f"state field {where}")
        good = self._good_state.get(asset)
        if self.stream:
            if good is not None:
                self.stream.restore_stream(asset, good)
            else:
                self.stream.forget_stream(asset)
        state = self.asset_state(asset)
        if find_nonfinite(state):  # the lifecycle itself (it only ever sees finite windows)
            raise NonFiniteValue(f"the event lifecycle state of asset {asset} is not finite after a roll-back")
        return state

    def _drop_nonfinite(self, what: str, asset: str, detail: str) -> None:
        self.stats.nonfinite += 1
        m.NONFINITE_DROPPED.labels(what=what).inc()
        log.warning("asset %s: %s is NaN or infinite; dropped (not scored, not stored)", asset, detail)

    # ── operators' overrides ───────────────────────────────────────────────────────────────
    def _refresh_overrides(self) -> None:
        """Threshold overrides and "new normal" requests, read from SQL every 10 s."""
        if time.monotonic() - self._thresholds_at < 10:
            return
        try:
            self._thresholds = self.sink.load_thresholds()
            self._resets = self.sink.pending_baseline_resets()
        except (OperationalError, DBAPIError) as e:  # keep the last known overrides during an outage
            log.debug("overrides not refreshed: %s", e)
        self._thresholds_at = time.monotonic()

    def _apply_baseline_resets(self, batch: Batch) -> list[int]:
        """Restart the baseline of each asset an operator marked "new normal" whose state this batch
        commits: the request is marked applied in the same transaction as the restarted state."""
        if not self._resets or not self.stream:
            return []
        applied, left = [], []
        for rid, asset in self._resets:
            if asset in batch.assets:
                self.stream.rebaseline(asset)
                applied.append(rid)
                log.info("asset %s: new normal requested (reset #%d): learning its baseline again", asset, rid)
            else:
                left.append((rid, asset))
        self._resets = left
        return applied

    def _report_baseline(self, asset: str, phase) -> None:
        """Metrics of the asset's baseline, and one log line when it starts learning or starts watching."""
        m.set_baseline(asset, phase.phase == "learning", phase.seen)
        if self._phases.get(asset) == phase.phase or not self.policy.reports_baseline:
            self._phases[asset] = phase.phase
            return
        self._phases[asset] = phase.phase
        if phase.phase == "learning":
            log.info("%s: learning its own normal from its first windows (%d so far); until then only the guard "
                     "threshold opens an event", asset, phase.seen)
        else:
            log.info("%s: baseline learned from %d windows; watching", asset, phase.seen)

    def _scored_window(self, w: AlignedWindow, s: WindowScore) -> ScoredWindow:
        win = w.inputs
        judged = self.policy.judge(win, s, self._thresholds.get(win.asset, s.threshold / s.guard))
        m.set_threshold(win.asset, judged.threshold)
        attribution = Attribution(
            modality_shares=s.modality_shares, cross_modal_share=s.cross_modal_share,
            top_frames=[format_time(t) for t in s.top_frame_times],
            frame_region=list(s.frame_region) if s.frame_region else None,
            audio_band_hz=list(s.audio_band_hz) if s.audio_band_hz else None,
            top_log_lines=list(s.top_log_lines),
            log_codes=sorted(set(s.log_codes) | {p.code for _, p in win.logs if p.code}))
        serials = sorted({p.serial for _, p in win.logs if p.serial})
        return ScoredWindow(asset=win.asset, start=win.start, end=win.end, score=judged.score,
                            threshold=judged.threshold, model_version=self.scorer.version, attribution=attribution,
                            kind=judged.kind, log_lines=self.policy.evidence_lines(win)[:10], serials=serials,
                            evidence=w.evidence, learning=judged.learning,
                            # a stream that starts or comes back mid-window is not judged on that window
                            judged=judged.judged and not (w.partial and self.policy.skips_partial_windows))
