"""`fusionwatch ingest logs` on logs as sites have them: syslog (RFC 3164 / 5424), ECS and
structlog JSON, logfmt — read from real files (the samples in docs/samples/logs/ and files
written here) and checked against the wire contract; and a followed file's saved position,
through restarts with appends, rotation, truncation and replacement in between, and through a
real broker with SIGTERM and a restart of the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from schemas.envelope import Accepted, Kind, decode
from schemas.errors import ConfigError, DependencyUnavailable
from services.ingest.common import IngestStats
from services.ingest.logformats import parse_line, parse_zone
from services.ingest.logs import log_records
from services.ingest.position import PositionStore, PositionTracker

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "docs" / "samples" / "logs"
REF = datetime(2026, 12, 5, 3, 30, tzinfo=timezone.utc).timestamp()  # "now" for the samples' RFC 3164 years

# (time as RFC 3339 in UTC or None, message, level, host) for every line of every sample
EXPECTED = {
    "syslog-rfc3164.log": [
        ("2026-10-11T22:14:15", "su: 'su root' failed for lonvick on /dev/pts/8", "CRITICAL", "mymachine"),
        ("2026-12-05T03:29:00", "line3-plc: E-STOP pressed at station 2", "NOTICE", "plc-gw"),
        ("2026-12-05T03:29:01", "kernel: usb 1-1: new high-speed USB device number 4", None, "plc-gw"),
        ("2026-12-05T03:29:02", "CRON: (root) CMD (run-parts /etc/cron.hourly)", None, None),
        ("2026-12-05T02:29:03.125", "line3-plc: rsyslog high-precision file format", None, "plc-gw"),
    ],
    "syslog-rfc5424.log": [
        ("2003-10-11T22:14:15.003", "evntslog: An application event log entry... iut=3 eventSource=Application "
         "eventID=1011", "NOTICE", "mymachine.example.com"),
        ("2003-08-24T12:14:15.000003", "myproc: %% It's time to make the do-nuts.", "NOTICE", "192.0.2.1"),
        ("2026-12-05T03:29:10.5", "line3-plc: motor overcurrent on axis 2", "ERROR", "plc-gw"),
    ],
    "ecs.jsonl": [
        ("2026-12-05T03:29:01", "spindle temperature high station=S2 temp_c=81.5", "warn", None),
        ("2026-12-05T03:29:02.25", "PLC connection lost", "error", "gw-3"),
    ],
    "structlog.jsonl": [
        ("2026-12-05T03:29:02", 'cycle complete duration_ms=812 part="P 7"', "info", None),
        ("2026-12-05T03:29:05.5", "door opened", "warning", None),
        ("2026-12-05T03:29:06", "cycle 7 complete", "INFO", None),
    ],
    "logfmt.log": [
        ("2026-12-05T03:29:04", 'pressure "high" at valve valve=V3 bar=7.2', "warn", None),
        ("2026-12-05T03:29:04", "started", "info", None),
        ("2026-12-05T03:29:05.25", "feeder jammed", "error", None),
    ],
}


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_line_gives_its_time_level_message_and_host(name):
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(EXPECTED[name])
    for line, (t, msg, level, host) in zip(lines, EXPECTED[name]):
        got = parse_line(line, timezone.utc, REF)
        assert (got.msg, got.fields.get("level"), got.host) == (msg, level, host), line
        assert got.time == pytest.approx(utc(t), abs=1e-6), line
    assert parse_line((SAMPLES / "structlog.jsonl").read_text().splitlines()[2]).fields == {
        "level": "INFO", "code": "C100", "serial": "SN-7"}
    assert parse_line((SAMPLES / "syslog-rfc5424.log").read_text().splitlines()[2]).fields["code"] == "E101"


def test_syslog_json_and_logfmt_lines_keep_their_own_time_through_the_contract(tmp_path):
    """The issue's case: a line written 76 s before it is read is stamped with its own time."""
    now = time.time()
    t = float(int(now - 76))  # RFC 3164 has whole seconds
    stamp3164 = datetime.fromtimestamp(t, timezone.utc).strftime("%b %e %H:%M:%S")
    iso = datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
    log = tmp_path / "mixed.log"
    log.write_text("\n".join([
        f"<11>{stamp3164} plc-gw line3-plc[812]: E-STOP pressed",
        f"<14>1 {iso} plc-gw line3-plc 812 - - cycle done",
        f'{{"event": "door opened", "timestamp": "{iso}", "level": "warning", "station": 2}}',
        f'{{"@timestamp": "{iso}", "log.level": "info", "message": "ECS line", "ecs.version": "1.6.0"}}',
        f'time={iso} level=warn msg="valve slow" valve=V3',
        "<14>1 - - - - - -",  # a header and nothing said: no record (the contract refuses empty lines)
    ]) + "\n")
    stats = IngestStats(str(log), "L3-S2")
    recs = list(log_records(log, "L3-S2", stats, zone=timezone.utc))
    results = [decode(k, r.key, r.value, r.headers, now=time.time()) for k, r, _ in recs]
    assert all(isinstance(x, Accepted) for x in results), results
    assert [x.envelope.time for x in results] == pytest.approx([t] * 5, abs=1e-6)
    assert [(x.payload.msg, x.payload.level) for x in results] == [
        ("line3-plc: E-STOP pressed", "ERROR"), ("line3-plc: cycle done", "INFO"),
        ("door opened station=2", "warning"), ("ECS line", "info"), ("valve slow valve=V3", "warn")]
    assert results[0].envelope.source == "//plc-gw/ingest/logs/mixed.log"  # the host, kept
    assert results[3].envelope.source == "/ingest/logs/mixed.log"


