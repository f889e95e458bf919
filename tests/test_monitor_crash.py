"""Exactly-once effect: SIGKILL at random moments, and members joining/leaving, change nothing.

Each scenario runs real monitor processes against the real broker and compares the event rows
with those of an uninterrupted run over the same input.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from schemas.tables import ConsumerOffset, Event
from services import db
from services.kafka import make_producer
from tests.support.streams import bright_fault_stream

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ["L1-S1", "L1-S2", "L2-S1", "L2-S2"]
FAULTS = {"L1-S2": (10, 18), "L2-S1": (25, 31), "L2-S2": (40, 52)}


@pytest.fixture
def crash_input(broker, make_topics):
    ks, topics = make_topics(partitions=4)
    producer = make_producer(ks, broker.bootstrap)
    topic_of = {"frames": topics.frames, "audio": topics.audio, "logs": topics.logs}
    ends: dict[tuple[str, int], int] = {}
    futures = []
    for kind, r in bright_fault_stream(ASSETS, time.time() - 300, 60, FAULTS):
        futures.append(producer.send(topic_of[kind.value], key=r.key, value=r.value, headers=r.headers))
    producer.flush()
    for f in futures:
        md = f.get(10)
        ends[(md.topic, md.partition)] = max(ends.get((md.topic, md.partition), 0), md.offset + 1)
    producer.close()
    return ks, topics, ends


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """A failing test must not leave monitor processes behind."""
    yield
    while _STARTED:
        p = _STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


def start_monitor(bootstrap, url, prefix, group) -> subprocess.Popen:
    return _track(subprocess.Popen([sys.executable, "-m", "tests.support.run_monitor", bootstrap, url, prefix, group],
                            cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def _track(p: subprocess.Popen) -> subprocess.Popen:
    _STARTED.append(p)
    return p


def finished(url: str, group: str, ends: dict) -> bool:
    engine = db.make_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(select(ConsumerOffset.topic, ConsumerOffset.partition, ConsumerOffset.next_offset)
                             .where(ConsumerOffset.group_id == group)).all()
            open_events = c.scalar(select(func.count()).select_from(Event).where(Event.status == "open"))
    finally:
        engine.dispose()
    done = {(t, p): o for t, p, o in rows}
    return all(done.get(tp, -1) >= end for tp, end in ends.items()) and open_events == 0


def committed(url: str, group: str) -> int:
    """How far the group has got through the input: the sum of its committed next offsets."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as c:
            return int(c.scalar(select(func.coalesce(func.sum(ConsumerOffset.next_offset), 0))
                                .where(ConsumerOffset.group_id == group)))
    finally:
        engine.dispose()


def event_rows(url: str):
    engine = db.make_engine(url)
    with db.session_factory(engine)() as s:
        rows = [(e.id, e.asset_id, e.start_time, e.end_time, e.status, e.windows, round(e.peak_score, 4),
                 sorted(e.serials)) for e in s.scalars(select(Event).order_by(Event.start_time))]
    engine.dispose()
    return rows


def wait_done(procs, url, group, ends, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not finished(url, group, ends):
        assert time.monotonic() < deadline, "monitor did not finish the input in time"
        time.sleep(0.5)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.wait(30) == 0


@pytest.mark.slow
def test_sigkill_at_random_moments_changes_nothing(broker, crash_input, tmp_path, unique_group):
    ks, topics, ends = crash_input
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    crashed_url = f"sqlite:///{tmp_path / 'crashed.db'}"
    for url in (reference_url, crashed_url):
        db.upgrade(url)

    group = unique_group()
    wait_done([start_monitor(broker.bootstrap, reference_url, ks.topic_prefix, group)], reference_url, group, ends)
    reference = event_rows(reference_url)
    assert {r[1] for r in reference} == set(FAULTS)

    rng = random.Random(7)
    group = unique_group()
    kills_mid_run = 0
    for _ in range(4):
        before = committed(crashed_url, group)
        p = start_monitor(broker.bootstrap, crashed_url, ks.topic_prefix, group)
        # kill somewhere inside the processing: once this process has committed something (the group
        # join alone takes ~3 s, and on a fast machine the whole input then takes ~1 s), a little later
        deadline = time.monotonic() + 60
        while committed(crashed_url, group) == before and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        p.kill()
        p.wait()
        if finished(crashed_url, group, ends):
            break
        kills_mid_run += 1
    if not finished(crashed_url, group, ends):  # (a monitor started after the input is done would get
        # the SIGTERM while still importing, before its stop handlers exist, and die of it)
        wait_done([start_monitor(broker.bootstrap, crashed_url, ks.topic_prefix, group)], crashed_url, group, ends)
    assert kills_mid_run >= 1  # at least one SIGKILL landed with work still in flight
    assert event_rows(crashed_url) == reference


@pytest.mark.slow
def test_member_joining_and_leaving_changes_nothing(broker, crash_input, tmp_path, unique_group):
    ks, topics, ends = crash_input
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    shared_url = f"sqlite:///{tmp_path / 'shared.db'}"
    for url in (reference_url, shared_url):
        db.upgrade(url)
    group = unique_group()
    wait_done([start_monitor(broker.bootstrap, reference_url, ks.topic_prefix, group)], reference_url, group, ends)

    group = unique_group()
    first = start_monitor(broker.bootstrap, shared_url, ks.topic_prefix, group)
    time.sleep(4.0)
    second = start_monitor(broker.bootstrap, shared_url, ks.topic_prefix, group)  # joins: rebalance
    time.sleep(5.0)
    second.send_signal(signal.SIGTERM)  # leaves: rebalance again
    assert second.wait(30) == 0
    wait_done([first], shared_url, group, ends)
    assert event_rows(shared_url) == event_rows(reference_url)
