"""The monitor against a real broker and real databases: events, DLQ, offsets in SQL."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from schemas.tables import ConsumerOffset, Event, Outbox
from services import db
from services.kafka import make_consumer, make_producer
from services.monitor.service import Monitor
from services.settings import Settings
from tests.support.scorers import BrightnessScorer
from tests.support.streams import bright_fault_stream, produce


def run_until(monitor: Monitor, done, timeout_s: float = 90.0):
    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout_s
    while t.is_alive() and not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    t.join(30)
    assert not t.is_alive()


@pytest.mark.slow
def test_monitor_records_events_and_dead_letters(broker, make_topics, unique_group, db_url):
    ks, topics = make_topics(partitions=2)
    settings = Settings(kafka=ks)
    start = time.time() - 120
    stream = bright_fault_stream(["L1-S1", "L1-S2", "L2-S1"], start, 30, {"L1-S2": (10, 18)})
    producer = make_producer(ks, broker.bootstrap)
    produce(producer, topics, stream)
    # poison: wrong content type, corrupt JPEG, far-future time, key/asset mismatch
    from schemas.envelope import encode_frame, encode_log

    bad = encode_frame("L1-S1", "/x", start + 5, b"\xff\xd8not a jpeg")
    producer.send(topics.frames, key=bad.key, value=bad.value, headers=bad.headers)
    far = encode_log("L1-S1", "/x", time.time() + 10 * 86400, "from the future")
    producer.send(topics.logs, key=far.key, value=far.value, headers=far.headers)
    mism = encode_log("L1-S1", "/x", start + 6, "wrong key")
    producer.send(topics.logs, key=b"L9-S9", value=mism.value, headers=mism.headers)
    producer.flush()
    total = len(stream) + 3

    engine = db.make_engine(db_url)
    monitor = Monitor(settings, broker.bootstrap, engine, BrightnessScorer(), topics, group_id=unique_group())
    factory = db.session_factory(engine)

    def closed_events():
        with factory() as s:
            return s.scalars(select(Event).where(Event.status == "closed")).all()

    run_until(monitor, lambda: monitor.stats.records >= total and closed_events())
    events = closed_events()
    assert [e.asset_id for e in events] == ["L1-S2"]
    ev = events[0]
    assert ev.closed_by == "scores"
    # bright frames from 10 s to 18 s: windows [9,11) ... [17,19) are over 0.5 mean brightness only when
    # most of their frames are bright -> the event spans roughly the fault
    assert abs(ev.start_time.timestamp() - (start + 10)) <= 2.0
    assert abs(ev.end_time.timestamp() - (start + 18)) <= 2.0
    assert ev.evidence["frames"][0]["first"] <= ev.evidence["frames"][0]["last"]
    assert ev.serials and all(s.startswith("SN-L1-S2-") for s in ev.serials)
    assert monitor.stats.rejected == 3
    with factory() as s:
        offsets = s.scalars(select(ConsumerOffset)).all()
        outbox = s.scalars(select(Outbox).order_by(Outbox.id)).all()
    assert offsets and all(o.next_offset >= 0 for o in offsets)
    assert [o.change for o in outbox] == ["opened", "closed"]

    dlq = make_consumer(ks, broker.bootstrap, unique_group())
    dlq.subscribe([topics.dlq])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 3 and time.monotonic() < deadline:
        for recs in dlq.poll(500).values():
            got.extend(recs)
    dlq.close()
    reasons = sorted(dict(r.headers)["fw_error"].decode().split(":")[0] for r in got)
    assert reasons == ["corrupt_image", "key_mismatch", "time_out_of_range"]
    assert all(dict(r.headers)["fw_original_topic"] in (topics.frames.encode(), topics.logs.encode()) for r in got)
    engine.dispose()


def test_an_event_open_when_its_station_stops_sending_closes(broker, make_topics, unique_group, sqlite_url):
    """A station switched off mid-fault sends no window to close its event: once it has sent
    nothing for `monitor.stream_stopped_s` (and nothing of it is left to read), the event closes
    at its last window over the threshold — also when the monitor that saw it open has gone and
    another continues from SQL. The station that stayed dark raises nothing."""
    from services.observability.metrics import STREAMS_STOPPED
    from services.settings import MonitorSettings

    closed_before = STREAMS_STOPPED.labels(closed="true")._value.get()
    ks, topics = make_topics(partitions=2)
    settings = Settings(kafka=ks, monitor=MonitorSettings(stream_stopped_s=3.0))
    start = time.time() - 120
    stream = bright_fault_stream(["L1-S1", "L1-S2"], start, 20, {"L1-S2": (10, 25)})  # bright to its last frame
    produce(make_producer(ks, broker.bootstrap), topics, stream)
    engine = db.make_engine(sqlite_url)
    factory = db.session_factory(engine)
    group = unique_group()

    def events():
        with factory() as s:
            return s.scalars(select(Event)).all()

    # a first monitor reads everything and stops with the event open (it would wait 10 minutes) ...
    patient = Settings(kafka=ks, monitor=MonitorSettings(stream_stopped_s=600.0))
    first = Monitor(patient, broker.bootstrap, engine, BrightnessScorer(), topics, group_id=group)
    run_until(first, lambda: first.stats.records >= len(stream) and [e.status for e in events()] == ["open"]
              and first.stage.work.unfinished_tasks == 0, timeout_s=60)
    assert [e.status for e in events()] == ["open"]
    # ... the next one, restored from SQL, finds the station silent and closes it
    monitor = Monitor(settings, broker.bootstrap, engine, BrightnessScorer(), topics, group_id=group)
    run_until(monitor, lambda: [e.status for e in events()] == ["closed"], timeout_s=60)
    [ev] = events()
    assert ev.asset_id == "L1-S2" and (ev.status, ev.closed_by) == ("closed", "stream_stopped")
    assert abs(ev.start_time.timestamp() - (start + 10)) <= 2.0
    assert abs(ev.end_time.timestamp() - (start + 20)) <= 2.0  # its last window, not when it was closed
    with factory() as s:
        outbox = s.scalars(select(Outbox).order_by(Outbox.id)).all()
    changes = [o.change for o in outbox]
    assert changes[0] == "opened" and changes[-1] == "closed" and changes.count("closed") == 1
    assert outbox[-1].payload["data"]["closed_by"] == "stream_stopped"  # on fw.events: why it closed
    # it continued the first monitor's event (its last windows, open at that one's shutdown, included)
    assert (monitor.stats.events_opened, monitor.stats.events_closed) == (0, 1)
    assert STREAMS_STOPPED.labels(closed="true")._value.get() == closed_before + 1
    engine.dispose()


@pytest.mark.slow
def test_database_outage_pauses_then_catches_up(broker, make_topics, unique_group, pg_url):
    """PostgreSQL behind a proxy we cut mid-run: the monitor retries, then finishes with the same events."""
    from sqlalchemy.engine import make_url

    from tests.support.tcp_proxy import TcpProxy

    ks, topics = make_topics(partitions=2)
    start = time.time() - 120
    stream = bright_fault_stream(["L1-S1", "L1-S2"], start, 40, {"L1-S1": (8, 14), "L1-S2": (24, 30)})
    produce(make_producer(ks, broker.bootstrap), topics, stream)

    u = make_url(pg_url)
    proxy = TcpProxy(u.host, u.port or 5432)
    proxied = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    engine = db.make_engine(proxied)
    monitor = Monitor(Settings(kafka=ks), broker.bootstrap, engine, BrightnessScorer(), topics, group_id=unique_group())
    factory = db.session_factory(db.make_engine(pg_url))

    def closed():
        with factory() as s:
            return s.scalars(select(Event).where(Event.status == "closed").order_by(Event.start_time)).all()

    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while not monitor.ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    # outage while input is still being processed: right after assignment, not after N commits
    # (dynamic batching may score the whole backlog in two); the idle flush commits >= 1 s later
    proxy.cut()
    time.sleep(4)
    outage_commits = monitor.stats.commits
    proxy.restore()
    deadline = time.monotonic() + 240  # generous: CI machines are slow and shared
    while len(closed()) < 2 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.3)
    stop.set()
    t.join(30)
    proxy.close()
    from services.observability.metrics import SQL_WRITE_FAILURES

    events = closed()
    assert [e.asset_id for e in events] == ["L1-S1", "L1-S2"]
    assert SQL_WRITE_FAILURES._value.get() > 0  # the outage was felt and retried
    assert monitor.stats.commits > outage_commits
    assert monitor.stats.records == len(stream)


def test_a_fenced_batch_reloads_every_topic_of_its_partitions(tmp_path, monkeypatch):
    """An asset's state spans partition p of all three input topics. A fenced batch that held
    offsets of only some of them (audio and logs, say: a small batch without frames) must still
    re-seek the frames partition too: left at its old position, it replayed records the restored
    state had passed, and an awake zombie dead-lettered them as late (tests/faults/test_zombie.py)."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    monitor = Monitor(Settings(), "127.0.0.1:9", engine, BrightnessScorer())
    t = monitor.topics
    monitor.book.assigned = {(topic, p) for topic in (t.frames, t.audio, t.logs) for p in (1, 3)}
    reloaded = []
    monkeypatch.setattr(monitor.recovery, "reload", lambda tps: reloaded.extend((tp.topic, tp.partition) for tp in tps))
    monitor.stage.fenced.put([(t.audio, 3), (t.logs, 3)])
    monitor.drain_feedback()
    assert sorted(reloaded) == sorted((topic, 3) for topic in (t.frames, t.audio, t.logs))
    assert monitor.stats.fenced == 1
    engine.dispose()


