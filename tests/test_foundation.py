"""Foundation: settings, migrations on both databases, the embedded broker with two clients."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import inspect

from services import db
from services.settings import Settings


def test_settings_env_and_aliases(monkeypatch, tmp_path):
    cfg = tmp_path / "fw.toml"
    cfg.write_text('[monitor]\nwindow_s = 4.0\n[kafka]\npartitions = 3\n')
    monkeypatch.setenv("FW_CONFIG", str(cfg))
    monkeypatch.setenv("FW_KAFKA__PARTITIONS", "5")  # env beats file
    monkeypatch.setenv("FW_KAFKA_BOOTSTRAP", "kafka-1:9093")
    monkeypatch.setenv("FW_KAFKA__SASL_PASSWORD", "s3cret")
    s = Settings()
    assert s.monitor.window_s == 4.0
    assert s.kafka.partitions == 5
    assert s.kafka.bootstrap == "kafka-1:9093"
    from services.settings import masked_dump

    dumped = masked_dump(s)
    assert dumped["kafka"]["sasl_password"] == "**********"
    assert "s3cret" not in repr(dumped)


def test_sasl_requires_credentials():
    from services.settings import KafkaSettings

    with pytest.raises(ValueError, match="sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL")
    ks = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="fw",
                       sasl_password="pw", ssl_cafile="/etc/ca.pem")
    from services.kafka import security_config

    cfg = security_config(ks, "k1:9093,k2:9093")
    assert cfg["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512" and cfg["sasl_plain_password"] == "pw"
    assert cfg["ssl_cafile"] == "/etc/ca.pem"


def test_migrations_create_every_table(db_url):
    from schemas.tables import Base

    engine = db.make_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert db.current_revision(db_url) is not None
    db.upgrade(db_url)  # idempotent


def test_utc_round_trip(db_url):
    from datetime import datetime, timedelta, timezone

    from schemas.tables import Asset

    engine = db.make_engine(db_url)
    factory = db.session_factory(engine)
    t = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    with db.session_scope(factory) as s:
        s.add(Asset(id="L1-S1", line="L1", first_seen=t, last_seen=t))
    with factory() as s:
        got = s.get(Asset, "L1-S1")
    engine.dispose()
    assert got.first_seen == t and got.first_seen.tzinfo is not None


def test_embedded_broker_kafka_python_round_trip(broker, make_topics, unique_group):
    from services.kafka import make_consumer, make_producer

    ks, topics = make_topics(partitions=4)
    producer = make_producer(ks, broker.bootstrap)
    for i in range(50):
        producer.send(topics.frames, key=f"asset-{i % 5}".encode(), value=f"v{i}".encode(),
                      headers=[("ce_id", str(i).encode()), ("ce_type", b"io.fusionwatch.frame.v1")])
    producer.flush()
    producer.close()
    consumer = make_consumer(ks, broker.bootstrap, unique_group())
    consumer.subscribe([topics.frames])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 50 and time.monotonic() < deadline:
        for records in consumer.poll(500).values():
            got.extend(records)
    hw = sum(consumer.highwater(tp) or 0 for tp in consumer.assignment())
    consumer.close()
    assert sorted(int(r.value[1:]) for r in got) == list(range(50))
    assert all(dict(r.headers)["ce_type"] == b"io.fusionwatch.frame.v1" for r in got)
    assert hw == 50  # high watermarks from fetch responses are right (ListOffsets is not)


def test_embedded_broker_confluent_kafka_interop(broker, make_topics, unique_group):
    """A second, independent client (librdkafka) produces; kafka-python reads, headers intact; and back."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from services.kafka import make_consumer, make_producer

    ks, topics = make_topics(partitions=2)
    p = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce(topics.logs, key=b"L1-S1", value=f"line {i}".encode(), headers=[("ce_id", f"c{i}".encode())])
    assert p.flush(10) == 0
    consumer = make_consumer(ks, broker.bootstrap, unique_group())
    consumer.subscribe([topics.logs])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        for records in consumer.poll(500).values():
            got.extend(records)
    consumer.close()
    assert [r.value for r in got] == [f"line {i}".encode() for i in range(10)]
    assert [dict(r.headers)["ce_id"] for r in got] == [f"c{i}".encode() for i in range(10)]

    kp = make_producer(ks, broker.bootstrap)
    kp.send(topics.audio, key=b"L1-S2", value=b"\x00\x01", headers=[("ce_id", b"k1")])
    kp.flush()
    kp.close()
    c = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_group(),
                                  "auto.offset.reset": "earliest"})
    c.subscribe([topics.audio])
    msg = None
    deadline = time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            msg = m
    c.close()
    assert msg is not None and msg.value() == b"\x00\x01" and dict(msg.headers())["ce_id"] == b"k1"


def test_broker_refuses_busy_port(broker):
    from schemas.errors import FusionwatchError
    from services.broker.embedded import EmbeddedBroker

    with pytest.raises(FusionwatchError, match="already in use"):
        EmbeddedBroker(port=broker.port).start()


def test_cli_help_explains_every_command():
    from typer.testing import CliRunner

    from services.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "fusionwatch up" in top.output
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    for name in names:
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)
        assert len(r.output.strip().splitlines()) > 3
