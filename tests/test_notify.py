"""The notifier end to end with real parts: the embedded broker carries fw.events (CloudEvents
produced as the outbox relay produces them), a real Mosquitto broker and a real HTTP receiver take
the notifications, SQLite holds the ledger. Shown: routing, HMAC, retained MQTT state, nothing lost
while a receiver is down, no duplicate per revision (also after the notifier restarts and reads
everything again), dead letters after the limit, and `fusionwatch notify test`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from schemas.events import AnomalyCloudEvent, AnomalyData
from schemas.events import event_id as make_event_id
from schemas.tables import NotifyDeadLetter, NotifyDelivery
from services import db
from services.kafka import make_producer
from services.notify.service import NotifierService
from services.notify.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from services.settings import DatabaseSettings, NotifySettings, Settings

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SECRET = "receiver-shared-secret-0123"
FAST_RETRY = {"initial_delay_s": 0.05, "max_delay_s": 0.3, "max_age_s": 120.0, "max_attempts": 10_000}
WAIT_S = 60.0

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (make sysdeps)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- a real Mosquitto --------------------------------------------------------------------------------


class Mosquitto:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = tmp / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)
        eventually(lambda: _accepts(self.port) or self.proc.poll() is not None, "mosquitto to listen", 10)
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def mosquitto(tmp_path):
    m = Mosquitto(tmp_path)
    m.start()
    yield m
    m.stop()


class Subscriber:
    """A paho client that records (topic, payload, retained) of everything under `pattern`."""

    def __init__(self, port: int, pattern: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _client, _userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, suffix: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- a real HTTP receiver ----------------------------------------------------------------------------


class Receiver:
    """A threaded http.server that records each POST; `status` makes it answer with an error, and
    stop()/start() take it off the network (connection refused) and back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.requests: list[tuple[dict, bytes]] = []
        self.status = 204
        self.attempts = 0
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.status
                    if status < 300:
                        receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def payloads(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for _, body in self.requests]

    def keys(self) -> list[str]:
        with self._lock:
            return [h[IDEMPOTENCY_HEADER.lower()] for h, _ in self.requests]


@pytest.fixture
def receiver():
    r = Receiver()
    r.start()
    yield r
    r.stop()


# --- fw.events as the outbox relay writes it ---------------------------------------------------------


class Events:
    def __init__(self, bootstrap: str, kafka, topic: str):
        self.producer = make_producer(kafka, bootstrap)
        self.topic = topic
        self.t0 = datetime.now(timezone.utc).replace(microsecond=0)

    def send(self, asset: str, change: str, revision: int, severity: str, kind: str = "acoustic",
             start_offset_s: int = 0) -> str:
        start = self.t0 + timedelta(seconds=start_offset_s)
        data = AnomalyData(event_id=make_event_id(asset, start), change=change, revision=revision, asset=asset,
                           kind=kind, severity=severity, status="closed" if change == "closed" else "open",
                           start_time=start, end_time=start + timedelta(seconds=9) if change == "closed" else None,
                           peak_score=12.0, mean_score=8.0, threshold=5.0, model_version="test", windows=revision * 3)
        cloud = AnomalyCloudEvent.wrap(data, datetime.now(timezone.utc))
        self.producer.send(self.topic, key=asset.encode(), value=json.dumps(cloud.model_dump(mode="json")).encode(),
                           headers=[("content-type", b"application/cloudevents+json")])
        self.producer.flush()
        return data.event_id

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def stack(broker, make_topics, request):
    """(Kafka settings, fresh topics, a migrated database URL, an fw.events producer); SQLite unless
    the test asks for "pg_url" through indirect parametrisation."""
    url = request.getfixturevalue(getattr(request, "param", "sqlite_url"))
    ks, topics = make_topics(2)
    events = Events(broker.bootstrap, ks, topics.events)
    yield ks, topics, url, events
    events.close()


