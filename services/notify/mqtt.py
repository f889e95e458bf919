"""MQTT channel (paho-mqtt): per asset, an event message and a retained state.

Topics (`site` is optional; without it that level is left out):
- `<prefix>/<site>/<asset>/event`       the notification JSON, QoS 1, not retained
- `<prefix>/<site>/<asset>/state`       `open` or `clear`, retained: a client that connects later
                                        learns at once whether the asset has an open event
- `<prefix>/<site>/<asset>/attributes`  the last notification JSON, retained
- `<prefix>/<site>/status`              `online`, retained; `offline` as the will when the notifier
                                        goes away without saying so
- with Home Assistant discovery on, `<discovery_prefix>/binary_sensor/fusionwatch/<site>_<asset>/config`
  (retained, once per asset and connection): a `problem` binary sensor on the state topic.

A message counts as delivered when the broker acknowledged every publish of the attempt (PUBACK /
PUBCOMP). The client does not reconnect or resend on its own: a failed attempt drops it, and the
delivery loop's retry connects afresh, so nothing is published behind the retry's back.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from services.notify.channel import SendResult
from services.notify.notification import Notification
from services.settings import MqttChannelSettings


class MqttTopics:
    def __init__(self, settings: MqttChannelSettings):
        self.settings = settings
        self.root = "/".join(p for p in (settings.topic_prefix.strip("/"), settings.site) if p)

    def asset(self, asset: str, leaf: str) -> str:
        return f"{self.root}/{asset}/{leaf}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    def discovery(self, asset: str) -> str:
        object_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.settings.site or 'fw'}_{asset}")
        return f"{self.settings.discovery_prefix.strip('/')}/binary_sensor/fusionwatch/{object_id}/config"


def discovery_config(topics: MqttTopics, asset: str) -> dict:
    """Home Assistant MQTT discovery: one binary sensor (device class `problem`) per asset."""
    site = topics.settings.site
    uid = re.sub(r"[^A-Za-z0-9_-]", "_", f"fusionwatch_{site or 'fw'}_{asset}")
    return {
        "name": "anomaly",
        "unique_id": uid,
        "device_class": "problem",
        "state_topic": topics.asset(asset, "state"),
        "payload_on": "open",
        "payload_off": "clear",
        "json_attributes_topic": topics.asset(asset, "attributes"),
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {"identifiers": [uid], "name": f"{asset}" + (f" ({site})" if site else ""),
                   "manufacturer": "fusionwatch", "model": "monitored asset"},
    }


class MqttChannel:
    kind = "mqtt"

    def __init__(self, name: str, settings: MqttChannelSettings):
        self.name, self.settings = name, settings
        self.topics = MqttTopics(settings)
        self._client: mqtt.Client | None = None
        self._announced: set[str] = set()  # assets whose discovery config went out on this connection

    def send(self, notification: Notification) -> SendResult:
        s = self.settings
        deadline = time.monotonic() + s.timeout_s
        try:
            client = self._connected(deadline)
            body = notification.body()
            asset = notification.asset
            pending = []
            announce = s.homeassistant_discovery and notification.transition != "test" and asset not in self._announced
            if announce:
                pending.append(client.publish(self.topics.discovery(asset), json.dumps(discovery_config(self.topics, asset)),
                                              qos=s.qos, retain=True))
            pending.append(client.publish(self.topics.asset(asset, "event"), body, qos=s.qos, retain=False))
            if s.retain_state and notification.transition != "test":
                pending.append(client.publish(self.topics.asset(asset, "state"),
                                              "open" if notification.is_open else "clear", qos=s.qos, retain=True))
                pending.append(client.publish(self.topics.asset(asset, "attributes"), body, qos=s.qos, retain=True))
            for info in pending:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    raise TimeoutError(f"no acknowledgement from {s.host}:{s.port} within {s.timeout_s:.0f} s")
            if announce:
                self._announced.add(asset)
            return SendResult.delivered()
        except (OSError, RuntimeError, ValueError, ConnectionError) as e:  # TimeoutError is an OSError
            self._drop()
            return SendResult(False, error=f"{type(e).__name__}: {e}"[:500])

    def _connected(self, deadline: float) -> mqtt.Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        self._drop()
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id or f"fusionwatch-notify-{self.name}-{os.getpid()}",
                             clean_session=True, reconnect_on_failure=False)
        if s.username:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls:
            client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        acked = threading.Event()
        outcome: dict = {}

        def on_connect(_client, _userdata, _flags, reason_code, _properties):
            outcome["rc"] = reason_code
            acked.set()

        client.on_connect = on_connect
        self._client = client  # set before connecting, so close() stops a half-started client too
        client.connect(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        if not acked.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"no CONNACK from {s.host}:{s.port}")
        if outcome["rc"].is_failure:
            raise ConnectionError(f"{s.host}:{s.port} refused the connection: {outcome['rc']}")
        self._announced.clear()
        client.publish(self.topics.status, "online", qos=1, retain=True)
        return client

    def close(self) -> None:
        """Say `offline` on the status topic and disconnect (a clean stop sends no will)."""
        client = self._client
        if client is not None and client.is_connected():
            try:
                client.publish(self.topics.status, "offline", qos=1, retain=True).wait_for_publish(2.0)
            except (OSError, RuntimeError, ValueError):
                pass
        self._drop()

    def _drop(self) -> None:
        """Forget the client and whatever it still had queued; the next attempt connects afresh."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.disconnect()
        except (OSError, RuntimeError, ValueError):
            pass
        client.loop_stop()
