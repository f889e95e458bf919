"""The embedded broker restarts under a running monitor and comes back empty.

What the embedded Tansu broker (memory storage) keeps across a restart: nothing — topics, records
and consumer-group offsets all live in its memory. What fusionwatch keeps: everything it already
committed to SQL (events, stream state, the offsets it had reached). So after the restart the
stored offsets point past the end of the new, empty partitions. The monitor must not crash or
crash-loop while the broker is away, and once the broker is back (topics re-created, as
`fusionwatch broker`/`up` do) it must resume on new data from the start of the new partitions,
not wait for the new log to grow past the old offsets. Records produced before the restart and
not yet consumed are gone with the broker: only a real Kafka cluster makes them durable.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import pytest
from kafka.errors import KafkaError
from sqlalchemy import func, select

from schemas.tables import Outbox
from services import db
from services.broker.embedded import EmbeddedBroker, free_port
from services.kafka import Topics, ensure_topics, make_producer
from services.monitor.outbox import OutboxRelay
from services.settings import KafkaSettings
from tests.faults import inputs as fault_inputs
from tests.faults import ledger
from tests.faults.procs import MonitorProc, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@dataclass
class Stack:
    """A broker of our own on a fixed port (so it can come back at the same address) and a SQLite file."""

    port: int
    kafka: KafkaSettings
    url: str
    group: str


def _stack(tmp_path, tag: str) -> Stack:
    url = f"sqlite:///{tmp_path / (tag + '.db')}"
    db.upgrade(url)
    ks = KafkaSettings(topic_prefix=f"{tag[0]}{uuid.uuid4().hex[:8]}.", partitions=fault_inputs.PARTITIONS)
    return Stack(free_port(), ks, url, f"{tag}-{uuid.uuid4().hex[:8]}")


def _first_stream(st: Stack, tmp_path, name: str) -> tuple[EmbeddedBroker, MonitorProc, list, list[tuple]]:
    """Broker up, the scenario input produced, a monitor run through all of it; returns the input
    records and the events."""
    broker = EmbeddedBroker(port=st.port, log_path=tmp_path / "tansu-1.log").start()
    monitor = None
    try:
        _, before = fault_inputs.produce(st.kafka, broker.bootstrap)
        monitor = MonitorProc(tmp_path, name, broker.bootstrap, st.url, st.kafka.topic_prefix, st.group)
        wait_for(lambda: ledger.finished(st.url, st.group, fault_inputs.ends(before)), 120, "the first stream",
                 procs=[monitor])
        events = ledger.event_rows(st.url)
        assert {e[1] for e in events} == set(fault_inputs.FAULTS)
        return broker, monitor, before, events
    except BaseException:
        if monitor is not None:
            monitor.kill()
        broker.stop()
        raise


def test_broker_restart_monitor_survives_and_resumes_on_new_data(tmp_path):
    st = _stack(tmp_path, "restart")
    port, ks, url = st.port, st.kafka, st.url
    broker = monitor = None
    try:
        broker, monitor, before, events_before = _first_stream(st, tmp_path, "monitor")
        broker.stop()  # all topics, records and group state are gone
        time.sleep(8.0)  # longer than a session timeout: the monitor sees a dead broker, not a blip
        assert monitor.proc.poll() is None, "the monitor exited while the broker was down:\n" + monitor.log()[-3000:]

        broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
        # the same stream again, two minutes later in event time, into the re-created topics: the
        # same number of records per partition, so the stored offsets equal the new log ends and
        # only the new topic ids tell that these are different logs
        later = fault_inputs.START + 120
        topics, after = fault_inputs.produce(ks, broker.bootstrap, start=later)
        # (the offsets stored before the restart, not read now: the monitor may already be reading
        # the new log, and committing, by the time `produce` returns)
        assert fault_inputs.ends(after) == fault_inputs.ends(before)
        wait_for(lambda: len(new_events(url, events_before, later)) == len(fault_inputs.FAULTS), 120,
                 "events from the data after the restart", procs=[monitor])
        # the monitor reads the new logs with the assignment it had; the new broker's group knows
        # nothing of it, and the rejoin comes when the client next finds the coordinator — after
        # the data, on a fast machine: wait for it rather than assume an order
        wait_for(lambda: monitor.log().count("partitions assigned") >= 2, 60, "the monitor rejoining the new group",
                 procs=[monitor])
        fresh = new_events(url, events_before, later)
        assert sorted(e[1] for e in fresh) == sorted(fault_inputs.FAULTS)
        assert ledger.event_rows(url)[: len(events_before)] == events_before  # the old ones untouched
        # the dead-letter producer outlives the restart (an idempotent one fails for good)
        poison = {(r.topic, r.partition, r.offset, r.expect) for r in after if r.expect != "scored"}
        wait_for(lambda: {(d.topic, d.partition, d.offset, d.reason)
                          for d in ledger.read_dlq(ks, broker.bootstrap, topics)} == poison,
                 60, "the dead letters on the new broker", procs=[monitor])
        assert monitor.stop() == 0
        log = monitor.log()
        assert "was re-created" in log or "past the end of the log" in log
        assert "could not write the dead-letter copy" not in log
    finally:
        if monitor is not None:
            monitor.kill()
        if broker is not None:
            broker.stop()


def new_events(url: str, before: list[tuple], after_t: float) -> list[tuple]:
    return [e for e in ledger.event_rows(url) if e not in before and e[2].timestamp() >= after_t and e[4] == "closed"]


def test_broker_restarted_empty_while_the_monitor_was_down(tmp_path):
    """The whole embedded stack restarted (`fusionwatch up` again): the broker comes back empty
    while SQL keeps the offsets. A fresh monitor process has never seen the old topic ids; only
    the id stored with the offsets tells that they count records of a log that is gone. The new
    log is exactly as long as the old one, so nothing else would tell: without the stored id the
    monitor would sit at the end of the new log and skip all of it."""
    st = _stack(tmp_path, "down")
    port, ks, url, group = st.port, st.kafka, st.url, st.group
    broker = monitor = None
    try:
        broker, monitor, _, events_before = _first_stream(st, tmp_path, "first")
        assert monitor.stop() == 0
        broker.stop()

        broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
        later = fault_inputs.START + 120
        _, after = fault_inputs.produce(ks, broker.bootstrap, start=later)
        assert ledger.committed(url, group)[0] == fault_inputs.ends(after)  # same offsets, other log
        monitor = MonitorProc(tmp_path, "second", broker.bootstrap, url, ks.topic_prefix, group)
        wait_for(lambda: len(new_events(url, events_before, later)) == len(fault_inputs.FAULTS), 120,
                 "events from the data after the restart", procs=[monitor])
        assert monitor.stop() == 0
        assert "belongs to the old log" in monitor.log()
    finally:
        if monitor is not None:
            monitor.kill()
        if broker is not None:
            broker.stop()


def test_outbox_relay_outlives_a_broker_restart(tmp_path):
    """The relay's producer, made before the broker restarted empty, delivers what is written after."""
    st = _stack(tmp_path, "relay")
    topics = Topics.from_settings(st.kafka)
    engine = db.make_engine(st.url)
    broker = EmbeddedBroker(port=st.port, log_path=tmp_path / "tansu-1.log").start()
    relay = OutboxRelay(engine, make_producer(st.kafka, broker.bootstrap, idempotent=False), topics.events)
    try:
        ensure_topics(st.kafka, broker.bootstrap)
        _write_outbox(engine, "before")
        assert relay.relay_once() == 3
        broker.stop()
        broker = EmbeddedBroker(port=st.port, log_path=tmp_path / "tansu-2.log").start()
        ensure_topics(st.kafka, broker.bootstrap)
        _write_outbox(engine, "after")
        def relayed_all() -> bool:
            relay.relay_once()
            return _unsent(engine) == 0

        wait_for(relayed_all, 60, "the relay to deliver after the restart")
        on_broker = [json.loads(r.value)["data"]["event_id"] for r in ledger.read_topic(st.kafka, broker.bootstrap,
                                                                                        topics.events)]
        assert sorted(on_broker) == [f"after-{i}" for i in range(3)]  # the new broker holds only what came after
    finally:
        relay.producer.close(timeout=5)
        engine.dispose()
        broker.stop()