def make_settings(ks, url: str, **notify) -> Settings:
    notify.setdefault("new_group_start", "earliest")
    notify.setdefault("group_id", f"notify-{uuid.uuid4().hex[:8]}")
    notify.setdefault("base_url", "https://fw.plant.example")
    return Settings(kafka=ks, database=DatabaseSettings(url=url), notify=NotifySettings(**notify))


@contextmanager
def running(settings: Settings, bootstrap: str, topics):
    """A notifier in a thread; yields (service, handled records)."""
    engine = db.make_engine(settings.database.url)
    service = NotifierService(settings, bootstrap, db.session_factory(engine), topics)
    handled = []
    stop = threading.Event()
    errors = []

    def body():
        try:
            service.run(stop, on_handled=handled.append)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    try:
        eventually(lambda: service.ready.is_set() or errors, "the notifier to join its group")
        yield service, handled
    finally:
        stop.set()
        thread.join(30)
        engine.dispose()
    assert not errors, errors
    assert not thread.is_alive()


def ledger_rows(url: str, model):
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            return list(s.scalars(select(model)))
    finally:
        engine.dispose()


# --- tests -------------------------------------------------------------------------------------------


def test_routing_signature_links_and_retained_mqtt_state(broker, stack, mosquitto, receiver):
    ks, topics, url, events = stack
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        ks, url, retry=FAST_RETRY,
        webhooks={"ops": {"url": receiver.url, "secret": SECRET}},
        mqtt={"plant": {"host": "127.0.0.1", "port": mosquitto.port, "topic_prefix": prefix, "site": "north",
                        "homeassistant_discovery": True, "discovery_prefix": f"{prefix}-ha"}},
        rules=[{"name": "line 1 pager", "assets": ["L1-*"], "min_severity": "high", "channels": ["ops"]},
               {"name": "everything to the plant broker", "channels": ["plant"]}])
    sub = Subscriber(mosquitto.port, f"{prefix}/#")
    a = events.send("L1-S1", "opened", 1, "low")
    events.send("L1-S1", "updated", 2, "medium")  # escalated: plant only (below the pager's high)
    events.send("L1-S1", "updated", 3, "medium")  # a republication: no transition
    events.send("L1-S1", "updated", 4, "high")  # escalated to high: the pager too
    events.send("L1-S1", "closed", 5, "high")
    b = events.send("L2-S1", "opened", 1, "critical", kind="visual", start_offset_s=1)  # not line 1: plant only
    c = events.send("L1-S3", "opened", 1, "critical", kind="visual", start_offset_s=2)  # stays open
    with running(settings, broker.bootstrap, topics) as (_, handled):
        eventually(lambda: len(handled) == 7, "all seven records handled")
        eventually(lambda: len(sub.on("/event")) == 6, "six MQTT event messages")
    sub.close()

    # the webhook: exactly the line-1 transitions at high or above, signed, with links
    got = receiver.payloads()
    # (in order per asset: one asset's records share a partition)
    assert [(p["asset"], p["revision"], p["transition"]) for p in got if p["asset"] == "L1-S1"] == [
        ("L1-S1", 4, "escalated"), ("L1-S1", 5, "closed")]
    assert [(p["asset"], p["revision"], p["transition"]) for p in got if p["asset"] != "L1-S1"] == [
        ("L1-S3", 1, "opened")]
    escalation = next(p for p in got if p["transition"] == "escalated")
    assert escalation["previous_severity"] == "medium" and escalation["severity"] == "high"
    for headers, body in receiver.requests:
        assert verify(SECRET.encode(), headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()])
        assert not verify(b"not-the-secret-0123456", headers[TIMESTAMP_HEADER.lower()], body,
                          headers[SIGNATURE_HEADER.lower()])
    assert sorted(receiver.keys()) == sorted([f"{a}:4", f"{a}:5", f"{c}:1"])
    assert escalation["review_url"] == f"https://fw.plant.example/#event={a}"
    assert escalation["clip_url"] == f"https://fw.plant.example/api/events/{a}/clip"

    # MQTT: every transition of every asset, on the asset's own topic
    seen = [(t.split("/")[2], json.loads(p)["revision"], json.loads(p)["transition"]) for t, p, _ in sub.on("/event")]
    assert sorted(seen) == sorted([("L1-S1", 1, "opened"), ("L1-S1", 2, "escalated"), ("L1-S1", 4, "escalated"),
                                   ("L1-S1", 5, "closed"), ("L2-S1", 1, "opened"), ("L1-S3", 1, "opened")])
    assert all(t.startswith(f"{prefix}/north/") for t, _, _ in sub.on("/event"))

    # a client that connects later learns each asset's state from the retained messages
    late = Subscriber(mosquitto.port, f"{prefix}/#")
    eventually(lambda: len(late.on("/state")) == 3, "three retained states")
    state = {t.split("/")[2]: p.decode() for t, p, retained in late.on("/state") if retained}
    assert state == {"L1-S1": "clear", "L2-S1": "open", "L1-S3": "open"}
    attributes = {t.split("/")[2]: json.loads(p)["event_id"] for t, p, _ in late.on("/attributes")}
    assert attributes == {"L1-S1": a, "L2-S1": b, "L1-S3": c}
    assert late.on("/status") == [(f"{prefix}/north/status", b"offline", True)]  # the notifier stopped cleanly
    late.close()
    ha = Subscriber(mosquitto.port, f"{prefix}-ha/#")
    configs = eventually(lambda: len(ha.on("/config")) == 3 and ha.on("/config"), "three discovery configs")
    ha.close()
    l2 = next(json.loads(p) for t, p, _ in configs if "L2-S1" in t)
    assert l2["state_topic"] == f"{prefix}/north/L2-S1/state" and l2["device_class"] == "problem"
    assert (l2["payload_on"], l2["payload_off"]) == ("open", "clear")