def test_a_stopped_stream_commits_state_only_where_it_changed_something(tmp_path, monkeypatch):
    """After a restart every silent asset of a partition stops again (a call centre: every call
    ever taken): only those whose state the stop changes — an open event closed, a count reset —
    are written; the others cost no SQL row."""
    from services.monitor.committer import CommitOutcome
    from services.monitor.scoring import Batch, Restore
    from streamlogic.event_lifecycle import EventLifecycle, ScoredWindow

    engine = db.make_engine(f"sqlite:///{tmp_path / 's.db'}")
    monitor = Monitor(Settings(), "127.0.0.1:9", engine, BrightnessScorer())
    life = EventLifecycle()
    for k in range(4):  # "open": an event open; "counting": one window over; "quiet": nothing
        life.update(ScoredWindow("open", 100.0 + k, 102.0 + k, 0.9, 0.5, "m"))
    life.update(ScoredWindow("counting", 100.0, 102.0, 0.9, 0.5, "m"))
    life.update(ScoredWindow("quiet", 100.0, 102.0, 0.1, 0.5, "m"))
    monitor.stage.put(Restore({a: life.state(a) for a in ("open", "counting", "quiet")}))
    monitor.stage.put(None)
    monitor.stage.run()
    committed = []
    monkeypatch.setattr(monitor.committer, "commit", lambda snap: committed.append(snap) or CommitOutcome("committed"))
    where = (0, 104.0, ["frames"])
    monitor.stage._score_and_commit(Batch([], {}, {}, {}, {}, stopped={a: where for a in ("open", "counting", "quiet")}))
    [snap] = committed
    assert sorted(snap.assets) == ["counting", "open"]
    assert [(c.change, c.data.asset, c.data.closed_by) for c in snap.changes] == [("closed", "open", "stream_stopped")]
    assert snap.assets["open"].lifecycle["open"] is None and snap.assets["counting"].lifecycle["over"] == 0
    engine.dispose()


