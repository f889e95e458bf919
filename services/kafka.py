"""Kafka clients built from settings: one place knows the security options, the group timeouts
that suit the broker, and the topic names. Works against the embedded Tansu broker and a real
Apache Kafka cluster alike (SASL_SSL/SCRAM, TLS)."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import ConfigError, DependencyUnavailable
from services.settings import KafkaSettings

log = logging.getLogger(__name__)

INPUT_TOPICS = ("frames", "audio", "logs")
ALL_TOPICS = (*INPUT_TOPICS, "events", "dlq")


@dataclass(frozen=True)
class Topics:
    frames: str
    audio: str
    logs: str
    events: str
    dlq: str

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> "Topics":
        return cls(**{name: kafka.topic(name) for name in ALL_TOPICS})

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.frames, self.audio, self.logs)

    def all(self) -> tuple[str, ...]:
        return (self.frames, self.audio, self.logs, self.events, self.dlq)


def security_config(kafka: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """kafka-python connection options (the same names confluent/Java use, underscored)."""
    cfg: dict[str, Any] = {"bootstrap_servers": bootstrap.split(","), "security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL"):
        cfg.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        )
    if kafka.security_protocol.endswith("SSL"):
        cfg.update(
            ssl_cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            ssl_certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            ssl_keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        )
    return cfg


class Producer:
    """A KafkaProducer that replaces itself once its idempotence state has failed for good.

    A broker that forgets producer ids (the embedded broker restarted empty) answers the next
    batch with UnknownProducerId; kafka-python then asks for an epoch bump (KIP-360), which Tansu
    refuses, and from then on the producer fails every send until the process restarts: the
    simulator and the ingest commands would go on running and deliver nothing. The failed sends
    are reported through their futures as always; the next send goes through a fresh producer.
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self._producer = KafkaProducer(**config)
        self.renewals = 0

    def _failed_for_good(self) -> bool:
        # kafka-python's own (private) state: it has no public accessor; without it nothing is renewed
        state = getattr(self._producer, "_transaction_manager", None)
        return bool(state is not None and state.has_fatal_error())

    def send(self, topic: str, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        if self._failed_for_good():
            log.warning("Kafka producer's idempotence state failed for good (the broker forgot its "
                        "producer id: restarted empty?); starting a fresh producer")
            self._producer.close(timeout=0)
            self._producer = KafkaProducer(**self.config)
            self.renewals += 1
        return self._producer.send(topic, value=value, key=key, headers=headers, partition=partition,
                                   timestamp_ms=timestamp_ms)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout=timeout)


def make_producer(kafka: KafkaSettings, bootstrap: str, *, idempotent: bool = True, **overrides: Any) -> Producer:
    """`idempotent=False` for streams whose readers de-duplicate anyway (the outbox's events by
    CloudEvent id, the dead letters by original offset): their records then survive a broker
    that forgets producer ids, where an idempotent producer fails the batches in flight."""
    cfg = security_config(kafka, bootstrap) | {
        "linger_ms": 5,
        "max_request_size": 2 * 1024 * 1024,
        "acks": "all",
        "enable_idempotence": idempotent,
    }
    return Producer(cfg | overrides)


def make_consumer(kafka: KafkaSettings, bootstrap: str, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    cfg = security_config(kafka, bootstrap) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_records": kafka.max_poll_records,
        # Range keeps partition n of every co-partitioned topic on the same member (docs/production.md, "Partitions").
        "partition_assignment_strategy": [RangePartitionAssignor],
    }
    return KafkaConsumer(**(cfg | overrides))


def bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """HOST:PORT pairs of a bootstrap list ("a:9092,b:9092", "[::1]:9092"), or a ConfigError."""
    out = []
    for entry in bootstrap.split(","):
        entry = entry.strip().split("://", 1)[-1]  # PLAINTEXT://host:9092 as listeners are written
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"Kafka bootstrap {entry!r} is not HOST:PORT; set FW_KAFKA_BOOTSTRAP (or --bootstrap) "
                              "like 127.0.0.1:19092 or kafka-1:9092,kafka-2:9092")
        out.append((host.strip("[]"), int(port)))
    return out


def wait_for_broker(bootstrap: str, timeout_s: float) -> None:
    """Bounded wait until a bootstrap server accepts a TCP connection. Before any Kafka client
    exists, so a broker that is down (or a wrong address) is one sentence, not the client's
    retry log and a traceback half a minute later."""
    servers = bootstrap_servers(bootstrap)
    deadline = time.monotonic() + timeout_s
    logged = False
    while True:
        for host, port in servers:
            try:
                socket.create_connection((host, port), timeout=max(0.5, min(3.0, deadline - time.monotonic()))).close()
                return
            except OSError as e:
                error = e
        if time.monotonic() >= deadline:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise DependencyUnavailable(
                f"no Kafka broker answers at {bootstrap} ({reason}) after {timeout_s:.0f} s; start one "
                "(`fusionwatch broker`, or `fusionwatch up` for everything) or fix FW_KAFKA_BOOTSTRAP")
        if not logged:
            log.info("waiting up to %.0f s for the Kafka broker at %s", timeout_s, bootstrap)
            logged = True
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def make_admin(kafka: KafkaSettings, bootstrap: str, timeout_s: float = 20.0) -> KafkaAdminClient:
    wait_for_broker(bootstrap, kafka.connect_timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(**security_config(kafka, bootstrap))
        except (KafkaError, OSError) as e:
            if time.monotonic() > deadline:
                raise DependencyUnavailable(
                    f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s ({e}); "
                    "start one (`fusionwatch broker`) or fix FW_KAFKA_BOOTSTRAP"
                ) from None
            time.sleep(0.3)


def ensure_topics(kafka: KafkaSettings, bootstrap: str, topics: Topics | None = None) -> Topics:
    """Create the contract's topics with equal partition counts (never rely on auto-create:
    Tansu loses records on auto-created topics, and co-partitioning needs equal counts)."""
    topics = topics or Topics.from_settings(kafka)
    admin = make_admin(kafka, bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, kafka.partitions, kafka.replication_factor) for name in topics.all() if name not in existing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # a concurrent starter won the race
        log.info("topics ready: %s (%d partitions)", ", ".join(topics.all()), kafka.partitions)
        return topics
    finally:
        admin.close()
