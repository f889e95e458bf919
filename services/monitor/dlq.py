"""Dead-letter copies, bounded and never fatal.

A rejected record is copied to fw.dlq with its reason and where it came from. Two things must not
follow from a hostile record: a copy too large for the producer (the original fit the broker's
limit, the copy adds headers: kafka-python raised MessageSizeTooLargeError and the monitor died on
every restart), and a failed send stopping the partition. So the copy is cut to fit the producer's
max request size (header `fw_original_size` keeps the original's size, `fw_truncated: 1`), a send
that fails is retried a few times, then counted (`fusionwatch_dlq_send_failures_total`) and
logged; the record is skipped either way.
"""

from __future__ import annotations

import logging
import time

from kafka.errors import KafkaError

from services.observability import metrics as m

log = logging.getLogger(__name__)

MAX_KEPT_HEADER_BYTES = 16 * 1024  # original headers kept on a copy (a header flood is cut here)
MAX_KEPT_HEADERS = 64
RECORD_OVERHEAD = 512  # record batch header (61 bytes), varints and slack, per copy
SEND_ATTEMPTS = 3


class DeadLetters:
    def __init__(self, producer, topic: str, flush_timeout_s: float = 30.0):
        self.producer, self.topic, self.flush_timeout_s = producer, topic, flush_timeout_s
        self.max_request = int(producer.config.get("max_request_size", 1 << 20))
        self.failed = 0  # copies given up on (also counted in the metric)

    def send(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             headers, reason: str, detail: str) -> None:
        kept: list[tuple[str, bytes]] = []
        dropped, size = 0, 0
        for k, v in headers or ():
            if k.startswith("fw_"):
                continue
            n = len(k.encode("utf-8", "replace")) + len(v or b"")
            if len(kept) < MAX_KEPT_HEADERS and size + n <= MAX_KEPT_HEADER_BYTES:
                kept.append((k, v))
                size += n
            else:
                dropped += 1
        ours = [("fw_error", f"{reason}: {detail}".encode()[:1000]),
                ("fw_original_topic", topic.encode()),
                ("fw_original_partition", str(partition).encode()),
                ("fw_original_offset", str(offset).encode())]
        if dropped:
            ours.append(("fw_headers_dropped", str(dropped).encode()))
        key = key[:1024] if key else key  # keys are asset ids; anything longer is not one anyway
        overhead = RECORD_OVERHEAD + len(key or b"") + sum(len(k) + len(v) + 10 for k, v in kept + ours) + 64
        room = max(0, self.max_request - overhead)
        if value is not None and len(value) > room:
            ours += [("fw_original_size", str(len(value)).encode()), ("fw_truncated", b"1")]
            value = value[:room]
            m.DLQ_TRUNCATED.labels(topic=topic).inc()
        if key is None and value is None:  # kafka-python refuses a record with neither
            value = b""
        self._send(topic, partition, offset, key, value, kept + ours)

    def _send(self, topic: str, partition: int, offset: int, key, value, headers) -> None:
        where = f"{topic}[{partition}]@{offset}"
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                future = self.producer.send(self.topic, key=key, value=value, headers=headers)
            except (KafkaError, ValueError, AssertionError) as e:  # refused before it was queued (size, buffer, metadata)
                if attempt == SEND_ATTEMPTS:
                    return self._give_up(topic, where, e)
                time.sleep(0.1 * attempt)
                continue
            # the producer retries transient broker errors itself; what still fails is reported here
            future.add_errback(lambda e: self._give_up(topic, where, e))
            return

    def _give_up(self, topic: str, where: str, error: BaseException) -> None:
        self.failed += 1
        m.DLQ_FAILURES.labels(topic=topic).inc()
        log.error("could not write the dead-letter copy of %s (%s: %s); the record is skipped without a copy",
                  where, type(error).__name__, str(error)[:200])

    def flush(self) -> None:
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        except KafkaError as e:
            log.error("dead-letter flush did not finish within %.0f s (%s); continuing", self.flush_timeout_s, e)

    def close(self) -> None:
        self.producer.close(timeout=10)