def test_receivers_down_for_a_while_lose_nothing_and_a_replay_sends_no_duplicates(
        broker, stack, mosquitto, receiver):
    ks, topics, url, events = stack
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    channels = dict(webhooks={"ops": {"url": receiver.url, "secret": SECRET}},
                    mqtt={"plant": {"host": "127.0.0.1", "port": mosquitto.port, "topic_prefix": prefix,
                                    "timeout_s": 2.0}},
                    rules=[{"channels": ["ops", "plant"]}])
    settings = make_settings(ks, url, retry=FAST_RETRY, **channels)
    receiver.status = 503  # the webhook answers errors...
    mosquitto.stop()  # ...and the MQTT broker is gone
    with running(settings, broker.bootstrap, topics) as (_, handled):
        ids = [events.send(f"L1-S{i}", "opened", 1, "high", start_offset_s=i) for i in range(3)]
        events.send("L1-S0", "closed", 2, "high")
        eventually(lambda: receiver.attempts >= 5, "several failed webhook attempts")
        assert handled == [] and receiver.requests == []
        receiver.stop()  # now refusing connections altogether
        time.sleep(0.5)
        receiver.status = 204
        receiver.start()
        mosquitto.start()
        eventually(lambda: len(handled) == 4, "all four records handled after the receivers came back")
    expected = [f"{ids[0]}:1", f"{ids[1]}:1", f"{ids[2]}:1", f"{ids[0]}:2"]
    assert sorted(receiver.keys()) == sorted(expected)  # once each
    assert [k for k in receiver.keys() if k.startswith(ids[0])] == [expected[0], expected[3]]  # in order per asset
    # the MQTT broker has each asset's last notification, retained
    sub = Subscriber(mosquitto.port, f"{prefix}/#")
    last = eventually(lambda: len(sub.on("/attributes")) == 3 and sub.on("/attributes"), "three retained attributes")
    assert sorted((json.loads(p)["event_id"], json.loads(p)["revision"]) for _, p, _ in last) == sorted(
        [(ids[0], 2), (ids[1], 1), (ids[2], 1)])
    rows = ledger_rows(url, NotifyDelivery)
    assert sorted((r.channel, f"{r.event_id}:{r.revision}") for r in rows) == sorted(
        (ch, k) for ch in ("ops", "plant") for k in expected)
    assert all(r.outcome == "delivered" for r in rows)
    for channel in ("ops", "plant"):  # (later records of a partition wait behind its first, untried)
        assert max(r.attempts for r in rows if r.channel == channel) > 1, channel

    # a notifier that reads everything again (a crash before any commit looks the same) sends nothing
    replay = settings.model_copy(update={"notify": settings.notify.model_copy(
        update={"group_id": "replay-" + uuid.uuid4().hex[:6]})})
    with running(replay, broker.bootstrap, topics) as (_, handled):
        eventually(lambda: len(handled) == 4, "the replay read all four records")
    assert sorted(receiver.keys()) == sorted(expected)
    assert sub.on("/event") == []  # the subscriber was there during the replay: nothing was published
    sub.close()


