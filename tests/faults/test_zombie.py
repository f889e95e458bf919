"""A monitor frozen (SIGSTOP) past its session timeout, then thawed (SIGCONT): a zombie.

The group gives its partitions to another member while it sleeps. When it wakes it still holds
scored batches and believes it owns the partitions; the sink's fenced offsets must refuse every
one of those writes (`Fenced`), so nothing stale reaches SQL: no offset moves backwards, no event
row changes, and the final result equals the fault-free reference.

The freeze is aimed with a fault point (`after_commit=2:stop`: SIGSTOP right after the second
commit, with more batches queued behind it) rather than by a timer, so the zombie is certain to
have work in flight when it wakes.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from services import db
from tests.faults import ledger
from tests.faults.procs import MonitorProc, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SESSION_TIMEOUT_S = 6.0  # KafkaSettings.session_timeout_ms


def test_zombie_after_session_timeout_is_fenced(broker, scenario_input, reference, tmp_path):
    inp = scenario_input
    url = f"sqlite:///{tmp_path / 'zombie.db'}"
    db.upgrade(url)
    group = f"zombie-{uuid.uuid4().hex[:8]}"
    small = {"FW_MONITOR__MAX_BATCH": "8", "FW_KAFKA__MAX_POLL_RECORDS": "100"}
    zombie = MonitorProc(tmp_path, "zombie", broker.bootstrap, url, inp.prefix, group,
                         env=small | {"FW_FAULT_POINTS": "after_commit=2:stop"})
    zombie.wait_state("T", 90)
    frozen_at = time.monotonic()
    stats_at_freeze = zombie.stats()
    successor = MonitorProc(tmp_path, "successor", broker.bootstrap, url, inp.prefix, group, env=small)
    # the successor gets every partition only once the zombie's session has expired
    wait_for(lambda: ledger.finished(url, group, inp.ends), 120, "the successor to finish the input",
             procs=[successor])
    assert time.monotonic() - frozen_at > SESSION_TIMEOUT_S
    offsets_before, _ = ledger.committed(url, group)
    events_before = ledger.event_rows(url)

    zombie.signal(signal.SIGCONT)
    # awake: it tries to commit what it scored before the freeze, is fenced, rejoins the group
    wait_for(lambda: zombie.stats().get("fenced", 0) >= 1, 60, "the zombie's stale commit to be fenced",
             procs=[zombie, successor])
    time.sleep(3.0)  # let the rejoin/rebalance settle while both run
    offsets_after, _ = ledger.committed(url, group)
    went_back = {tp: (off, offsets_after[tp]) for tp, off in offsets_before.items() if offsets_after[tp] < off}
    assert ledger.event_rows(url) == events_before, "the zombie changed event rows"
    assert "fenced on" in zombie.log()
    # Regression: a batch the zombie cut before its fence-triggered reload once passed the fresh
    # fencing token and moved offsets (and stream states) back; the next owner then dead-lettered
    # the records in between as late. Batches now carry the ownership epoch they were cut under.
    assert not went_back, f"offsets moved back after the zombie woke: {went_back}"
    wait_for(lambda: ledger.finished(url, group, inp.ends), 60, "the group to settle", procs=[zombie, successor])
    assert successor.stop() == 0
    assert zombie.stop() == 0  # a fenced zombie carries on as a healthy member; it does not crash
    lg = ledger.build("SIGSTOP > session timeout, SIGCONT", inp.records, url, group,
                      ledger.read_dlq(inp.kafka, broker.bootstrap, inp.topics), reference.events, reference.outbox,
                      [zombie.stats(), successor.stats()])
    lg.notes.append(f"zombie committed {stats_at_freeze.get('commits')} batches before the freeze")
    lg.assert_clean()
    assert lg.fenced >= 1
