"""Sink hop: events, outbox rows, per-asset stream state and the next Kafka offsets, written in
ONE SQL transaction — the exactly-once effect of the monitor.

Offsets are fenced twice:
- across processes, a row is only advanced from the value this process last read or wrote: a zombie
  (a monitor paused past its session timeout while another member took its partitions) finds the
  row moved on, and its whole transaction is rolled back (`Fenced`);
- within the process, each partition has an ownership epoch, bumped whenever it is claimed (offsets
  read at assignment or after a fence) or released; a batch carries the epochs it was cut under,
  and one cut under an older epoch is refused (`Fenced`, stale). Without it, a batch cut before a
  reload would pass the fresh token and move offsets and states back (tests/faults/test_zombie.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from sqlalchemy import Engine, select, tuple_, update
from sqlalchemy.orm import Session

from schemas.errors import FusionwatchError
from schemas.events import AnomalyCloudEvent
from schemas.tables import Asset, AssetThreshold, BaselineReset, CallSummary, ConsumerOffset, Event, MonitorState, Outbox, utcnow
from services.db import session_factory
from services.monitor import faultpoints
from streamlogic.call_summary import CLASSES as CALL_CLASSES
from streamlogic.call_summary import overall_sentiment
from streamlogic.event_lifecycle import EventChange

log = logging.getLogger(__name__)
TP = tuple[str, int]


class Fenced(FusionwatchError):
    """Another group member advanced these offsets: this process no longer owns the partition."""

    def __init__(self, tp: TP, expected: int | None, found: int | None, stale: bool = False):
        super().__init__(f"batch for {tp[0]}[{tp[1]}] was cut before its partition was claimed again or released"
                         if stale else
                         f"offsets of {tp[0]}[{tp[1]}] moved to {found} (expected {expected}); partition lost")
        self.tp, self.stale = tp, stale


class NonFiniteValue(FusionwatchError):
    """A value bound for SQL JSON is NaN or infinite: JSON cannot hold it (PostgreSQL refuses the
    whole transaction), so the batch is refused before any SQL runs."""


def find_nonfinite(value: Any, path: str = "") -> str | None:
    """Where the first NaN/inf float in `value` (dicts, lists, tuples, dataclasses, pydantic
    models, numpy scalars) sits, as a dotted path; None when everything is finite."""
    if isinstance(value, float):  # numpy float64 is a float too
        return None if math.isfinite(value) else (path or "value")
    if isinstance(value, (str, bytes, int, type(None))):
        return None
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalar or array
        return find_nonfinite(value.tolist(), path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "model_dump"):
        value = value.model_dump()
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        where = find_nonfinite(v, f"{path}.{k}" if path else str(k))
        if where:
            return where
    return None


class StoredOffset(NamedTuple):
    next_offset: int
    processed_through: int
    log_id: str | None  # topic id of the log the offsets belong to (None: written before it was kept)


@dataclass
class AssetSnapshot:
    partition: int
    next_start: float
    expected: list[str]
    lifecycle: dict[str, Any]


@dataclass
class CallPoint:
    """One scored window of a call (call-centre profile)."""

    time: float  # window end
    sentiment: dict[str, float]
    frustration: float
    start: float
    # the transcript lines the window held, (time, speaker, text): what the call's turns are kept from
    lines: tuple[tuple[float, str | None, str], ...] = ()
    heard: bool = True  # the window heard the customer (what an escalation counts; streamlogic/escalation.py)


@dataclass
class CommitBatch:
    changes: list[EventChange] = field(default_factory=list)
    calls: dict[str, list[CallPoint]] = field(default_factory=dict)
    offsets: dict[TP, tuple[int, int]] = field(default_factory=dict)  # tp -> (next_offset, processed_through)
    assets: dict[str, AssetSnapshot] = field(default_factory=dict)
    epochs: dict[TP, int] = field(default_factory=dict)  # ownership epochs the batch was cut under
    log_ids: dict[TP, str] = field(default_factory=dict)  # topic ids of the logs the offsets count
    baseline_resets: list[int] = field(default_factory=list)  # `baseline_resets` rows this batch applied


class SqlSink:
    def __init__(self, engine: Engine, group_id: str):
        self.engine, self.group_id = engine, group_id
        self.sessions = session_factory(engine)
        self.expected: dict[TP, int | None] = {}  # fencing token per owned partition
        self._epoch: dict[TP, int] = {}  # ownership epoch per partition (see the module docstring)
        self._ownership = threading.Lock()  # a claim or release never interleaves with a commit

    # ── reads at assignment ────────────────────────────────────────────────────────────────
    def claim(self, tps: list[TP]) -> tuple[dict[TP, StoredOffset], list[MonitorState]]:
        """Own `tps` from now on: a new epoch, and their stored offsets and the stream states of
        their partitions, as of ONE commit.

        Both are written in one transaction, but two plain reads can straddle another member's
        commit: states newer than offsets made the records in between look late (dead-lettered,
        lost) after a zombie's rebalance. Offsets never move backwards, so reading them again
        after the states and finding them unchanged proves no commit came in between."""
        parts = sorted({p for _, p in tps})
        with self._ownership:
            return self._claim(tps, parts)

    def _claim(self, tps: list[TP], parts: list[int]):
        for _ in range(50):
            before = self._read_offsets()
            states = self._read_states(parts)
            stored = self._read_offsets()
            if stored == before:
                break
        else:  # a partition busy enough to win 50 races is not ours: the commit will be fenced
            log.warning("stored offsets kept moving while being read; using the latest read")
        for tp in tps:
            self.expected[tp] = stored[tp][0] if tp in stored else None
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
        return {tp: stored[tp] for tp in tps if tp in stored}, states

    def _read_offsets(self) -> dict[TP, StoredOffset]:
        with self.sessions() as s:
            rows = s.scalars(select(ConsumerOffset).where(ConsumerOffset.group_id == self.group_id)).all()
            return {(r.topic, r.partition): StoredOffset(r.next_offset, r.processed_through, r.log_id) for r in rows}

    def _read_states(self, partitions: list[int]) -> list[MonitorState]:
        if not partitions:
            return []
        with self.sessions() as s:
            return list(s.scalars(select(MonitorState).where(MonitorState.group_id == self.group_id,
                                                             MonitorState.partition.in_(partitions))))

    def release(self, tps: list[TP]) -> None:
        with self._ownership:
            for tp in tps:
                self.expected.pop(tp, None)
                self._epoch[tp] = self._epoch.get(tp, 0) + 1

    def epochs(self, tps) -> dict[TP, int]:
        return {tp: self._epoch.get(tp, 0) for tp in tps}

    def load_thresholds(self) -> dict[str, float]:
        with self.sessions() as s:
            return {r.asset_id: r.threshold for r in s.scalars(select(AssetThreshold))}

    def pending_baseline_resets(self) -> list[tuple[int, str]]:
        """(id, asset) of every "new normal" no monitor has applied yet, oldest first."""
        with self.sessions() as s:
            rows = s.execute(select(BaselineReset.id, BaselineReset.asset_id)
                             .where(BaselineReset.applied_at.is_(None)).order_by(BaselineReset.id))
            return [(int(i), str(a)) for i, a in rows]

    # ── the one write ──────────────────────────────────────────────────────────────────────
    def commit(self, batch: CommitBatch) -> float:
        """Write the batch atomically; returns seconds spent. Raises Fenced or a DB error."""
        t0 = time.perf_counter()
        with self._ownership:
            self._commit(batch)
        return time.perf_counter() - t0

    def _commit(self, batch: CommitBatch) -> None:
        for tp, epoch in batch.epochs.items():
            if self._epoch.get(tp, 0) != epoch:
                raise Fenced(tp, None, None, stale=True)
        _refuse_nonfinite(batch)
        with self.sessions() as s, s.begin():
            self._advance_offsets(s, batch.offsets, batch.log_ids)
            for change in batch.changes:
                self._write_event(s, change)
            for call_id, points in batch.calls.items():
                _update_call(s, call_id, points)
                record_call_turns(s, call_id, points)
            self._write_states(s, batch.assets)
            if batch.baseline_resets:  # applied with the restarted baselines they caused, or not at all
                s.execute(update(BaselineReset).where(BaselineReset.id.in_(batch.baseline_resets))
                          .values(applied_at=utcnow(), applied_by=self.group_id))
            s.flush()
            faultpoints.hit("before_commit")  # fault tests: everything written, nothing committed
        faultpoints.hit("after_commit")  # fault tests: committed, nobody told
        for tp, (next_offset, _) in batch.offsets.items():
            self.expected[tp] = next_offset

    def _advance_offsets(self, s: Session, offsets: dict[TP, tuple[int, int]], log_ids: dict[TP, str]) -> None:
        for tp in offsets:
            if tp not in self.expected:
                raise Fenced(tp, None, None)  # revoked while this batch was in flight
        # one locking read for every partition of the batch (in key order, as one member always
        # locks), not one per partition: with 3 topics x 8 partitions that was most of a commit
        rows = {(r.topic, r.partition): r for r in s.scalars(
            select(ConsumerOffset).where(ConsumerOffset.group_id == self.group_id,
                                         tuple_(ConsumerOffset.topic, ConsumerOffset.partition).in_(sorted(offsets)))
            .order_by(ConsumerOffset.topic, ConsumerOffset.partition).with_for_update())} if offsets else {}
        for tp, (next_offset, processed) in sorted(offsets.items()):
            row = rows.get(tp)
            found = row.next_offset if row else None
            if found != self.expected[tp]:
                raise Fenced(tp, self.expected[tp], found)
            log_id = log_ids.get(tp) or (row.log_id if row else None)
            if row is None:
                s.add(ConsumerOffset(group_id=self.group_id, topic=tp[0], partition=tp[1],
                                     next_offset=next_offset, processed_through=processed, log_id=log_id))
            else:
                row.next_offset, row.processed_through, row.log_id = next_offset, processed, log_id
        s.flush()  # a concurrent insert of the same row fails here, inside the transaction

    def _write_states(self, s: Session, assets: dict[str, AssetSnapshot]) -> None:
        """Upsert the per-asset stream state: one read for all assets of the batch, then updates."""
        if not assets:
            return
        rows = {r.asset_id: r for r in s.scalars(select(MonitorState).where(
            MonitorState.group_id == self.group_id, MonitorState.asset_id.in_(sorted(assets))))}
        for asset, snap in assets.items():
            lifecycle = snap.lifecycle | {"expected": snap.expected}
            row = rows.get(asset)
            if row is None:
                s.add(MonitorState(group_id=self.group_id, asset_id=asset, partition=snap.partition,
                                   last_window_start=snap.next_start, lifecycle=lifecycle))
            else:
                row.partition, row.last_window_start, row.lifecycle = snap.partition, snap.next_start, lifecycle

    def _write_event(self, s: Session, change: EventChange) -> None:
        d = change.data
        row = s.get(Event, d.event_id)
        if row is None:
            if s.get(Asset, d.asset) is None:
                s.add(Asset(id=d.asset, line=d.asset.split("-")[0] if "-" in d.asset else None))
            row = Event(id=d.event_id, asset_id=d.asset, start_time=d.start_time)
            s.add(row)
        if row.status in (None, "open", "closed"):  # never undo a reviewer's acknowledge/resolve
            row.status = d.status
        row.end_time, row.kind, row.severity = d.end_time, d.kind, d.severity
        row.peak_score, row.mean_score, row.threshold = d.peak_score, d.mean_score, d.threshold
        row.model_version, row.windows, row.learning = d.model_version, d.windows, d.learning
        row.closed_by = d.closed_by
        row.attribution = d.attribution.model_dump()
        row.serials, row.log_lines = list(d.serials), list(d.log_lines)
        row.evidence = {m: [r.model_dump() for r in rs] for m, rs in d.evidence.items()}
        row.scores = [list(p) for p in d.scores]
        if s.scalar(select(Outbox.id).where(Outbox.event_id == d.event_id, Outbox.revision == d.revision)) is None:
            cloud = AnomalyCloudEvent.wrap(d, utcnow())
            s.add(Outbox(event_id=d.event_id, revision=d.revision, change=change.change,
                         payload=cloud.model_dump(mode="json")))



def _refuse_nonfinite(batch: CommitBatch) -> None:
    """The monitor drops non-finite windows and states before they get here; this is the last line,
    so that a NaN is a clear error once instead of a transaction PostgreSQL refuses on every retry."""
    for change in batch.changes:
        where = find_nonfinite(change.data)
        if where:
            raise NonFiniteValue(f"event {change.data.event_id} of asset {change.data.asset}: {where} is not finite")
    for asset, snap in batch.assets.items():
        where = find_nonfinite(snap.lifecycle) or find_nonfinite(snap.next_start)
        if where:
            raise NonFiniteValue(f"stream state of asset {asset}: {where} is not finite")
    for call_id, points in batch.calls.items():
        where = find_nonfinite(points)
        if where:
            raise NonFiniteValue(f"call {call_id}: {where} is not finite")


MAX_CURVE = 7200  # points kept per call (two hours at a 1 s hop)


def _update_call(s: Session, call_id: str, points: list[CallPoint]) -> None:
    """Append a call's new windows to its sentiment curve and re-derive the peak and turning point."""
    from datetime import datetime, timezone

    from schemas.envelope import format_time

    def dt(t: float) -> datetime:
        return datetime.fromtimestamp(t, timezone.utc)

    row = s.get(CallSummary, call_id)
    if row is None:
        row = CallSummary(call_id=call_id, start_time=dt(points[0].start), sentiment_curve=[])
        s.add(row)
    seen = {p[0] for p in row.sentiment_curve}
    curve = list(row.sentiment_curve) + [
        [format_time(p.time), round(p.sentiment.get("negative", 0.0), 4), round(p.sentiment.get("neutral", 0.0), 4),
         round(p.sentiment.get("positive", 0.0), 4), round(p.frustration, 4), p.heard]
        for p in points if format_time(p.time) not in seen]
    curve = curve[-MAX_CURVE:]
    row.sentiment_curve = curve
    row.end_time = dt(max(p.time for p in points))
    # the peak of the windows that heard the customer: an agent-only window's frustration is a guess
    peak = max([c for c in curve if len(c) < 6 or c[5]] or curve, key=lambda c: c[4])
    row.peak_time, row.peak_frustration = dt(_epoch(peak[0])), peak[4]
    row.turning_point = _turning_point(curve)
    row.overall = CALL_CLASSES[overall_sentiment([c[1:4] for c in curve])]  # how the call ends