def test_the_scorers_stream_state_is_committed_and_restored_with_the_asset_state(tmp_path):
    """The log memory and the adaptation are per-asset stream state: they travel with the
    lifecycle in the committed state, so a restarted monitor scores as the one that stopped."""
    import numpy as np

    from models.adaptation import BaselineConfig, SurpriseAdapter
    from models.logmemory import LogMemory
    from models.scorer import AnomalyScorer
    from services.monitor.scoring import Restore

    class MemoryScorer(BrightnessScorer):
        stream_state, restore_stream, forget_stream, adaptation, baseline_phase, rebaseline = (
            AnomalyScorer.stream_state, AnomalyScorer.restore_stream, AnomalyScorer.forget_stream,
            AnomalyScorer.adaptation, AnomalyScorer.baseline_phase, AnomalyScorer.rebaseline)

        def __init__(self):
            super().__init__()
            self.log_memory = LogMemory(3.0)
            self.adapter = SurpriseAdapter(BaselineConfig(step=0.1, learn_windows=2, judge_after=0))

    engine = db.make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    first = Monitor(Settings(), "127.0.0.1:9", engine, MemoryScorer())
    first.scorer.log_memory.hold("L1-S1", 100.0, 0.9, True)
    for _ in range(3):
        first.scorer.adapter.adapt("L1-S1", np.array([5.0, 0.1]), np.array([True, True]))
    state = first.stage.asset_state("L1-S1")
    assert state["log_memory"][0]["value"] == pytest.approx(0.9) and "over" in state
    assert state["adaptation"]["seen"] == 3 and state["adaptation"]["phase"] == "watching"

    second = Monitor(Settings(), "127.0.0.1:9", engine, MemoryScorer())
    second.stage.put(Restore({"L1-S1": state | {"expected": ["frames"]}}))
    second.stage.put(None)
    second.stage.run()
    assert second.scorer.log_memory.hold("L1-S1", 102.0, 0.1, True)[0].value == pytest.approx(0.9)
    window = (np.array([5.0, 0.1]), np.array([True, True]))
    assert second.scorer.adapter.adapt("L1-S1", *window) == pytest.approx(first.scorer.adapter.adapt("L1-S1", *window))
    assert second.scorer.adapter.adapt("L1-S1", *window)[0] < 5.0  # learned: the shift is taken off
    assert second.scorer.adaptation("L1-S1")["frames"] > 0 and second.scorer.adaptation("L9-S9") == {}
    assert not {"log_memory", "adaptation"} & set(second.stage.lifecycle.state("L1-S1"))
    second.stage.forget("L1-S1")
    assert second.scorer.log_memory.state("L1-S1") == [] and second.scorer.adapter.state("L1-S1") == {}
    engine.dispose()


