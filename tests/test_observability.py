"""Metrics, probes and a real Prometheus: services/observability/.

Real parts: the Tansu broker (our own, so we can stop it), the running PostgreSQL reached through a
TCP relay we can cut, SQLite files, the Debian `promtool` and `prometheus` binaries.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from services.observability import metrics
from services.observability.server import (
    CheckResult,
    Heartbeat,
    MetricsServer,
    Readiness,
    database_reachable,
    kafka_reachable,
    metrics_port,
    serve_metrics,
)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def _need(binary: str | None, name: str) -> str:
    if binary:
        return binary
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing; `make sysdeps` installs the Debian prometheus package")
    pytest.skip(f"{name} not installed (make sysdeps)")


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()
    except (urllib.error.URLError, OSError) as e:  # not listening (yet): status 0
        return 0, "", str(e)


def wait_for(predicate, timeout_s: float = 30.0, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(every_s)


# --- bounded labels ----------------------------------------------------------------------------------


def test_asset_labels_keep_known_admit_up_to_cap_then_other():
    labels = metrics.AssetLabels(known=["press-1", "press-2"], cap=4)
    assert labels("press-1") == "press-1"
    assert labels("new-a") == "new-a"
    assert labels("new-b") == "new-b"  # 2 known + 2 new = cap
    assert labels("new-c") == metrics.OTHER
    assert labels("new-a") == "new-a"  # already labelled ones stay stable
    assert labels("press-2") == "press-2"  # known ones always pass, even at the cap
    # never free text: spaces, braces, overlong or empty ids are "other" even with room left
    roomy = metrics.AssetLabels(cap=100)
    for bad in ["line 3", 'x"}', "a" * 65, "", None, "-lead"]:
        assert roomy(bad) == metrics.OTHER
    only_known = metrics.AssetLabels(known=["k"], admit_unknown=False)
    assert (only_known("k"), only_known("u")) == ("k", metrics.OTHER)


def test_asset_labels_are_bounded_under_concurrency():
    labels = metrics.AssetLabels(cap=50)
    out: list[str] = []

    def worker(base: int) -> None:
        out.extend(labels(f"asset-{base}-{i}") for i in range(100))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out) - {metrics.OTHER}) == 50
    assert out.count(metrics.OTHER) == 800 - 50


def test_label_helpers_bound_severity_kind_and_reason():
    before = metrics.EVENTS_OPENED.labels(severity=metrics.OTHER, kind=metrics.OTHER)._value.get()
    metrics.event_opened("catastrophic", "free text from a log line")
    assert metrics.EVENTS_OPENED.labels(severity=metrics.OTHER, kind=metrics.OTHER)._value.get() == before + 1
    metrics.observe_rejected("fw.frames", "Bad Reason With Spaces")
    assert metrics.RECORDS_REJECTED.labels(topic="fw.frames", reason=metrics.OTHER)._value.get() >= 1


def test_lag_is_from_the_high_watermark_and_revoked_partitions_are_forgotten():
    metrics.set_lag("t.lag", 3, highwater=120, position=100)
    assert metrics.CONSUMER_LAG.labels(topic="t.lag", partition="3")._value.get() == 20
    metrics.set_lag("t.lag", 4, highwater=None, position=5)  # no fetch yet: no series invented
    metrics.forget_partitions([("t.lag", 3), ("t.lag", 4)])
    samples = [s for m in metrics.REGISTRY.collect() for s in m.samples if s.name == "fusionwatch_consumer_lag_records"]
    assert not [s for s in samples if s.labels.get("topic") == "t.lag"]


# --- exposition and promtool ------------------------------------------------------------------------


def _exercise_every_metric() -> None:
    """Touch every metric and label so the scrape shows each series at least once."""
    metrics.set_build_info("monitor", "0.0.0-test")
    metrics.set_model_info("model-test", "cpu")
    metrics.configure_assets(["press-1", "press-2"])
    metrics.RECORDS_CONSUMED.labels(topic="fw.frames").inc(10)
    metrics.observe_record("press-1", "frames", time.time())
    metrics.observe_rejected("fw.audio", "bad_wav")
    metrics.LATE_RECORDS.labels(topic="fw.logs").inc()
    metrics.RATE_LIMITED_RECORDS.labels(asset=metrics.asset_labels("press-2")).inc()
    metrics.set_lag("fw.frames", 0, 50, 20)
    metrics.PAUSED_PARTITIONS.set(1)
    metrics.WINDOW_DECISION_LATENCY.observe(1.5)
    metrics.observe_batch({"frames": 4, "audio": 3, "logs": 1}, 4, [0.2, 0.4, 3.0, 9.0], 0.012)
    metrics.set_threshold("press-1", 2.5)
    metrics.event_opened("high", "anomaly")
    metrics.event_closed("high", "anomaly")
    metrics.set_adaptation("L1-S1", {"frames": 0.0, "frame_stats": 2.4})
    metrics.SQL_WRITE.observe(0.004)
    metrics.SQL_WRITE_FAILURES.inc(0)
    metrics.OUTBOX_PENDING.set(0)
    metrics.SUMMARIES_RENDERED.labels(status="ok").inc()
    metrics.SUMMARY_RENDER.observe(4.2)
    metrics.SUMMARIZER_LAG.set(2)
    metrics.job_run("shift_digest", "ok")
    metrics.job_run("recalibrate", "failed")


def test_every_metric_passes_promtool_check_metrics():
    promtool = _need(PROMTOOL, "promtool")
    _exercise_every_metric()
    body, _ = __import__("services.observability.server", fromlist=["render_metrics"]).render_metrics(None)
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    text = body.decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("fusionwatch_")}
    for expected in ["fusionwatch_records_consumed_total", "fusionwatch_consumer_lag_records",
                     "fusionwatch_window_decision_latency_seconds_bucket", "fusionwatch_anomaly_score_bucket",
                     "fusionwatch_events_opened_total", "fusionwatch_build_info", "fusionwatch_model_info",
                     "fusionwatch_scheduler_job_runs_total", "fusionwatch_summarizer_render_seconds_count",
                     "fusionwatch_asset_adaptation_nats"]:
        assert expected in names
    # no counter without _total, no `_created` twins
    assert not [n for n in names if n.endswith("_created")]


# --- the HTTP endpoint ----------------------------------------------------------------------------


def test_endpoint_serves_metrics_health_and_readiness_with_reason():
    flag = {"ok": False}
    readiness = Readiness({"thing": lambda: CheckResult(flag["ok"], "thing is down")}, interval_s=0.1)
    beat = Heartbeat(max_age_s=0.5)
    with MetricsServer("127.0.0.1", 0, readiness, liveness={"loop": beat}) as server:
        metrics.RECORDS_CONSUMED.labels(topic="t.endpoint").inc(3)
        status, ctype, body = get(server.url + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert 'fusionwatch_records_consumed_total{topic="t.endpoint"} 3.0' in body
        status, ctype, body = get(server.url + "/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert ctype.startswith("application/openmetrics-text") and body.rstrip().endswith("# EOF")

        status, _, body = get(server.url + "/readyz")
        assert (status, body) == (503, "not ready: thing: thing is down\n")
        assert 'fusionwatch_readiness_check_ok{check="thing"} 0.0' in get(server.url + "/metrics")[2]
        flag["ok"] = True
        assert wait_for(lambda: get(server.url + "/readyz")[0] == 200, 10)
        assert get(server.url + "/readyz")[2] == "ready\n"

        beat.beat()
        assert get(server.url + "/healthz")[:3:2] == (200, "ok\n")
        time.sleep(0.6)
        status, _, body = get(server.url + "/healthz")
        assert status == 503 and "main loop has not run" in body
        assert get(server.url + "/nope")[0] == 404


def test_readiness_flag_and_failing_check_are_reported_together():
    def boom() -> CheckResult:
        raise RuntimeError("exploded")

    r = Readiness({"boom": boom})
    r.set_flag("model", "model not loaded yet")
    result = r.refresh()
    assert not result.ok and "boom: RuntimeError: exploded" in result.reason and "model: model not loaded yet" in result.reason
    r = Readiness({"fine": lambda: CheckResult(True)})
    r.set_flag("model", None)
    assert r.refresh().ok


def test_ports_follow_service_offsets_and_the_override(tmp_path):
    from schemas.errors import ConfigError
    from services.settings import MetricsSettings, Settings

    s = Settings(metrics=MetricsSettings(base_port=9500))
    assert [metrics_port(s, n) for n in ("monitor", "summarizer", "scheduler", "up")] == [9500, 9501, 9502, 9503]
    assert metrics_port(Settings(metrics=MetricsSettings(port=9999)), "monitor") == 9999
    with pytest.raises(ConfigError, match="FW_METRICS__PORT"):
        metrics_port(s, "nonesuch")
    # a taken port is a clear configuration error, not a traceback from socketserver
    with MetricsServer("127.0.0.1", 0) as first:
        with pytest.raises(ConfigError, match="another process uses the port"):
            MetricsServer("127.0.0.1", first.port)


# --- readiness flips with real dependencies ----------------------------------------------------------


def test_readiness_flips_when_the_broker_goes_away_and_comes_back(tmp_path):
    from services.broker.embedded import EmbeddedBroker, free_port
    from services.kafka import Topics, ensure_topics
    from services.settings import KafkaSettings, MetricsSettings, Settings

    port = free_port()
    ks = KafkaSettings(partitions=2, topic_prefix="obs.")
    topics = Topics.from_settings(ks)
    settings = Settings(metrics=MetricsSettings(port=0, readiness_interval_s=0.2))
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
    try:
        ensure_topics(ks, broker.bootstrap)
        server = serve_metrics(settings, "monitor", {"kafka": kafka_reachable(ks, broker.bootstrap, topics.inputs, timeout_s=1.0)})
        try:
            assert wait_for(lambda: get(server.url + "/readyz")[0] == 200, 20), get(server.url + "/readyz")
            broker.stop()
            status, _, body = wait_for(lambda: (r := get(server.url + "/readyz"))[0] == 503 and r, 20)
            assert status == 503 and f"kafka: Kafka at 127.0.0.1:{port} unreachable" in body

            broker.start()  # memory storage: it comes back empty, so still not ready until topics exist
            status, _, body = wait_for(lambda: "topics missing" in (r := get(server.url + "/readyz"))[2] and r, 20)
            assert status == 503 and "obs.frames" in body
            ensure_topics(ks, broker.bootstrap)
            assert wait_for(lambda: get(server.url + "/readyz")[0] == 200, 20), get(server.url + "/readyz")
        finally:
            server.stop()
    finally:
        broker.stop()


class TcpRelay:
    """A TCP forwarder we can cut and restore: makes a real server 'unreachable' without stopping
    it (the shared PostgreSQL must keep running for everyone else)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> "TcpRelay":
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self.port = ls.getsockname()[1]
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a dead server or network would."""
        if self._listener:
            # shutdown() wakes the thread blocked in accept(); close() alone leaves it listening
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_readiness_flips_when_postgresql_is_unreachable_and_back(pg_url):
    from services.db import make_engine
    from services.settings import MetricsSettings, Settings

    parsed = urllib.parse.urlsplit(pg_url)
    relay = TcpRelay((parsed.hostname, parsed.port or 5432)).start()
    relayed = pg_url.replace(parsed.netloc, f"{parsed.netloc.split('@')[0]}@127.0.0.1:{relay.port}")
    engine = make_engine(relayed)
    settings = Settings(metrics=MetricsSettings(port=0, readiness_interval_s=0.2))
    server = serve_metrics(settings, "summarizer", {"database": database_reachable(engine)})
    try:
        assert wait_for(lambda: get(server.url + "/readyz")[0] == 200, 20), get(server.url + "/readyz")
        relay.cut()
        status, _, body = wait_for(lambda: (r := get(server.url + "/readyz"))[0] == 503 and r, 30)
        assert status == 503 and "database: database postgresql+psycopg://" in body and "unreachable" in body
        assert "fusionwatch_readiness_check_ok{check=\"database\"} 0.0" in get(server.url + "/metrics")[2]
        relay.start()  # same port again
        assert wait_for(lambda: get(server.url + "/readyz")[0] == 200, 30), get(server.url + "/readyz")
    finally:
        server.stop()
        relay.cut()
        engine.dispose()


def test_database_check_passes_on_sqlite_and_fails_on_a_missing_server(sqlite_url):
    from services.broker.embedded import free_port
    from services.db import make_engine

    assert database_reachable(make_engine(sqlite_url))() == CheckResult(True)
    dead = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    result = database_reachable(dead)()
    assert not result.ok and "unreachable" in result.reason


# --- a real Prometheus scraping -----------------------------------------------------------------------


class Prometheus:
    """The Debian `prometheus` binary on a free port, scraping the given targets every second."""

    def __init__(self, binary: str, workdir: Path, targets: dict[str, str], rule_files: tuple[str, ...] = ()):
        from services.broker.embedded import free_port

        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": list(rule_files),
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict]:
        try:
            status, _, body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        except OSError:
            return []
        if status != 200:
            return []
        return json.loads(body)["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.mark.slow
def test_real_prometheus_scrapes_lag_latency_and_events(tmp_path):
    binary = _need(PROMETHEUS, "prometheus")
    _exercise_every_metric()
    metrics.set_lag("fw.frames", 7, highwater=1000, position=958)
    with MetricsServer("127.0.0.1", 0, Readiness({"ok": lambda: CheckResult(True)}, interval_s=0.2)) as server:
        prom = Prometheus(binary, tmp_path, {"fusionwatch-monitor": f"127.0.0.1:{server.port}"})
        try:
            up = wait_for(lambda: prom.query('up{job="fusionwatch-monitor"} == 1'), 60, 0.5)
            assert up, (tmp_path / "prometheus.log").read_text()[-2000:]
            lag = wait_for(lambda: prom.query('fusionwatch_consumer_lag_records{topic="fw.frames",partition="7"}'), 30)
            assert float(lag[0]["value"][1]) == 42
            p50 = prom.query("histogram_quantile(0.5, sum by (le) (fusionwatch_window_decision_latency_seconds_bucket))")
            assert p50 and 0 < float(p50[0]["value"][1]) <= 120
            events = prom.query('sum(fusionwatch_events_opened_total{severity="high"})')
            assert events and float(events[0]["value"][1]) >= 1
            info = prom.query("fusionwatch_build_info")
            assert info and info[0]["metric"]["service"] == "monitor"
        finally:
            prom.stop()


def _registry_sum(name: str) -> float:
    return sum(s.value for fam in metrics.REGISTRY.collect() for s in fam.samples if s.name == name)


@pytest.mark.slow
def test_real_prometheus_scrapes_a_running_pipeline(broker, make_topics, sqlite_url, tmp_path, monkeypatch):
    """Broker + simulator + monitor (the real runner: metrics endpoint, readiness checks, outbox),
    scraped by a real Prometheus that also loads our alert rules and runs the dashboard's queries.

    The model is the transparent brightness scorer of tests/support (training a real one costs
    minutes of CPU; the model is not what this test is about), and a known-answer stream with one
    bright fault guarantees at least one event besides what the simulated plant produces."""
    binary = _need(PROMETHEUS, "prometheus")
    promtool = _need(PROMTOOL, "promtool")
    from services.broker.embedded import free_port
    from services.kafka import make_producer
    from services.monitor import runner
    from services.settings import DatabaseSettings, MetricsSettings, Settings
    from services.simulator.run import run_simulation
    from tests.support.scorers import BrightnessScorer
    from tests.support.streams import bright_fault_stream, produce

    ks, topics = make_topics(partitions=2)
    prefix = ks.topic_prefix
    port = free_port()
    settings = Settings(kafka=ks, database=DatabaseSettings(url=sqlite_url),
                        metrics=MetricsSettings(port=port, readiness_interval_s=0.5))

    def load_scorer(checkpoint, device="auto"):
        scorer = BrightnessScorer()
        metrics.set_model_info(scorer.version, "cpu")
        return scorer

    monkeypatch.setattr(runner, "load_scorer", load_scorer)
    events_before = _registry_sum("fusionwatch_events_opened_total")
    decisions_before = _registry_sum("fusionwatch_window_decision_latency_seconds_count")

    start = time.time() - 90
    run_simulation(settings, broker.bootstrap, assets=2, duration_s=20, speed=0, start_time=start)
    producer = make_producer(ks, broker.bootstrap)
    produce(producer, topics, bright_fault_stream(["obs-fault-1"], start, 30, {"obs-fault-1": (8, 16)}))
    producer.close()

    stop = threading.Event()
    errors: list[BaseException] = []

    def run_it():
        try:
            runner.run_monitor(settings, bootstrap=broker.bootstrap, stop=stop)
        except BaseException as e:  # surfaced below, not swallowed in the thread
            errors.append(e)

    thread = threading.Thread(target=run_it, daemon=True)
    thread.start()
    rules = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
    shutil.copytree(rules, tmp_path / "rules")
    prom = Prometheus(binary, tmp_path, {"fusionwatch-monitor": f"127.0.0.1:{port}"}, rule_files=("rules/*.rules.yml",))
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: get(url + "/readyz")[0] == 200, 90), (get(url + "/readyz"), errors)
        assert get(url + "/healthz")[0] == 200

        def q(promql: str) -> float | None:
            r = prom.query(promql)
            return float(r[0]["value"][1]) if r else None

        assert wait_for(lambda: q('up{job="fusionwatch-monitor"}') == 1, 60, 0.5), (tmp_path / "prometheus.log").read_text()[-2000:]
        events = wait_for(lambda: (v := q("sum(fusionwatch_events_opened_total)")) is not None and v > events_before and v, 120, 1)
        assert events and events > events_before, errors
        decided = wait_for(lambda: (v := q("sum(fusionwatch_window_decision_latency_seconds_count)")) and v > decisions_before and v, 60)
        assert decided, errors
        p95 = q("histogram_quantile(0.95, sum by (le) (fusionwatch_window_decision_latency_seconds_bucket))")
        assert p95 is not None and p95 > 0
        lag = wait_for(lambda: prom.query(f'fusionwatch_consumer_lag_records{{topic=~"{prefix}.*"}}'), 30)
        assert lag and {r["metric"]["topic"] for r in lag} <= set(topics.inputs)
        assert all(float(r["value"][1]) >= 0 for r in lag)
        consumed = q(f'sum(fusionwatch_records_consumed_total{{topic=~"{prefix}.*"}})')
        assert consumed and consumed > 0
        assert q('fusionwatch_readiness_check_ok{check="kafka"}') == 1
        assert prom.query('fusionwatch_model_info{version="brightness-test-1"}')

        # the live scrape passes promtool's lint
        body = urllib.request.urlopen(url + "/metrics", timeout=10).read()
        lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

        # our rules load and evaluate without errors on live data
        def rules_healthy():
            status, _, body = get(prom.url + "/api/v1/rules")
            groups = json.loads(body)["data"]["groups"] if status == 200 else []
            evaluated = [r for g in groups for r in g["rules"] if r.get("lastEvaluation", "").startswith("20")]
            return groups and len(evaluated) == sum(len(g["rules"]) for g in groups) and groups

        groups = wait_for(rules_healthy, 30, 0.5)
        assert groups, "Prometheus did not load deploy/prometheus/rules"
        assert [r["name"] for g in groups for r in g["rules"] if r["health"] != "ok"] == []

        # every dashboard query is valid PromQL that Prometheus executes
        dashboard = json.loads((rules.parent.parent / "grafana" / "dashboards" / "fusionwatch.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "1m")
                status, _, body = get(f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
                assert status == 200 and json.loads(body)["status"] == "success", (panel["title"], expr, body)
    finally:
        stop.set()
        thread.join(60)
        prom.stop()
    assert not thread.is_alive() and not errors
