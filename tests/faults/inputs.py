"""The fault suite's input: one fixed stream, produced identically into each scenario's topics.

Every scenario gets its own topics (so its DLQ is its own), filled with the same records in the
same order, with the same event times: the reference run and the faulted runs see byte-identical
partitions, so their events must be identical too. Besides clean data the stream carries records
that must be dead-lettered (each with a known reason) and one that must be late, so the ledger
checks every fate, not only the happy one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from schemas.envelope import Kind, WireRecord, encode_frame, encode_log
from services.kafka import Topics, ensure_topics, make_producer
from services.settings import KafkaSettings
from tests.support.streams import bright_fault_stream

ASSETS = ["L1-S1", "L1-S2", "L2-S1", "L2-S2"]
FAULTS = {"L1-S2": (10, 18), "L2-S1": (25, 31), "L2-S2": (40, 52)}
DURATION_S = 60
PARTITIONS = 4
# one stream start for the whole test session: ids and event times repeat across scenarios
START = float(int(time.time()) - 900)


@dataclass(frozen=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    kind: Kind
    asset: str
    time: float
    expect: str  # "scored", or the dead-letter reason the contract demands ("late", "corrupt_image", ...)


def records(start: float = START) -> list[tuple[Kind, WireRecord, float, str]]:
    """(kind, record, event time, expected fate) in production order."""
    out = []
    for kind, rec in bright_fault_stream(ASSETS, start, DURATION_S, FAULTS):
        t = _time_of(rec)
        out.append((kind, rec, t, "scored"))
    # Poison and lateness go last, so each lands behind the asset's clean records in its partition:
    # their fate then does not depend on how fetches from different topics interleave.
    bad_jpeg = encode_frame("L1-S1", "/L1-S1/cam", start + 5.1, b"\xff\xd8\xff\xe0 truncated", id="poison-1")
    out.append((Kind.FRAME, bad_jpeg, start + 5.1, "corrupt_image"))
    mism = encode_log("L1-S2", "/L1-S2/plc", start + 6.1, "asset header differs from key", id="poison-2")
    out.append((Kind.LOG, WireRecord(b"L2-S1", mism.value, mism.headers), start + 6.1, "key_mismatch"))
    crlf = encode_log("L2-S1", "/L2-S1/plc", start + 7.1, "header injection", id="poison-3")
    crlf_headers = [(k, v + b"\r\nX-Evil: 1" if k == "ce_source" else v) for k, v in crlf.headers]
    out.append((Kind.LOG, WireRecord(crlf.key, crlf.value, crlf_headers), start + 7.1, "bad_header"))
    late = encode_log("L2-S2", "/L2-S2/plc", start - 100, {"msg": "delayed line", "serial": "SN-late"}, id="late-1")
    out.append((Kind.LOG, late, start - 100, "late"))
    return out


def produce(kafka: KafkaSettings, bootstrap: str, start: float = START) -> tuple[Topics, list[InputRecord]]:
    """Create the topics, produce the stream, return where every record landed."""
    topics = ensure_topics(kafka, bootstrap)
    topic_of = {Kind.FRAME: topics.frames, Kind.AUDIO: topics.audio, Kind.LOG: topics.logs}
    producer = make_producer(kafka, bootstrap, linger_ms=20)
    pending = []
    for kind, rec, t, expect in records(start):
        fut = producer.send(topic_of[kind], key=rec.key, value=rec.value, headers=rec.headers)
        pending.append((fut, kind, rec.key.decode(), t, expect))
    producer.flush()
    out = []
    for fut, kind, asset, t, expect in pending:
        md = fut.get(10)
        out.append(InputRecord(md.topic, md.partition, md.offset, kind, asset, t, expect))
    producer.close()
    return topics, out


def ends(inputs: list[InputRecord]) -> dict[tuple[str, int], int]:
    """Per input topic-partition: the offset after the last record (what 'finished' means)."""
    out: dict[tuple[str, int], int] = {}
    for r in inputs:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out


def _time_of(rec: WireRecord) -> float:
    from schemas.envelope import parse_time

    return parse_time(dict(rec.headers)["ce_time"].decode())
