"""What every `fusionwatch ingest` source shares: event-time origins, source URIs, and the sink.

Ingest sits at the source end of the data path, beside the simulator: it turns real recordings
and streams into contract-v1 records. Media times inside a file or stream are relative; the
`--start-time` option says what wall-clock instant relative time zero is ("now", the container's
`creation_time` metadata, or an explicit RFC 3339 time), so one recording can be replayed as if
it happened at any moment, with every modality on the same clock.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from schemas.envelope import ASSET_RE, Kind, WireRecord, parse_time
from schemas.errors import ConfigError, DependencyUnavailable
from services.settings import Settings


def check_asset(asset: str) -> str:
    if not ASSET_RE.match(asset or ""):
        raise ConfigError(f"--asset {asset!r} is not a valid asset id: 1-64 characters, letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit (e.g. L3-S2)")
    return asset


def is_url(src: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", src))


def source_uri(kind: str, src: str) -> str:
    """ce_source for an input: a URL without credentials or query, or /ingest/<kind>/<file name>."""
    if is_url(src):
        parts = urlsplit(src)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))  # never leak user:password@ or tokens
    return f"/ingest/{kind}/{Path(src).name}"


def resolve_origin(spec: str | None, metadata_time: str | None = None, path: str | None = None) -> float:
    """Wall-clock time (epoch s) of media time zero: 'now' (default), 'metadata', or RFC 3339."""
    spec = (spec or "now").strip()
    if spec == "now":
        return time.time()
    if spec == "metadata":
        if metadata_time:
            try:
                return parse_time(metadata_time if re.search(r"(Z|[+-]\d\d:\d\d)$", metadata_time) else metadata_time + "Z")
            except ValueError:
                pass
        if path and not is_url(path) and Path(path).exists():
            return Path(path).stat().st_mtime  # a recording's file time is the next best guess
        raise ConfigError("--start-time metadata: the input has no creation_time; give an RFC 3339 time instead")
    try:
        return parse_time(spec)
    except ValueError:
        raise ConfigError(f"--start-time {spec!r}: use 'now', 'metadata' or an RFC 3339 time such as "
                          "2026-03-01T08:00:00Z") from None


@dataclass
class IngestStats:
    source: str
    asset: str
    records: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in Kind})
    first_time: float | None = None
    last_time: float | None = None
    truncated_lines: int = 0
    replaced_bytes_lines: int = 0
    wall_seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


class RunIds:
    """ce_id values unique per source: one random run id per invocation plus a counter."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:12]
        self.seq = {k: 0 for k in Kind}

    def next(self, kind: Kind) -> tuple[str, int]:
        n = self.seq[kind]
        self.seq[kind] += 1
        return f"{self.run}-{kind.value[0]}{n}", n


class Pacer:
    """Hold records back until wall time reaches origin + media time / speed (speed 0: no wait)."""

    def __init__(self, speed: float, stop: threading.Event):
        self.speed, self.stop = speed, stop
        self.wall0: float | None = None
        self.t0: float | None = None

    def wait(self, event_time: float) -> bool:
        """False when stopped while waiting."""
        if self.speed <= 0:
            return not self.stop.is_set()
        if self.wall0 is None:
            self.wall0, self.t0 = time.monotonic(), event_time
        delay = self.wall0 + (event_time - self.t0) / self.speed - time.monotonic()
        return not (delay > 0 and self.stop.wait(delay)) and not self.stop.is_set()


class KafkaSink:
    """Produces records to the contract topics (created first) and keeps statistics."""

    def __init__(self, settings: Settings, bootstrap: str | None, stats: IngestStats):
        from services.kafka import ensure_topics, make_producer

        bootstrap = bootstrap or settings.kafka.bootstrap
        if not bootstrap:
            raise ConfigError("no Kafka broker configured: run `fusionwatch broker` (or `fusionwatch up`) and set "
                              "FW_KAFKA_BOOTSTRAP=127.0.0.1:19092, or pass --bootstrap HOST:PORT")
        self.bootstrap = bootstrap
        topics = ensure_topics(settings.kafka, bootstrap)
        self.topics = {Kind.FRAME: topics.frames, Kind.AUDIO: topics.audio, Kind.LOG: topics.logs}
        self.producer = make_producer(settings.kafka, bootstrap)
        self.stats = stats
        # with a follow position, each send's future is kept until the next flush checks it
        self.track_delivery = False
        self._futures: list = []

    def send(self, kind: Kind, rec: WireRecord, event_time: float) -> None:
        from kafka.errors import KafkaError

        try:
            future = self.producer.send(self.topics[kind], key=rec.key, value=rec.value, headers=rec.headers)
        except KafkaError as e:
            raise DependencyUnavailable(f"producing to Kafka at {self.bootstrap} failed ({e}); is the broker running?") from None
        if self.track_delivery:
            self._futures.append(future)
        count(self.stats, kind, rec, event_time)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every record sent so far is acknowledged; raise if one was not."""
        from kafka.errors import KafkaError

        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as e:
            raise DependencyUnavailable(f"Kafka at {self.bootstrap} did not acknowledge the records within "
                                        f"{timeout_s:.0f} s ({e}); is the broker running?") from None
        failed = [f for f in self._futures if f.failed()]
        self._futures.clear()
        if failed:
            raise DependencyUnavailable(f"{len(failed)} records were not delivered to Kafka at {self.bootstrap} "
                                        f"({failed[0].exception}); is the broker running?")

    def close(self) -> None:
        try:
            self.producer.flush(timeout=60)
        finally:
            self.producer.close(timeout=10)


def count(stats: IngestStats, kind: Kind, rec: WireRecord, event_time: float) -> None:
    stats.records += 1
    stats.bytes += len(rec.value)
    stats.by_kind[kind.value] += 1
    stats.first_time = event_time if stats.first_time is None else min(stats.first_time, event_time)
    stats.last_time = event_time if stats.last_time is None else max(stats.last_time, event_time)
