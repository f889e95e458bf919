"""The poison suite (`pytest -m poison`; `make test` runs it): every reason a record can be refused
for, plus the hostile inputs of issue 23, produced through a real broker into a running monitor
process on real SQLite and PostgreSQL, then accounted for from durable state only (SQL offsets and
stream state, the DLQ topic), like the fault suite's ledger:

    records in = scored + dead-lettered;  crashes 0;  partitions stalled 0;  assets blinded 0

- *scored*: below its partition's committed offset and behind the asset's committed window;
- *dead-lettered*: on fw.dlq with the reason the input demands (anything else is *misplaced*);
- *crashes*: the monitor exited, or did not stop cleanly within a few seconds of SIGTERM;
- *stalled*: an input partition whose committed offset is short of its end;
- *blinded*: an asset whose last clean record was not scored, or that missed its fault's event.

The stream: four assets in a backlog of 40 s (the poison in its middle, all on L1-S1), then 16 s
produced in real time, in which records stamped 23 h and 8 s ahead arrive first and L1-S1 has a
fault: its event proves the poisoned asset still scores after the poison; L1-S2's fault in the
backlog proves a neighbour is unaffected. The ledger table is printed at the end of the run.
"""

from __future__ import annotations

import io
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from schemas.envelope import Kind, WireRecord, encode_audio, encode_frame, encode_log, format_time, wav_bytes
from tests.support.streams import bright_fault_stream, jpeg

pytestmark = [pytest.mark.poison, pytest.mark.slow]

ASSETS = ["L1-S1", "L1-S2", "L2-S1", "L2-S2"]
POISONED = "L1-S1"
BACKLOG_S, LIVE_S = 40, 16
LEDGERS: list[str] = []


@dataclass
class Rec:
    kind: Kind
    rec: WireRecord
    t: float
    expect: str  # "scored" or the dead-letter reason
    label: str
    own_batch: bool = False  # sent and flushed alone (a record the client cannot parse must be alone)
    topic: str = ""
    partition: int = -1
    offset: int = -1


class _RawName(str):
    """A header name kafka-python writes as raw bytes that are not UTF-8 (a hostile producer's)."""

    def encode(self, *_, **__):  # noqa: D401 - the record builder calls h_key.encode("utf-8")
        return b"\xff\xfebad-\xc3"


def _wav(tag=1, channels=1, rate=16000, bits=16, data=b"\x00\x00" * 1600) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8 & 0xFFFFFFFF,
                      channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png(w: int, h: int, flat: bool = False) -> bytes:
    buf = io.BytesIO()
    arr = np.zeros((h, w, 3), np.uint8) if flat else np.random.default_rng(1).integers(0, 255, (h, w, 3), np.uint8)
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _with(rec: WireRecord, key: bytes | None = None, value: bytes | None = b"\x00keep", drop=(), extra=(),
          **headers) -> WireRecord:
    """`rec` with headers replaced (by name), dropped, or `extra` ones appended."""
    out = [(k, headers.pop(k, v)) for k, v in rec.headers if k not in drop]
    assert not headers, f"no such header to replace: {headers}"
    out += list(extra)
    return WireRecord(rec.key if key is None else key, rec.value if value == b"\x00keep" else value, out)