def test_times_without_a_zone_are_read_in_the_given_zone_and_rfc3164_years_are_inferred():
    line = "Jul  1 12:00:00 host app: summer"
    ref = utc("2026-12-05T00:00:00")
    assert parse_line(line, timezone.utc, ref).time == utc("2026-07-01T12:00:00")
    assert parse_line(line, parse_zone("Europe/Berlin"), ref).time == utc("2026-07-01T10:00:00")  # CEST
    assert parse_line("2026-01-10 12:00:00 winter", parse_zone("Europe/Berlin")).time == utc("2026-01-10T11:00:00")
    assert parse_line("2026-01-10 12:00:00+05:30 explicit", parse_zone("Europe/Berlin")).time == utc("2026-01-10T06:30:00")
    # a line from the last days of December read in early January belongs to last year
    assert parse_line("Dec 31 23:59:00 host app: late", timezone.utc, utc("2027-01-01T00:05:00")).time == \
        utc("2026-12-31T23:59:00")
    # up to a day ahead (a sender's clock) stays this year; Feb 29 goes back to the last leap year
    assert parse_line("Dec  5 12:00:00 host app: x", timezone.utc, utc("2026-12-05T00:00:00")).time == \
        utc("2026-12-05T12:00:00")
    assert parse_line("Feb 29 08:00:00 host app: leap", timezone.utc, utc("2027-03-01T00:00:00")).time == \
        utc("2024-02-29T08:00:00")
    with pytest.raises(ConfigError, match="IANA"):
        parse_zone("Mars/Olympus")


def test_prose_stays_text_and_a_broken_json_line_is_still_sent():
    for line in ("a=1 b=2", "motor speed = 1200 rpm", '{"broken": ', '{"no": "message"}', "<999>not syslog",
                 "Mar is not a month here"):
        got = parse_line(line)
        assert (got.format, got.msg, got.time) == ("text", line, None), line
    assert parse_line("level=info status=200 path=/x").msg == "status=200 path=/x"
    # a small number in a time field is an uptime or a counter, not 1970: the reader's clock stamps the line
    assert parse_line('{"msg": "boot done", "ts": 12.5}').time is None
    assert parse_line('{"msg": "cooling", "t": 81.2}').msg == "cooling t=81.2"


# --- a followed file's position --------------------------------------------------------------


def follow_run(log: Path, position: Path, until: str, from_start: bool = False, flush=None) -> list[str]:
    """One run of a follower until it hands out the line `until`, then a clean stop: what the
    ingest loop does (mark each record sent, flush and save at the end). A missing line ends
    the run through a safety timer instead of hanging; the assertions then show what was read."""
    tracker = PositionTracker(PositionStore(position, log))
    tracker.flush = flush or (lambda: None)
    stop = threading.Event()
    safety = threading.Timer(30, stop.set)
    safety.start()
    got: list[str] = []
    try:
        for kind, rec, _ in log_records(log, "L1-S1", IngestStats(str(log), "L1-S1"), follow=True,
                                        from_start=from_start, stop=stop, poll_s=0.02, tracker=tracker):
            got.append(decode(kind, rec.key, rec.value, rec.headers, now=time.time()).payload.msg)
            tracker.mark_sent()
            if got[-1] == until:
                break
    finally:
        safety.cancel()
        tracker.checkpoint()
    return got