def _write_outbox(engine, tag: str) -> None:
    with db.session_factory(engine)() as s:
        s.add_all([Outbox(event_id=f"{tag}-{i}", revision=1, change="opened",
                          payload={"subject": "L1-S1", "data": {"event_id": f"{tag}-{i}"}}) for i in range(3)])
        s.commit()


def _unsent(engine) -> int:
    with db.session_factory(engine)() as s:
        return s.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))) or 0


def test_an_idempotent_producer_outlives_a_broker_restart(tmp_path):
    """The simulator's and the ingest commands' producer: after the broker restarted empty, the
    first sends fail (the broker forgot the producer id) and the producer starts afresh."""
    st = _stack(tmp_path, "producer")
    topics = Topics.from_settings(st.kafka)
    broker = EmbeddedBroker(port=st.port, log_path=tmp_path / "tansu-1.log").start()
    producer = make_producer(st.kafka, broker.bootstrap)
    try:
        ensure_topics(st.kafka, broker.bootstrap)
        producer.send(topics.logs, key=b"L1-S1", value=b"before").get(10)
        broker.stop()
        broker = EmbeddedBroker(port=st.port, log_path=tmp_path / "tansu-2.log").start()
        ensure_topics(st.kafka, broker.bootstrap)

        def delivered() -> bool:
            try:
                producer.send(topics.logs, key=b"L1-S1", value=b"after").get(10)
                return True
            except KafkaError:
                return False

        wait_for(delivered, 60, "a send after the restart to succeed")
        assert producer.renewals == 1
    finally:
        producer.close(timeout=5)
        broker.stop()