def poison(t0: float) -> list[Rec]:
    """One record per reject reason (decode_error needs a decoder bug: none is known), and issue 23's."""
    a = POISONED
    log = lambda i, msg="poison": encode_log(a, f"/{a}/plc", t0 + i * 0.05, msg, id=f"p-{i}")  # noqa: E731
    frame = lambda i, value, ct="image/jpeg": encode_frame(a, f"/{a}/cam", t0 + i * 0.05, value, ct, id=f"p-{i}")  # noqa: E731
    audio = lambda i, value: encode_audio(a, f"/{a}/mic", t0 + i * 0.05, value, id=f"p-{i}")  # noqa: E731
    good_jpeg = jpeg(40)
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (240, 320, 3), np.uint8)).save(noisy, "JPEG")
    big = np.asarray(Image.open(io.BytesIO(good_jpeg)))
    buf = io.BytesIO()
    Image.fromarray(np.tile(big, (4, 4, 1))).save(buf, "JPEG")
    sof = buf.getvalue().index(b"\xff\xc0")
    huge_jpeg = buf.getvalue()[:sof + 5] + struct.pack(">HH", 5000, 5000) + buf.getvalue()[sof + 9:]
    L, F, A = Kind.LOG, Kind.FRAME, Kind.AUDIO
    r = [
        (L, _with(log(0), value=None), "empty_value"),
        (F, frame(1, b"\xff\xd8" + b"\x00" * (2_097_142 - 2)), "value_too_large"),  # fits 2 MiB; its DLQ copy did not
        (L, _with(log(2), extra=[("ce_id", b"dup")]), "duplicate_header"),
        (L, _with(log(3), ce_source=b"/p\r\nX-Evil: 1"), "bad_header"),
        (L, _with(log(4), drop=("ce_time",)), "missing_header"),
        (L, _with(log(5), ce_specversion=b"0.3"), "bad_specversion"),
        (L, _with(log(6), ce_type=Kind.FRAME.ce_type.encode()), "bad_type"),
        (L, _with(log(7), **{"content-type": b"text/html"}), "bad_content_type"),
        (L, _with(log(8), key=b"../../etc/passwd", ce_asset=b"../../etc/passwd"), "bad_key"),
        (L, _with(log(9), ce_asset=b"L9-S9"), "key_mismatch"),
        (L, _with(log(10), ce_time=b"yesterday"), "bad_time"),
        (L, _with(log(11), ce_time=format_time(t0 - 10 * 86400).encode()), "time_out_of_range"),
        (F, frame(12, b"\xff\xd8\xff\xe0 not a jpeg"), "corrupt_image"),
        (F, frame(13, noisy.getvalue()[: len(noisy.getvalue()) * 7 // 10]), "truncated_image"),
        (F, frame(14, huge_jpeg), "image_too_large"),
        (F, frame(15, _png(4, 4), "image/png"), "image_too_small"),
        (F, frame(16, _png(4000, 4000, flat=True), "image/png"), "decompression_bomb"),
        (A, audio(17, b"not a wav at all"), "corrupt_audio"),
        (A, audio(18, _wav(tag=3, bits=32, data=np.full(1600, 3e38, "<f4").tobytes())), "bad_audio_values"),
        (A, audio(19, _wav(bits=8, data=b"\x80" * 1600)), "bad_audio_format"),
        (A, audio(20, _wav(rate=1000, data=b"\x00\x00" * 100)), "bad_sample_rate"),
        (A, audio(21, _wav(channels=0)), "bad_channels"),
        (A, audio(22, _wav(rate=4000, data=b"\x00\x00" * 4000 * 11)), "audio_too_long"),
        (L, _with(log(23), value=b"x" * (17 * 1024)), "log_too_large"),
        (L, _with(log(24), value=b"\xc3\x28 broken"), "not_utf8"),
        (L, _with(log(25), value=b"   "), "empty_log"),
        (L, _with(log(26), value=b"{not json", **{"content-type": b"application/json"}), "bad_json"),
        # awkward but valid sample rates: scored, at bounded cost (16001 Hz: 21 s and +4 GB per chunk before)
        (A, audio(27, _wav(rate=16001, data=b"\x01\x00" * 800)), "scored"),
        (A, audio(28, _wav(rate=44101, data=b"\x01\x00" * 2205)), "scored"),
        # a model statistic going NaN: windows dropped and counted, the state rolled back
        (L, log(29, "poison: nan score"), "scored"),
        (L, log(30, "poison: nan state"), "scored"),
    ]
    out = [Rec(k, w, t0 + i * 0.05, expect, expect if expect != "scored" else f"valid {i}") for i, (k, w, expect)
           in enumerate(r)]
    bad_name = log(31)
    out.append(Rec(L, WireRecord(bad_name.key, bad_name.value, bad_name.headers + [(_RawName("x"), b"1")]),
                   t0 + 31 * 0.05, "corrupt_record", "corrupt_record", own_batch=True))
    return out


def backlog(t0: float) -> list[Rec]:
    out = [Rec(k, r, _t(r), "scored", "clean") for k, r in
           bright_fault_stream(ASSETS, t0, BACKLOG_S, {"L1-S2": (10, 18)})]
    out += poison(t0 + 20)
    out.sort(key=lambda r: r.t)
    # a flood: 1,200 log lines of one asset at one event time; the bucket holds 5 s x 200/s = 1,000
    out += [Rec(Kind.LOG, encode_log("FLOOD-1", "/flood", t0 + 30, f"spam {i}", id=f"fl-{i}"), t0 + 30,
                "scored" if i < 1000 else "rate_limited", "flood") for i in range(1200)]
    # late: behind its asset's watermark once the backlog is read (last in its partition, so its fate
    # does not depend on how fetches from different topics interleave)
    out.append(Rec(Kind.LOG, encode_log("L2-S2", "/L2-S2/plc", t0 - 100, "delayed", id="late-1"), t0 - 100,
                   "late", "late"))
    return out


def live_second(t: float, fault: bool) -> list[Rec]:
    """One second of the four assets stamped at wall time t (produced when the wall clock reaches it)."""
    recs = []
    for a in ASSETS:
        level = 220 if (fault and a == POISONED) else 40
        for i in range(4):
            recs.append(Rec(Kind.FRAME, encode_frame(a, f"/{a}/cam", t + i / 4, jpeg(level)), t + i / 4, "scored", "live"))
        for i in range(2):
            recs.append(Rec(Kind.AUDIO, encode_audio(a, f"/{a}/mic", t + i / 2, wav_bytes(np.zeros(8000, np.float32), 16000)),
                            t + i / 2, "scored", "live"))
        recs.append(Rec(Kind.LOG, encode_log(a, f"/{a}/plc", t + 0.25, {"msg": "cycle ok"}), t + 0.25, "scored", "live"))
    return recs


def future(now: float) -> list[Rec]:
    """Issue 23: three records stamped 23 h ahead (refused), and three 8 s ahead (inside the skew: scored,
    but they must not move the watermark past the wall clock and make the records after them late)."""
    a = POISONED
    out = [Rec(k, enc(a, f"/{a}/x", now + 23 * 3600, v), now + 23 * 3600, "time_in_future", "time_in_future")
           for k, enc, v in ((Kind.FRAME, encode_frame, jpeg(40)), (Kind.AUDIO, encode_audio, wav_bytes(np.zeros(800), 16000)),
                             (Kind.LOG, encode_log, "from tomorrow"))]
    out += [Rec(k, enc(a, f"/{a}/x", now + 8, v), now + 8, "scored", "8 s ahead")
            for k, enc, v in ((Kind.FRAME, encode_frame, jpeg(40)), (Kind.AUDIO, encode_audio, wav_bytes(np.zeros(800), 16000)),
                              (Kind.LOG, encode_log, "a little early"))]
    return out


def _t(rec: WireRecord) -> float:
    from schemas.envelope import parse_time

    return parse_time(dict(rec.headers)["ce_time"].decode())


class Producer:
    def __init__(self, ks, bootstrap, topics):
        from services.kafka import make_producer

        # a producer as permissive as the broker: the oversized record must reach the topic
        self.p = make_producer(ks, bootstrap, max_request_size=4 << 20, linger_ms=5)
        self.topic_of = {Kind.FRAME: topics.frames, Kind.AUDIO: topics.audio, Kind.LOG: topics.logs}
        self.sent: list[tuple[Rec, object]] = []

    def send(self, recs: list[Rec]) -> None:
        for r in recs:
            if r.own_batch:
                self.p.flush()
            fut = self.p.send(self.topic_of[r.kind], key=r.rec.key, value=r.rec.value, headers=r.rec.headers)
            self.sent.append((r, fut))
            if r.own_batch:
                self.p.flush()

    def finish(self) -> list[Rec]:
        self.p.flush()
        for r, fut in self.sent:
            md = fut.get(30)
            r.topic, r.partition, r.offset = md.topic, md.partition, md.offset
        self.p.close()
        return [r for r, _ in self.sent]


@pytest.fixture(params=["sqlite", "postgresql"])
def poison_db(request):
    return request.param, request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def test_poison_suite(broker, poison_db, tmp_path):
    from services.kafka import ensure_topics
    from services.settings import KafkaSettings
    from tests.faults import ledger
    from tests.faults.procs import MonitorProc, wait_for

    backend, url = poison_db
    ks = KafkaSettings(topic_prefix=f"p{uuid.uuid4().hex[:10]}.", partitions=4)
    topics = ensure_topics(ks, broker.bootstrap)
    group = f"poison-{uuid.uuid4().hex[:8]}"
    wall0 = time.time()
    t0 = wall0 - BACKLOG_S - 5
    producer = Producer(ks, broker.bootstrap, topics)
    producer.send(backlog(t0))
    proc = MonitorProc(tmp_path, "monitor", broker.bootstrap, url, ks.topic_prefix, group,
                       env={"FW_TEST_SCORER": "poisonable"})
    # the live part: stamped at wall time, sent when the wall clock reaches the end of each second
    live_start = float(int(time.time()) + 1)
    producer.send(future(time.time()))
    for i in range(LIVE_S):
        sec = live_start + i
        time.sleep(max(0.0, sec + 1 - time.time()))
        producer.send(live_second(sec, fault=5 <= i < 11))
        assert proc.proc.poll() is None, f"the monitor died:\n{proc.log()[-4000:]}"
    inputs = producer.finish()

    ends: dict[tuple[str, int], int] = {}
    for r in inputs:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)

    def done():
        offs, states = ledger.committed(url, group)
        return all(offs.get(tp, -1) >= end for tp, end in ends.items()) and \
            all(states.get(a, 0) > live_start + LIVE_S - 4 for a in ASSETS)

    wait_for(done, 120, "the monitor to commit every partition to its end", procs=[proc])
    t_stop = time.monotonic()
    rc = proc.stop(timeout_s=30)
    stop_s = time.monotonic() - t_stop
    stats = proc.stats()

    dlq = ledger.read_dlq(ks, broker.bootstrap, topics)
    offs, states = ledger.committed(url, group)
    fates = {}
    for d in dlq:
        fates.setdefault((d.topic, d.partition, d.offset), d.reason)
    scored = misplaced = unaccounted = 0
    dead = Counter()
    notes = []
    for r in inputs:
        fate = fates.get((r.topic, r.partition, r.offset))
        if fate is None:
            asset = r.rec.key.decode(errors="replace") if r.rec.key else ""
            if r.offset < offs.get((r.topic, r.partition), 0) and ledger._first_window(r.t) < states.get(asset, -1e18):
                fate = "scored"
            else:
                unaccounted += 1
                notes.append(f"unaccounted: {r.label} {r.topic}[{r.partition}]@{r.offset} t={r.t - t0:.1f}")
                continue
        if fate == "scored":
            scored += 1
        else:
            dead[fate] += 1
        if fate != r.expect:
            misplaced += 1
            notes.append(f"misplaced ({fate}, expected {r.expect}): {r.label} t={r.t - t0:.1f}")
    stalled = sum(1 for tp, end in ends.items() if offs.get(tp, -1) < end)
    events = {e[1] for e in ledger.event_rows(url)}
    last_clean = {a: max(r.t for r in inputs if r.rec.key == a.encode() and r.expect == "scored") for a in ASSETS}
    blinded = [a for a in ASSETS if states.get(a, -1e18) <= ledger._first_window(last_clean[a])]
    blinded += [a for a in (POISONED, "L1-S2") if a not in events and a not in blinded]
    crashes = int(rc != 0 or stop_s > 10)
    dlq_copies = _dlq_headers(ks, broker.bootstrap, topics)

    table = (f"poison suite ({backend}): records in {len(inputs)} = scored {scored} + dead-lettered "
             f"{sum(dead.values())} (unaccounted {unaccounted}, misplaced {misplaced}); crashes {crashes} "
             f"(exit {rc}, SIGTERM to exit {stop_s:.1f} s); partitions stalled {stalled}; assets blinded "
             f"{len(blinded)}; non-finite windows/states dropped {stats.get('nonfinite')}; corrupt records skipped "
             f"{stats.get('corrupt')}; DLQ copies truncated {dlq_copies['truncated']}\n  dead-lettered: "
             + ", ".join(f"{k} {v}" for k, v in sorted(dead.items())))
    LEDGERS.append(table)
    print("\n" + table)
    assert unaccounted == 0 and misplaced == 0, table + "\n" + "\n".join(notes[:40]) + "\n" + proc.log()[-3000:]
    assert crashes == 0 and stalled == 0 and not blinded, table + f"\nblinded {blinded}\n" + proc.log()[-3000:]
    assert set(dead) >= {"value_too_large", "corrupt_record", "bad_audio_values", "time_in_future", "late",
                         "rate_limited"}
    assert stats["nonfinite"] >= 2 and stats["corrupt"] == 1
    big = dlq_copies["value_too_large"]
    assert big["fw_truncated"] == "1" and int(big["fw_original_size"]) == 2_097_142
    assert big["size"] <= 2 * 1024 * 1024


def _dlq_headers(ks, bootstrap, topics) -> dict:
    """Headers of the oversized record's copy and how many copies were truncated."""
    from kafka import TopicPartition

    from services.kafka import make_consumer

    c = make_consumer(ks, bootstrap, None)
    tps = [TopicPartition(topics.dlq, p) for p in range(ks.partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = {"truncated": 0}
    idle = time.monotonic()
    try:
        while time.monotonic() - idle < 2:
            for recs in c.poll(timeout_ms=300).values():
                idle = time.monotonic()
                for r in recs:
                    h = {k: v.decode(errors="replace") for k, v in r.headers}
                    if h.get("fw_truncated"):
                        out["truncated"] += 1
                    if h["fw_error"].startswith("value_too_large"):
                        out["value_too_large"] = h | {"size": len(r.value or b"") + sum(len(k) + len(v) for k, v in r.headers)}
    finally:
        c.close()
    return out