def append(path: Path, *lines: str) -> None:
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def test_a_restart_neither_loses_nor_repeats_a_line(tmp_path):
    log, pos = tmp_path / "app.log", tmp_path / "pos.json"
    append(log, "a1", "a2", "a3")
    assert follow_run(log, pos, "a3", from_start=True) == ["a1", "a2", "a3"]
    # written while ingest was down (with a blank line): read from the saved position, not from the end
    append(log, "a4", "", "a5")
    assert follow_run(log, pos, "a5") == ["a4", "a5"]
    # rotated while down, and the app wrote one more line to the old file before it reopened:
    # the rest of the rotated file first, then the new one from its start
    append(log, "a6")
    os.rename(log, tmp_path / "app.log.1")
    append(tmp_path / "app.log.1", "a7")
    append(log, "b1", "b2")
    assert follow_run(log, pos, "b2") == ["a6", "a7", "b1", "b2"]
    # truncated while down (copytruncate), then shorter new content
    log.write_text("c1\n")
    assert follow_run(log, pos, "c1") == ["c1"]
    # replaced while down by a longer file (which may well reuse the inode): the fingerprint of its
    # first bytes tells it is new, so it is read from its start, not from the old offset
    os.unlink(log)
    append(log, "d1 a longer first line than the old file had", "d2")
    assert follow_run(log, pos, "d2") == ["d1 a longer first line than the old file had", "d2"]


def test_the_position_is_saved_only_after_the_producer_flushed(tmp_path):
    log, pos = tmp_path / "app.log", tmp_path / "pos.json"
    append(log, "x1", "x2")
    assert follow_run(log, pos, "x2", from_start=True) == ["x1", "x2"]

    def broken_flush():
        raise DependencyUnavailable("records were not delivered")

    append(log, "x3")
    with pytest.raises(DependencyUnavailable):
        follow_run(log, pos, "x3", flush=broken_flush)
    # x3 was never acknowledged: sent again, not lost
    append(log, "x4")
    assert follow_run(log, pos, "x4") == ["x3", "x4"]


def test_an_unreadable_position_file_says_what_to_do(tmp_path):
    pos = tmp_path / "pos.json"
    pos.write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        PositionTracker(PositionStore(pos, tmp_path / "app.log"))


# --- the real command, through a real broker -----------------------------------------------------


@pytest.mark.slow
def test_follow_through_sigterm_and_restart_delivers_every_line_once(broker, make_topics, tmp_path):
    from tests.test_simulator import read_topics

    ks, topics = make_topics(partitions=2)
    env = os.environ | {"FW_KAFKA__TOPIC_PREFIX": ks.topic_prefix, "FW_KAFKA__PARTITIONS": str(ks.partitions),
                        "FW_VAR_DIR": str(tmp_path / "var")}
    log = tmp_path / "plc.log"
    cmd = [sys.executable, "-m", "services.cli", "ingest", "logs", str(log), "--asset", "L2-S1", "--follow",
           "--from-start", "--timezone", "UTC", "--bootstrap", broker.bootstrap]

    def line(i: int) -> str:
        stamp = datetime.fromtimestamp(time.time() - 30, timezone.utc).strftime("%b %e %H:%M:%S")
        return f"<14>{stamp} plc-gw line2-plc[9]: cycle {i} complete"

    def run_until(n_total: int) -> None:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert len(read_topics(broker.bootstrap, ks, topics, n_total, timeout_s=60)) >= n_total
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    append(log, *(line(i) for i in range(3)))
    run_until(3)
    append(log, *(line(i) for i in range(3, 6)))  # written while ingest was stopped
    os.rename(log, tmp_path / "plc.log.1")
    append(tmp_path / "plc.log.1", line(6))
    append(log, *(line(i) for i in range(7, 9)))
    run_until(9)
    append(log, line(9))  # the sentinel: once it is there, every earlier line was read
    run_until(10)
    got = read_topics(broker.bootstrap, ks, topics, 11, timeout_s=3)
    msgs = sorted(decode(Kind.LOG, m.key, m.value, m.headers, now=time.time()).payload.msg for m in got)
    assert msgs == sorted(f"line2-plc: cycle {i} complete" for i in range(10))
