"""The database goes away, or gets slow, under a running monitor (PostgreSQL behind a TCP proxy).

- outage: the proxy resets every connection and refuses new ones for a while. The monitor must
  neither crash nor crash-loop: it retries the same transaction with backoff, pauses consumption
  (backpressure) meanwhile, and finishes with exactly the reference events once the database is
  back.
- slow database, with a member joining and leaving mid-batch: every packet to PostgreSQL is delayed
  (10 ms), a fault point holds the first member inside a commit transaction for 4 s while a second
  member joins, and the second leaves again with its own commits in flight. Revocation waits for the batch in flight; the new owner starts
  from the committed offsets; nothing is lost or written twice.
"""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy.engine import make_url

from tests.faults import ledger
from tests.faults.procs import MonitorProc, wait_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def proxied(pg_url: str, proxy: TcpProxy) -> str:
    return make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def test_database_outage_no_crash_loop_nothing_lost(broker, scenario_input, reference, pg_url, tmp_path):
    inp = scenario_input
    u = make_url(pg_url)
    proxy = TcpProxy(u.host, u.port or 5432)
    group = f"dbout-{uuid.uuid4().hex[:8]}"
    small = {"FW_MONITOR__MAX_BATCH": "8", "FW_KAFKA__MAX_POLL_RECORDS": "100"}
    p = MonitorProc(tmp_path, "monitor", broker.bootstrap, proxied(pg_url, proxy), inp.prefix, group, env=small)
    try:
        wait_for(lambda: p.stats().get("commits", 0) >= 2, 90, "two commits before the outage", procs=[p])
        proxy.cut()
        # the stats file is rewritten every 0.3 s: read the count once it has caught up with the cut
        # (a commit that was already under way may still land), then no commit may follow
        time.sleep(1.0)
        commits_in_outage = p.stats().get("commits", 0)
        time.sleep(7.0)
        assert p.proc.poll() is None, "the monitor died during the database outage:\n" + p.log()[-3000:]
        assert p.stats().get("commits", 0) == commits_in_outage, "committed while the database was away"
        assert "database write failed" in p.log()
        proxy.restore()
        wait_for(lambda: ledger.finished(pg_url, group, inp.ends), 120, "the monitor to catch up after the outage",
                 procs=[p])
        assert p.stop() == 0
    finally:
        p.kill()
        proxy.close()
    lg = ledger.build("database outage 8 s (PostgreSQL)", inp.records, pg_url, group,
                      ledger.read_dlq(inp.kafka, broker.bootstrap, inp.topics), reference.events, reference.outbox,
                      [p.stats()])
    lg.assert_clean()


def test_slow_database_with_members_joining_and_leaving_mid_batch(broker, scenario_input, reference, pg_url, tmp_path):
    """Mid-batch is made certain for the join: a fault point holds the first member inside its second
    commit transaction (`before_commit=2:sleep4`, row locks held) while the second joins; the second
    then leaves (SIGTERM) with its own slow commits in flight."""
    inp = scenario_input
    u = make_url(pg_url)
    proxy = TcpProxy(u.host, u.port or 5432, delay_s=0.01)
    url = proxied(pg_url, proxy)
    group = f"slow-{uuid.uuid4().hex[:8]}"
    small = {"FW_MONITOR__MAX_BATCH": "8", "FW_KAFKA__MAX_POLL_RECORDS": "100"}
    first = MonitorProc(tmp_path, "first", broker.bootstrap, url, inp.prefix, group,
                        env=small | {"FW_FAULT_POINTS": "before_commit=2:sleep4"})
    second = None
    try:
        wait_for(lambda: "fault point before_commit reached (2)" in first.log(), 90,
                 "the first member to be inside its second commit", procs=[first])
        # joins while the first member holds a batch inside its transaction: the rebalance waits for it
        second = MonitorProc(tmp_path, "second", broker.bootstrap, url, inp.prefix, group, env=small)
        wait_for(lambda: second.stats().get("assigned") and 0 < len(first.stats().get("assigned", [])) < 12,
                 90, "the partitions to be shared", procs=[first, second])
        time.sleep(2.0)  # the second member works its share for a moment (slow commits in flight)
        assert second.stop() == 0  # leaves while its own batch is held in the transaction: rebalance again
        wait_for(lambda: ledger.finished(pg_url, group, inp.ends), 180, "the remaining member to finish",
                 procs=[first])
        assert first.stop() == 0
    finally:
        for p in (first, second):
            if p is not None:
                p.kill()
        proxy.close()
    lg = ledger.build("slow DB + join/leave mid-batch", inp.records, pg_url, group,
                      ledger.read_dlq(inp.kafka, broker.bootstrap, inp.topics), reference.events, reference.outbox,
                      [first.stats(), second.stats()])
    lg.assert_clean()