def record_call_turns(s: Session, call_id: str, points: list[CallPoint]) -> None:
    """Keep each transcript line the windows held as a `call_turns` row, with the model's view of the
    customer while it was heard: the mean sentiment of every window that held the line and the
    highest frustration. A line sits in several overlapping windows, scored in one batch or across
    batches; each adds to its row once, in the transaction that commits the window."""
    from datetime import datetime, timezone

    from schemas.tables import CallTurn

    heard = [(t, speaker, text, p) for p in points for t, speaker, text in p.lines]
    if not heard:
        return
    times = [datetime.fromtimestamp(t, timezone.utc) for t, _, _, _ in heard]
    rows = {(r.at, r.speaker, r.text): r for r in s.scalars(select(CallTurn).where(
        CallTurn.call_id == call_id, CallTurn.at >= min(times), CallTurn.at <= max(times)))}
    for at, (_, speaker, text, p) in zip(times, heard):
        row = rows.get((at, speaker, text))
        if row is None:
            row = rows[(at, speaker, text)] = CallTurn(call_id=call_id, at=at, speaker=speaker, text=text, windows=0,
                                                       negative=0.0, neutral=0.0, positive=0.0, frustration=0.0)
            s.add(row)
        n = row.windows
        for cls in CALL_CLASSES:  # running mean over the windows that held the line
            setattr(row, cls, round((getattr(row, cls) * n + p.sentiment.get(cls, 0.0)) / (n + 1), 4))
        row.frustration = round(max(row.frustration, p.frustration), 4)
        row.windows = n + 1


def _turning_point(curve: list[list]):
    """First window where smoothed frustration rises through 0.5 after being below it."""
    from datetime import datetime, timezone

    smooth, below = None, False
    for c in curve:
        smooth = c[4] if smooth is None else 0.6 * smooth + 0.4 * c[4]
        if smooth < 0.5:
            below = True
        elif below:
            return datetime.fromtimestamp(_epoch(c[0]), timezone.utc)
    return None


def _epoch(text: str) -> float:
    from schemas.envelope import parse_time

    return parse_time(text)