@pytest.mark.slow
def test_a_station_learns_its_own_normal_and_an_operator_can_reset_it(broker, make_topics, unique_group, sqlite_url):
    """Through the real monitor: station L1-S1 sits over the threshold from its first window (a camera
    the model never saw): while it learns only the guard threshold may open an event, and once its
    baseline is learned it is judged normal — no alarm that never ends. L1-S2's fault after learning
    opens an event (not marked learning). An operator's "new normal" for L1-S1, recorded in SQL, is
    applied by the monitor in the transaction that commits the restarted baseline."""
    from schemas.tables import BaselineReset, MonitorState
    from services import baselines
    from services.observability.metrics import ASSET_LEARNING
    from tests.support.scorers import BaselineScorer
    from tests.support.streams import level_stream

    ks, topics = make_topics(partitions=2)
    start = time.time() - 300
    stream = level_stream({"L1-S1": 160, "L1-S2": [(50, 60, 220)]}, start, 70)
    producer = make_producer(ks, broker.bootstrap)
    produce(producer, topics, stream)
    engine = db.make_engine(sqlite_url)
    factory = db.session_factory(engine)
    monitor = Monitor(Settings(kafka=ks), broker.bootstrap, engine, BaselineScorer(learn_windows=40), topics,
                      group_id=unique_group())

    def events():
        with factory() as s:
            return s.scalars(select(Event).order_by(Event.start_time)).all()

    def state(asset):
        with factory() as s:
            return s.get(MonitorState, (monitor.group_id, asset)).lifecycle["adaptation"]

    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while t.is_alive() and not (monitor.stats.records >= len(stream) and [e for e in events() if e.status == "closed"]):
        assert time.monotonic() < deadline, "the fault's event never closed"
        time.sleep(0.3)
    evs = events()
    assert [e.asset_id for e in evs] == ["L1-S2"], [(e.asset_id, e.start_time) for e in evs]
    assert abs(evs[0].start_time.timestamp() - (start + 50)) <= 2.0
    assert evs[0].learning is False
    assert state("L1-S1")["phase"] == "watching" and state("L1-S1")["median"][0] > 5.0  # 160 learned as normal
    assert ASSET_LEARNING.labels(asset="L1-S1")._value.get() == 0

    with db.session_scope(factory) as s:
        reset = baselines.request_new_normal(s, "L1-S1", "alice", "camera re-mounted")
    time.sleep(10.5)  # the monitor reads requests every 10 s, with the next batch that comes
    more = level_stream({"L1-S1": 60}, start + 70, 30, tag="b")
    produce(producer, topics, more)
    producer.close()
    deadline = time.monotonic() + 90
    while True:
        with factory() as s:
            row = s.get(BaselineReset, reset.id)
        if row.applied_at is not None:
            break
        assert t.is_alive() and time.monotonic() < deadline, "the new normal was never applied"
        time.sleep(0.3)
    stop.set()
    t.join(30)
    after = state("L1-S1")
    assert row.applied_by == monitor.group_id
    assert after["phase"] == "learning" and after["seen"] < 40 and after["median"][0] < 5.0  # learning the new camera
    with factory() as s:
        assert [b.phase for b in baselines.baselines(s) if b.asset == "L1-S1"] == ["learning"]
    assert [e.asset_id for e in events()] == ["L1-S2"]
    engine.dispose()


