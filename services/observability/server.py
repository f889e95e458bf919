"""The HTTP endpoint every fusionwatch service runs beside its work: `/metrics`, `/healthz`, `/readyz`.

Where it sits: outside the data path. Prometheus scrapes `/metrics` (the registry of
services/observability/metrics.py); Kubernetes (deploy/k8s/) and Compose probe `/healthz` (the
process is alive: restart it if not) and `/readyz` (it can do its job: broker and database answer;
take it out of rotation, do not restart it, if not).

Readiness checks run in one background thread every `metrics.readiness_interval_s` and the
probes read the last result, so a probe answers at once even while the broker is down and a
check is waiting out its timeout, and a burst of probes never multiplies connections to Kafka or
the database. Liveness checks run on each probe and must be cheap (a `Heartbeat` age check).

Ports: one per service on a box, `metrics.base_port` + the service's offset (monitor +0,
summarizer +1, scheduler +2, broker supervisor / `up` +3, notifier +4); `FW_METRICS__PORT` overrides it for
one process (a second monitor on the same box). The API serves the same three paths on its own
port through `render_metrics` and a `Readiness` of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from schemas.errors import ConfigError
from services.observability import metrics

if TYPE_CHECKING:  # heavy imports only where a check is built
    from kafka import KafkaAdminClient
    from sqlalchemy import Engine

    from services.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

class PortInUse(ConfigError):
    """The metrics port is taken (another fusionwatch process on this host, most likely)."""


PORT_OFFSETS = {"monitor": 0, "summarizer": 1, "scheduler": 2, "broker": 3, "up": 3, "notify": 4, "ingest": 5}


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = ""


Check = Callable[[], CheckResult]


def run_check(name: str, check: Check) -> CheckResult:
    """Run one check; an exception is a failed check with its message, never a crashed probe."""
    try:
        result = check()
    except Exception as e:  # noqa: BLE001 - a check's failure is data, not an error of the server
        result = CheckResult(False, f"{type(e).__name__}: {e}")
    metrics.READINESS_CHECK_OK.labels(check=name).set(1 if result.ok else 0)
    return result


def combine(results: Mapping[str, CheckResult]) -> CheckResult:
    failed = [f"{name}: {r.reason or 'failed'}" for name, r in results.items() if not r.ok]
    return CheckResult(not failed, "; ".join(failed))


class Readiness:
    """Named checks refreshed in a background thread; `current` is the last combined result.

    Before the first refresh the service is not ready ("starting"). `set_flag` lets the service
    add its own condition (e.g. "model loaded", "partitions assigned") without writing a check.
    """

    def __init__(self, checks: Mapping[str, Check] | None = None, interval_s: float = 2.0):
        self._checks: dict[str, Check] = dict(checks or {})
        self._flags: dict[str, str | None] = {}
        self._interval_s = interval_s
        self._current = CheckResult(False, "starting: readiness not checked yet")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def set_flag(self, name: str, reason_not_ready: str | None) -> None:
        """`None` marks the condition met; a string says why the service is not ready yet."""
        with self._lock:
            self._flags[name] = reason_not_ready

    def refresh(self) -> CheckResult:
        results = {name: run_check(name, check) for name, check in list(self._checks.items())}
        with self._lock:
            for name, reason in self._flags.items():
                results[name] = CheckResult(reason is None, reason or "")
            self._current = combine(results)
            return self._current

    @property
    def current(self) -> CheckResult:
        with self._lock:
            return self._current

    def start(self) -> "Readiness":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fw-readiness", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            result = self.refresh()
            if not result.ok:
                log.debug("not ready: %s", result.reason)
            if self._stop.wait(self._interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for check in self._checks.values():  # release clients held by checks (kafka_reachable)
            close = getattr(check, "close", None)
            if callable(close):
                close()


class Heartbeat:
    """Liveness for a loop: the loop calls `beat()` each turn; the check fails once the last beat
    is older than `max_age_s` (a wedged consumer loop gets restarted instead of silently stalling)."""

    def __init__(self, max_age_s: float = 60.0):
        self.max_age_s = max_age_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def __call__(self) -> CheckResult:
        age = time.monotonic() - self._last
        if age > self.max_age_s:
            return CheckResult(False, f"main loop has not run for {age:.0f} s (limit {self.max_age_s:.0f} s)")
        return CheckResult(True)


# --- reusable readiness checks -----------------------------------------------------------------------


class kafka_reachable:  # noqa: N801 - used like the function-style checks beside it
    """Check that the broker answers a metadata request (with the service's security settings)
    and, if `topics` are given, that they exist (a restarted embedded broker has none).

    One admin client is kept between runs, so a healthy check costs one request; it is rebuilt
    after a failure, so a moved or restarted broker is found again. `Readiness.stop()` closes it.
    """

    def __init__(self, settings: "KafkaSettings", bootstrap: str, topics: Iterable[str] = (), timeout_s: float = 3.0):
        self.settings, self.bootstrap, self.topics, self.timeout_s = settings, bootstrap, tuple(topics), timeout_s
        self._admin: KafkaAdminClient | None = None
        self._lock = threading.Lock()

    def __call__(self) -> CheckResult:
        from kafka import KafkaAdminClient

        from services.kafka import security_config

        with self._lock:
            try:
                if self._admin is None:
                    self._admin = KafkaAdminClient(
                        **security_config(self.settings, self.bootstrap),
                        request_timeout_ms=int(self.timeout_s * 1000),
                        bootstrap_timeout_ms=int(self.timeout_s * 1000),
                        reconnect_backoff_max_ms=1000,
                    )
                existing = set(self._admin.list_topics())
            except Exception as e:  # noqa: BLE001 - any client error means "not reachable"
                self._close_locked()
                return CheckResult(False, f"Kafka at {self.bootstrap} unreachable ({type(e).__name__}: {e})")
        missing = [t for t in self.topics if t not in existing]
        if missing:
            return CheckResult(False, f"topics missing on {self.bootstrap}: {', '.join(missing)} "
                                      "(run `fusionwatch broker` or create them)")
        return CheckResult(True)

    def _close_locked(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception:  # noqa: BLE001 - closing a broken client may fail; it is dropped anyway
                pass

    def close(self) -> None:
        with self._lock:
            self._close_locked()


def database_reachable(engine: "Engine") -> Check:
    """Check that the database answers `SELECT 1` (pool pre-ping and connect timeout come from
    services.db.make_engine, so a dead server fails within seconds)."""
    from sqlalchemy import text

    from services.db import redact, safe_url

    def check() -> CheckResult:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001
            orig = getattr(e, "orig", None) or e
            first_line = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            first_line = redact(first_line, engine.url)
            return CheckResult(False, f"database {safe_url(engine.url)} unreachable ({first_line})")
        return CheckResult(True)

    return check


# --- HTTP -------------------------------------------------------------------------------------------


def render_metrics(accept: str | None, registry: CollectorRegistry = metrics.REGISTRY) -> tuple[bytes, str]:
    """The scrape body and its content type, negotiated like prometheus_client does (text 0.0.4 or
    OpenMetrics). The API uses this for its own `/metrics` route."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Handler(BaseHTTPRequestHandler):
    server: "MetricsServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            if self.server.token is not None and not _token_matches(self.headers.get("Authorization"), self.server.token):
                self._send(401, b"/metrics needs 'Authorization: Bearer <token>' off loopback (FW_METRICS__TOKEN, "
                                b"else FW_API_TOKEN)\n")
                return
            body, ctype = render_metrics(self.headers.get("Accept"), self.server.registry)
            self._send(200, body, ctype)
        elif path == "/healthz":
            result = combine({name: run_check(name, c) for name, c in self.server.liveness.items()})
            self._send(200 if result.ok else 503, b"ok\n" if result.ok else f"not alive: {result.reason}\n".encode())
        elif path == "/readyz":
            result = self.server.readiness.current
            self._send(200 if result.ok else 503, b"ready\n" if result.ok else f"not ready: {result.reason}\n".encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # scrapes every 15 s would flood the service log
        log.debug("%s " + fmt, self.address_string(), *args)


class MetricsServer(ThreadingHTTPServer):
    """A threaded HTTP server in a daemon thread. Use as a context manager or start()/stop()."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, readiness: Readiness | None = None,
                 liveness: Mapping[str, Check] | None = None, registry: CollectorRegistry = metrics.REGISTRY,
                 token: str | None = None):
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise PortInUse(
                f"cannot serve metrics on {host}:{port} ({e.strerror}); another process uses the port: "
                "set FW_METRICS__PORT (or FW_METRICS__BASE_PORT) to a free one"
            ) from None
        self.readiness = readiness or Readiness()
        self.liveness: dict[str, Check] = dict(liveness or {})
        self.registry = registry
        self.token = token  # required on /metrics when set (probes stay open: they carry no data)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        host = self.server_address[0]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def start(self) -> "MetricsServer":
        self.readiness.start()
        self._thread = threading.Thread(target=self.serve_forever, name="fw-metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics and probes on %s (/metrics, /healthz, /readyz)", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()
        self.readiness.stop()

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def metrics_port(settings: "Settings", service: str) -> int:
    if settings.metrics.port is not None:
        return settings.metrics.port
    if service not in PORT_OFFSETS:
        raise ConfigError(f"no metrics port offset for service {service!r}; set FW_METRICS__PORT")
    return settings.metrics.base_port + PORT_OFFSETS[service]


def serve_metrics(settings: "Settings", service: str, checks: Mapping[str, Check] | None = None,
                  liveness: Mapping[str, Check] | None = None) -> MetricsServer:
    """Start the endpoint for `service` with its readiness checks (started; call `.stop()`).

    Also records build info and applies the asset-label cap, so a service needs only this call:

        server = serve_metrics(settings, "monitor", {
            "kafka": kafka_reachable(settings.kafka, bootstrap, topics.inputs),
            "database": database_reachable(engine),
        }, liveness={"loop": heartbeat})
    """
    metrics.set_build_info(service)
    metrics.asset_labels.set_cap(settings.metrics.max_asset_labels)
    readiness = Readiness(checks, interval_s=settings.metrics.readiness_interval_s)
    return MetricsServer(settings.metrics.host, metrics_port(settings, service), readiness, liveness,
                         token=metrics_token(settings)).start()


def metrics_token(settings: "Settings") -> str | None:
    """The token /metrics requires: none on loopback; off loopback FW_METRICS__TOKEN, else FW_API_TOKEN,
    and refusing to start without one (a scrape endpoint open to the network tells anyone the assets,
    their scores and thresholds)."""
    from services.api.auth import check_token, is_loopback

    if is_loopback(settings.metrics.host):
        return None
    secret, name = (settings.metrics.token, "FW_METRICS__TOKEN") if settings.metrics.token else \
        (settings.api.token, "FW_API_TOKEN")
    if secret is None:
        raise ConfigError(f"metrics.host is {settings.metrics.host} (not loopback) and no token is set: set "
                          "FW_METRICS__TOKEN (or FW_API_TOKEN) and give Prometheus the same token "
                          "(scrape_config authorization.credentials_file), or bind FW_METRICS__HOST=127.0.0.1")
    check_token(secret.get_secret_value(), name)
    return secret.get_secret_value()


def _token_matches(header: str | None, token: str) -> bool:
    from services.api.auth import token_matches

    return token_matches(header, token)
