"""The ledger: account for every input record and every event after a faulted run.

Built only from what survives a crash — the SQL rows (offsets, per-asset stream state, events,
outbox) and the dead-letter topic — never from a process's memory:

- a record is **scored** when its offset is below the committed next offset of its partition and
  the asset's committed stream state is past the first window that holds it (that window was
  scored and committed with the offsets);
- **dead-lettered** when fw.dlq holds it (matched by fw_original_topic/partition/offset), with
  the reason from fw_error (`late` included);
- anything else is **unaccounted** (must be 0), and a fate other than the one the input demands
  (a clean record dead-lettered, a poison record scored) is **misplaced** (must be 0).

Events are compared with a fault-free reference run over byte-identical input: **lost** = rows
of the reference missing or different here, **duplicated** = rows here that the reference lacks
(a second event for one fault, or a replay that wrote another row) plus repeated outbox revisions.
The dead-letter topic is at-least-once (flushed before the offsets that skip the records, so a
crash in between dead-letters them again): redeliveries are counted and shown, not hidden.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timezone

from sqlalchemy import select

from schemas.tables import ConsumerOffset, Event, MonitorState, Outbox
from services import db
from services.kafka import Topics, make_consumer
from services.settings import KafkaSettings
from tests.faults.inputs import InputRecord

WINDOW_S, HOP_S = 2.0, 1.0  # MonitorSettings defaults, which the fault runs use

REPORTS: list["Ledger"] = []  # printed at the end of the pytest run (tests/faults/conftest.py)


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str


def read_topic(kafka: KafkaSettings, bootstrap: str, topic: str, idle_s: float = 2.0) -> list:
    """Every record on a topic (read to the high watermark of each partition)."""
    from kafka import TopicPartition

    consumer = make_consumer(kafka, bootstrap, None)
    tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            got = consumer.poll(timeout_ms=300)
            for recs in got.values():
                last = time.monotonic()
                out.extend(recs)
            # done once every partition's position has reached its (fetch-reported) high watermark
            hw = [consumer.highwater(tp) for tp in tps]
            if all(h is not None for h in hw) and all(consumer.position(tp) >= h for tp, h in zip(tps, hw)):
                break
    finally:
        consumer.close()
    return out


def read_dlq(kafka: KafkaSettings, bootstrap: str, topics: Topics, idle_s: float = 2.0) -> list[DeadLetter]:
    """Every record on the scenario's DLQ topic."""
    out = []
    for r in read_topic(kafka, bootstrap, topics.dlq, idle_s):
        h = {k: v.decode(errors="replace") for k, v in r.headers}
        out.append(DeadLetter(h["fw_original_topic"], int(h["fw_original_partition"]),
                              int(h["fw_original_offset"]), h["fw_error"].split(":", 1)[0]))
    return out


def event_rows(url: str) -> list[tuple]:
    """The comparable content of every event row (what a reviewer sees), in start order."""
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            return [(e.id, e.asset_id, _utc(e.start_time), _utc(e.end_time), e.status, e.windows,
                     round(e.peak_score, 4), round(e.mean_score, 4), sorted(e.serials), _evidence(e.evidence))
                    for e in s.scalars(select(Event).order_by(Event.start_time, Event.asset_id))]
    finally:
        engine.dispose()


def outbox_rows(url: str) -> list[tuple[str, int, str]]:
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            return [(o.event_id, o.revision, o.change) for o in s.scalars(select(Outbox).order_by(Outbox.id))]
    finally:
        engine.dispose()


def committed(url: str, group: str) -> tuple[dict[tuple[str, int], int], dict[str, float]]:
    """(next offset per topic-partition, next window start per asset) as committed by `group`."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as c:
            offs = {(t, p): o for t, p, o in c.execute(
                select(ConsumerOffset.topic, ConsumerOffset.partition, ConsumerOffset.next_offset)
                .where(ConsumerOffset.group_id == group))}
            states = {a: w for a, w in c.execute(
                select(MonitorState.asset_id, MonitorState.last_window_start).where(MonitorState.group_id == group))}
    finally:
        engine.dispose()
    return offs, states


def finished(url: str, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Every input partition committed to its end and no event left open."""
    offs, _ = committed(url, group)
    if not all(offs.get(tp, -1) >= end for tp, end in ends.items()):
        return False
    return all(r[4] != "open" for r in event_rows(url))