@pytest.mark.slow
def test_failing_commits_make_the_monitor_unready_and_sigterm_still_stops_it(broker, make_topics, unique_group,
                                                                             pg_url):
    """Issue 23: with every commit failing, /readyz stayed 200 and SIGTERM waited 60 s for a retry
    loop. Now /readyz (the runner's `commits` check, served over HTTP) turns 503 after
    monitor.commit_failing_unready_s, and a stop inside the retry loop ends the run in seconds."""
    import urllib.error
    import urllib.request

    from sqlalchemy.engine import make_url

    from services.broker.embedded import free_port
    from services.observability.server import CheckResult, serve_metrics
    from services.settings import MetricsSettings, MonitorSettings
    from tests.support.tcp_proxy import TcpProxy

    ks, topics = make_topics(partitions=2)
    start = time.time() - 60
    produce(make_producer(ks, broker.bootstrap), topics, bright_fault_stream(["L1-S1", "L1-S2"], start, 20, {}))
    u = make_url(pg_url)
    proxy = TcpProxy(u.host, u.port or 5432)
    engine = db.make_engine(u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    settings = Settings(kafka=ks, monitor=MonitorSettings(commit_failing_unready_s=2.0),
                        metrics=MetricsSettings(port=free_port(), readiness_interval_s=0.2))
    monitor = Monitor(settings, broker.bootstrap, engine, BrightnessScorer(), topics, group_id=unique_group())
    server = serve_metrics(settings, "monitor", {"commits": lambda: CheckResult(*monitor.commit_health())})

    def readyz() -> int:
        try:
            return urllib.request.urlopen(f"{server.url}/readyz", timeout=5).status
        except urllib.error.HTTPError as e:
            return e.code

    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    try:
        t.start()
        deadline = time.monotonic() + 60
        while not monitor.ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        proxy.cut()  # partitions claimed; from here on every commit fails
        commits = monitor.stats.commits
        while readyz() == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert readyz() == 503, "readiness stayed up while every commit failed"
        assert monitor.stats.commits == commits and monitor.commit_health()[1].startswith("SQL commits failing")
        t0 = time.monotonic()
        stop.set()  # what SIGTERM does (services/lifecycle.py)
        t.join(30)
        assert not t.is_alive() and time.monotonic() - t0 < 8, f"stop took {time.monotonic() - t0:.1f} s"
    finally:
        stop.set()
        server.stop()
        proxy.close()
        engine.dispose()
