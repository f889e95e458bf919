"""SIGKILL exactly before and exactly after the SQL commit (fault points), then restart."""

from __future__ import annotations

import signal
import uuid

import pytest

from services import db
from tests.faults import ledger
from tests.faults.procs import MonitorProc, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_sigkill_at_the_commit_loses_and_duplicates_nothing(point, broker, scenario_input, reference, tmp_path):
    inp = scenario_input
    url = f"sqlite:///{tmp_path / 'faulted.db'}"
    db.upgrade(url)
    group = f"kill-{uuid.uuid4().hex[:8]}"
    procs = []
    # Small batches (the reference used the default 64) make more commits to aim at, and prove
    # that batching does not change results. Three deaths at the same point, then a clean finish.
    small = {"FW_MONITOR__MAX_BATCH": "8", "FW_KAFKA__MAX_POLL_RECORDS": "100"}
    for i, n in enumerate((2, 3, 2)):
        p = MonitorProc(tmp_path, f"m{i}", broker.bootstrap, url, inp.prefix, group,
                        env=small | {"FW_FAULT_POINTS": f"{point}={n}"})
        procs.append(p)
        rc = p.wait_exit(60)
        assert rc == -signal.SIGKILL, f"expected the fault point to kill the process:\n{p.log()[-3000:]}"
        assert f"fault point {point} reached" in p.log()
    assert not ledger.finished(url, group, inp.ends), "the kills came too late to interrupt anything"
    last = MonitorProc(tmp_path, "final", broker.bootstrap, url, inp.prefix, group, env=small)
    procs.append(last)
    wait_for(lambda: ledger.finished(url, group, inp.ends), 180, "the restarted monitor to finish", procs=[last])
    assert last.stop() == 0
    lg = ledger.build(f"SIGKILL {point} x3", inp.records, url, group,
                      ledger.read_dlq(inp.kafka, broker.bootstrap, inp.topics),
                      reference.events, reference.outbox, [p.stats() for p in procs])
    lg.assert_clean()
    assert lg.reread > 0  # the restarts really did re-read uncommitted input