@pytest.mark.parametrize("stack", ["sqlite_url", "pg_url"], indirect=True)
def test_dead_letter_after_the_limit_and_at_once_when_refused(broker, stack, receiver):
    ks, topics, url, events = stack
    refusing = Receiver()
    refusing.status = 403
    refusing.start()
    settings = make_settings(
        ks, url, retry={"initial_delay_s": 0.05, "max_delay_s": 0.1, "max_attempts": 3, "max_age_s": 60},
        webhooks={"flaky": {"url": receiver.url, "secret": SECRET},
                  "forbidden": {"url": refusing.url, "secret": SECRET}},
        rules=[{"channels": ["flaky", "forbidden"]}])
    receiver.status = 500
    try:
        with running(settings, broker.bootstrap, topics) as (_, handled):
            first = events.send("L1-S1", "opened", 1, "high")
            eventually(lambda: len(handled) == 1, "the record finished (dead-lettered)")
            receiver.status = 204
            second = events.send("L1-S2", "opened", 1, "high", start_offset_s=1)
            eventually(lambda: len(handled) == 2, "the next record handled")
    finally:
        refusing.stop()
    assert receiver.attempts == 4 and receiver.keys() == [f"{second}:1"]  # 3 tries of the first, then the second
    assert refusing.attempts == 2  # one each: a 403 is not retried
    dead = sorted(ledger_rows(url, NotifyDeadLetter), key=lambda d: (d.event_id != first, d.channel))
    assert [(d.event_id, d.channel, d.attempts) for d in dead] == [
        (first, "flaky", 3), (first, "forbidden", 1), (second, "forbidden", 1)]
    assert dead[0].last_error.startswith("HTTP 500") and dead[1].last_error.startswith("HTTP 403")
    assert dead[0].payload["review_url"].endswith(first) and dead[0].transition == "opened"


def test_notify_test_command_sends_one_signed_message(receiver, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")} | {
        "FW_NOTIFY__WEBHOOKS__OPS__URL": receiver.url, "FW_NOTIFY__WEBHOOKS__OPS__SECRET": SECRET,
        "FW_DATABASE_URL": f"sqlite:///{tmp_path / 'fw.db'}"}
    cmd = [sys.executable, "-m", "services.cli", "notify", "test", "--channel", "ops"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "delivered" in ok.stderr
    [(headers, body)] = receiver.requests
    assert verify(SECRET.encode(), headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()])
    assert json.loads(body)["transition"] == "test"
    receiver.status = 503
    failed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "HTTP 503" in failed.stderr
    unknown = subprocess.run(cmd[:-1] + ["pager"], env=env, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "no channel named 'pager'" in unknown.stderr
