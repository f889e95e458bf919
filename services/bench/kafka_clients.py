"""The Kafka client's share of a window: kafka-python (the monitor's client) against confluent-kafka
(librdkafka), consuming the same simulated plant records from the same broker.

python -m services.bench.kafka_clients [--assets 16] [--seconds 20] [--repeats 3] [--json PATH]

Each repeat reads every record of the input topics from the beginning with each client in turn
(interleaved, a fresh consumer each time, no consumer group: only fetching and parsing), and
charges it with the process CPU (all threads: kafka-python's and librdkafka's network threads
count) from the first record to the last. Records carry the contract's headers and the plant's
12 KB JPEG frames, 0.5 s WAV chunks and PLC lines, as the monitor reads them; the figure per
window is per record times the records of a window (the plant's frames, chunks and lines of one
asset-second). An embedded broker is started unless `--bootstrap` names one.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from dataclasses import dataclass

from services.bench.report import BenchResult, machine_info


@dataclass
class KafkaClientBenchConfig:
    assets: int = 16
    seconds: float = 20.0
    partitions: int = 8
    repeats: int = 3
    clients: tuple[str, ...] = ("kafka-python", "confluent-kafka")
    bootstrap: str | None = None
    seed: int = 0


def _produce(bootstrap: str, cfg: KafkaClientBenchConfig) -> tuple[list[str], int, int]:
    """The plant's records on fresh input topics; (topics, records, bytes)."""
    from services.kafka import ensure_topics, make_producer
    from services.settings import KafkaSettings
    from services.simulator.plant import Plant

    ks = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"kbench-{uuid.uuid4().hex[:8]}.", partitions=cfg.partitions)
    topics = ensure_topics(ks, bootstrap)
    producer = make_producer(ks, bootstrap)
    n = size = 0
    plant = Plant(cfg.assets, seed=cfg.seed, start_time=time.time() - cfg.seconds - 60)
    for kind, rec in plant.records(cfg.seconds):
        topic = getattr(topics, kind.value)  # Kind values are the topic names (frames, audio, logs)
        producer.send(topic, key=rec.key, value=rec.value, headers=rec.headers)
        n, size = n + 1, size + len(rec.value)
    producer.flush()
    producer.close()
    return list(topics.inputs), n, size


def _read_kafka_python(bootstrap: str, topics: list[str], expected: int) -> tuple[float, float, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             max_poll_records=500, fetch_max_bytes=52428800)
    t0 = time.process_time(), time.monotonic()
    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    n = nbytes = 0
    deadline = time.monotonic() + 120
    try:
        while n < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=200).values():
                for rec in recs:  # what the monitor reads of each record
                    n, nbytes = n + 1, nbytes + len(rec.value) + len(rec.key or b"") + len(rec.headers)
        return time.process_time() - t0[0], time.monotonic() - t0[1], n
    finally:
        consumer.close()


def _read_confluent(bootstrap: str, topics: list[str], expected: int) -> tuple[float, float, int]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kbench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    meta = consumer.list_topics(timeout=10)
    t0 = time.process_time(), time.monotonic()
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in sorted(meta.topics[t].partitions)])
    n = nbytes = 0
    deadline = time.monotonic() + 120
    try:
        while n < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.2):
                if msg.error():
                    continue
                n, nbytes = n + 1, nbytes + len(msg.value()) + len(msg.key() or b"") + len(msg.headers() or ())
        return time.process_time() - t0[0], time.monotonic() - t0[1], n
    finally:
        consumer.close()


READERS = {"kafka-python": _read_kafka_python, "confluent-kafka": _read_confluent}


def run_kafka_client_bench(cfg: KafkaClientBenchConfig) -> BenchResult:
    result = BenchResult("kafka-clients", machine_info("cpu"), dict(cfg.__dict__))
    if cfg.bootstrap:
        _run(cfg, cfg.bootstrap, result)
    else:
        from services.broker.embedded import EmbeddedBroker, free_port

        with EmbeddedBroker(port=free_port()) as broker:
            _run(cfg, broker.bootstrap, result)
    return result.finish()


def _run(cfg: KafkaClientBenchConfig, bootstrap: str, result: BenchResult) -> None:
    topics, n, size = _produce(bootstrap, cfg)
    per_window = n / (cfg.assets * cfg.seconds)  # records of one asset-second
    cpu: dict[str, list[float]] = {c: [] for c in cfg.clients}
    for repeat in range(cfg.repeats):
        for client in cfg.clients:
            cpu_s, wall_s, got = READERS[client](bootstrap, topics, n)
            if got != n:
                result.notes.append(f"{client} read {got} of {n} records in repeat {repeat + 1}")
            cpu[client].append(cpu_s / max(got, 1))
            result.rows.append({"repeat": repeat + 1, "client": client, "records": got,
                                "cpu_us_per_record": round(cpu_s / max(got, 1) * 1e6, 1),
                                "cpu_ms_per_window": round(cpu_s / max(got, 1) * per_window * 1e3, 3),
                                "records_per_cpu_s": round(got / max(cpu_s, 1e-9)), "wall_s": round(wall_s, 3)})
    med = {c: statistics.median(v) for c, v in cpu.items()}
    result.summary.update({f"{c}_cpu_us_per_record": round(v * 1e6, 1) for c, v in med.items()})
    result.summary.update({f"{c}_cpu_ms_per_window": round(v * per_window * 1e3, 3) for c, v in med.items()})
    result.summary.update({"records": n, "mean_record_bytes": round(size / n), "records_per_window": round(per_window, 2)})
    if len(med) == 2:
        a, b = med.values()
        result.summary["ratio_first_over_second"] = round(a / b, 2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", default="kafka-python,confluent-kafka")
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    cfg = KafkaClientBenchConfig(a.assets, a.seconds, a.partitions, a.repeats, tuple(a.clients.split(",")), a.bootstrap)
    res = run_kafka_client_bench(cfg)
    for row in res.rows:
        print(row)
    print(res.summary)
    if a.json:
        res.write(a.json)


if __name__ == "__main__":
    main()