@dataclass
class Ledger:
    scenario: str
    records_in: int = 0
    scored: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    unaccounted: int = 0
    misplaced: int = 0
    dlq_redelivered: int = 0
    reread: int = 0  # records fetched again after a restart/rebalance (from the processes' counters)
    fenced: int = 0  # batches a zombie tried to commit and the sink refused
    events_expected: int = 0
    events_found: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    outbox_mismatch: int = 0  # outbox (event, revision, change) rows that differ from the reference
    notes: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> int:
        return self.scored + sum(self.dead_lettered.values())

    def assert_clean(self) -> None:
        problems = []
        if self.accounted != self.records_in or self.unaccounted:
            problems.append(f"{self.records_in - self.accounted} records unaccounted")
        if self.misplaced:
            problems.append(f"{self.misplaced} records with the wrong fate")
        if self.events_lost or self.events_duplicated or self.events_found != self.events_expected:
            problems.append(f"events lost {self.events_lost}, duplicated {self.events_duplicated}")
        if self.outbox_mismatch:
            problems.append(f"{self.outbox_mismatch} outbox rows differ from the reference")
        assert not problems, f"{self.scenario}: " + "; ".join(problems) + "\n" + self.table() + \
            "\n" + "\n".join(self.notes)

    def row(self) -> list[str]:
        dl = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_lettered.items()))
        return [self.scenario, str(self.records_in), str(self.accounted), str(self.scored), dl,
                str(self.dlq_redelivered), str(self.reread), str(self.fenced), str(self.events_expected),
                str(self.events_found), str(self.events_lost), str(self.events_duplicated)]

    def table(self) -> str:
        return format_table([self])


HEADER = ["scenario", "records in", "accounted", "scored", "dead-lettered (reason n)", "dlq redeliv.",
          "re-read", "fenced", "ev. expected", "ev. found", "lost", "dup."]


def format_table(ledgers: list[Ledger]) -> str:
    rows = [HEADER] + [lg.row() for lg in ledgers]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(rows[0]), "-+-".join("-" * w for w in widths)] + [line(r) for r in rows[1:]])


def build(scenario: str, inputs: list[InputRecord], url: str, group: str, dlq: list[DeadLetter],
          reference_events: list[tuple], reference_outbox: list[tuple], proc_stats: list[dict]) -> Ledger:
    lg = Ledger(scenario, records_in=len(inputs))
    offs, states = committed(url, group)
    fates: dict[tuple[str, int, int], str] = {}
    for d in dlq:
        fates.setdefault((d.topic, d.partition, d.offset), d.reason)
    lg.dlq_redelivered = len(dlq) - len(fates)
    for r in inputs:
        reason = fates.get((r.topic, r.partition, r.offset))
        if reason is not None:
            lg.dead_lettered[reason] += 1
            fate = reason
        elif r.offset < offs.get((r.topic, r.partition), 0) and _first_window(r.time) < states.get(r.asset, -math.inf):
            lg.scored += 1
            fate = "scored"
        else:
            lg.unaccounted += 1
            lg.notes.append(f"unaccounted: {r}")
            continue
        if fate != r.expect:
            lg.misplaced += 1
            lg.notes.append(f"misplaced ({fate}, expected {r.expect}): {r}")
    lg.reread = max(0, sum(s.get("records", 0) for s in proc_stats) - len(inputs))
    lg.fenced = sum(s.get("fenced", 0) for s in proc_stats)

    found = event_rows(url)
    lg.events_expected, lg.events_found = len(reference_events), len(found)
    lost = [e for e in reference_events if e not in found]
    extra = [e for e in found if e not in reference_events]
    lg.events_lost = len(lost)
    outbox = outbox_rows(url)
    repeated = sum(n - 1 for n in Counter((e, r) for e, r, _ in outbox).values() if n > 1)
    lg.events_duplicated = len(extra) + repeated
    # the publications (opened/updated/closed per event) must match too, one row per revision
    missing = Counter(reference_outbox) - Counter(outbox)
    surplus = Counter(outbox) - Counter(reference_outbox)
    lg.outbox_mismatch = sum(missing.values()) + sum(surplus.values())
    if lg.outbox_mismatch:
        lg.notes.append(f"outbox missing {sorted(missing)}; outbox surplus {sorted(surplus)}")
    lg.notes += [f"lost: {e[:7]}" for e in lost] + [f"extra: {e[:7]}" for e in extra]
    REPORTS.append(lg)
    return lg


def _first_window(t: float) -> float:
    """Start of the first window (on the hop grid) that holds event time t."""
    return (math.floor((t - WINDOW_S) / HOP_S) + 1) * HOP_S


def _evidence(evidence: dict) -> dict:
    """Evidence offsets with the scenario's topic prefix removed (each scenario has its own topics,
    filled identically, so the offsets themselves must match the reference)."""
    return {m: sorted((r["topic"].rsplit(".", 1)[-1], r["partition"], r["first"], r["last"]) for r in ranges)
            for m, ranges in evidence.items()}


def _utc(dt):
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
