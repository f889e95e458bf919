"""A consumer catching up a backlog slowly must reach the same result as a fast one.

Regression for a monitor bug found by this suite: idleness was measured in wall time since a
modality's last record *arrived*, so when the consumer read one partition ahead of another
(small polls, a slow machine, a long backlog), the modality still waiting its turn was declared
idle, windows closed without it, and its records — whole partitions of them — were dead-lettered
as late; with them went events. The aligner now holds the watermark of a modality whose partition
still has unread records (`WindowAligner.hold`), and a new asset's grace for unseen modalities is
checked before "the asset went quiet".
"""

from __future__ import annotations

import uuid

import pytest

from schemas.envelope import Envelope, Kind, LogPayload
from services import db
from streamlogic.windows import WindowAligner
from tests.faults import ledger
from tests.faults.procs import MonitorProc, wait_for


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _env(kind: Kind, t: float) -> Envelope:
    return Envelope(kind, "id", "/s", "A1", t, "text/plain")


def test_a_modality_waiting_in_the_backlog_is_not_idle():
    clock = Clock()
    al = WindowAligner(2.0, 1.0, 2.0, idle_timeout_s=1.0, clock=clock)
    for i in range(40):  # frames read far ahead (t = 0..9.75)
        al.add(_env(Kind.FRAME, i / 4), LogPayload("x"))
    clock.t = 5.0  # much longer than the idle timeout, but audio and logs are still unread
    al.hold({None: [Kind.AUDIO, Kind.LOG, Kind.FRAME]})
    assert al.ready() == []  # without hold: the asset looks quiet and every window closes now
    clock.t = 10.0  # caught up everywhere, nothing held: now it really is quiet
    assert len(al.ready()) > 5


def test_new_asset_grace_comes_before_quietness():
    clock = Clock()
    al = WindowAligner(2.0, 1.0, 2.0, idle_timeout_s=1.0, clock=clock)
    al.add(_env(Kind.LOG, 1.0), LogPayload("x"))
    clock.t = 0.5
    assert al.ready() == []  # within the grace for frames/audio not seen yet
    clock.t = 3.0
    assert al.ready()  # grace over, no one else came: released


@pytest.mark.faults
@pytest.mark.slow
def test_throttled_catch_up_equals_the_reference(broker, scenario_input, reference, tmp_path):
    inp = scenario_input
    url = f"sqlite:///{tmp_path / 'throttled.db'}"
    db.upgrade(url)
    group = f"throttle-{uuid.uuid4().hex[:8]}"
    p = MonitorProc(tmp_path, "throttled", broker.bootstrap, url, inp.prefix, group,
                    env={"FW_KAFKA__MAX_POLL_RECORDS": "50", "FW_MONITOR__MAX_BATCH": "4"})
    wait_for(lambda: ledger.finished(url, group, inp.ends), 180, "the throttled monitor to finish", procs=[p])
    assert p.stop() == 0
    lg = ledger.build("throttled catch-up (50-record polls)", inp.records, url, group,
                      ledger.read_dlq(inp.kafka, broker.bootstrap, inp.topics), reference.events, reference.outbox,
                      [p.stats()])
    lg.assert_clean()
