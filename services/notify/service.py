"""The notifier as a service: its own consumer group on `fw.events`, at least once.

Per record, in partition order: parse the CloudEvent, find its transition (rules.transition, with
the severity this notifier saw earlier for the event), route it (rules.route), deliver it to every
routed channel that the ledger does not already show finished (delivery.deliver), remember the
event's severity, then commit the record's offset. The offset is committed only after every routed
channel delivered or dead-lettered; a stop, crash or lost partition before that leaves the record
to be read again, and the ledger keeps the channels that were done from hearing it twice.

While a channel waits between retries the consumer keeps polling with its partitions paused, so
the group does not evict it (max.poll.interval) however long the retry limits allow.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from schemas.events import AnomalyCloudEvent
from services.kafka import Topics, make_consumer
from services.notify import rules
from services.notify.channel import Channel
from services.notify.delivery import Outcome, deliver
from services.notify.ledger import Ledger
from services.notify.mqtt import MqttChannel
from services.notify.notification import Notification, from_cloud_event
from services.notify.webhook import WebhookChannel
from services.observability import metrics as m
from services.settings import NotifySettings, Settings

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
DB_RETRY_S = 2.0


def build_channels(notify: NotifySettings) -> dict[str, Channel]:
    channels: dict[str, Channel] = {name: MqttChannel(name, s) for name, s in notify.mqtt.items()}
    channels |= {name: WebhookChannel(name, s) for name, s in notify.webhooks.items()}
    m.notify_channel_label.allow(channels)
    return channels


@dataclass(frozen=True)
class Handled:
    """What became of one fw.events record."""

    offset: int
    notification: Notification | None  # None: no transition, or not an anomaly CloudEvent
    channels: list[str]
    outcome: Outcome | None
    complete: bool


class NotifierService:
    def __init__(self, settings: Settings, bootstrap: str, sessions, topics: Topics | None = None,
                 channels: dict[str, Channel] | None = None):
        self.settings, self.cfg, self.bootstrap = settings, settings.notify, bootstrap
        self.topics = topics or Topics.from_settings(settings.kafka)
        self.ledger = Ledger(sessions)
        self.channels = channels if channels is not None else build_channels(self.cfg)
        self.ready = threading.Event()  # partitions assigned and positioned: records produced now are read
        self._consumer = None
        self._last_prune = float("-inf")

    # --- one record ---------------------------------------------------------------------------------
    def handle(self, offset: int, value: bytes | None, wait: Callable[[float], bool]) -> Handled:
        try:
            cloud = AnomalyCloudEvent.model_validate_json(value or b"")
        except (ValidationError, ValueError) as e:
            log.warning("skipping an fw.events record that is not an anomaly CloudEvent: %s", str(e)[:200])
            m.NOTIFICATIONS_SKIPPED.labels(reason="invalid").inc()
            return Handled(offset, None, [], None, True)
        d = cloud.data
        previous = self.ledger.seen_severity(d.event_id)
        transition = rules.transition(d.change, d.severity, previous)
        if transition is None:
            self.ledger.remember(d.event_id, d.asset, d.revision, d.severity)
            return Handled(offset, None, [], None, True)
        told = self.ledger.told_of_open(d.event_id) if transition == "closed" else set()
        routed = [c for c in rules.route(self.cfg.rules, d.asset, d.kind, d.severity, transition, told)
                  if c in self.channels]
        notification = from_cloud_event(cloud, transition, previous if transition == "escalated" else None,
                                        self.cfg.base_url)
        finished = self.ledger.finished(d.event_id, d.revision)
        todo = {c: self.channels[c] for c in routed if c not in finished}
        if len(todo) < len(routed):
            m.NOTIFICATIONS_SKIPPED.labels(reason="already_delivered").inc(len(routed) - len(todo))
        outcome = deliver(notification, todo, self.ledger, self.cfg.retry, wait) if todo else Outcome()
        if outcome.complete:
            self.ledger.remember(d.event_id, d.asset, d.revision, d.severity)
        return Handled(offset, notification, routed, outcome, outcome.complete)

    # --- the loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, on_handled: Callable[[Handled], None] | None = None) -> None:
        consumer = make_consumer(self.settings.kafka, self.bootstrap, self.cfg.group_id, max_poll_records=50,
                                 auto_offset_reset=self.cfg.new_group_start)
        self._consumer = consumer
        consumer.subscribe([self.topics.events])
        log.info("notifier consuming %s as group %s; channels: %s", self.topics.events, self.cfg.group_id,
                 ", ".join(sorted(self.channels)) or "none")
        try:
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=500)
                self._mark_ready(consumer)
                for tp, records in batch.items():
                    self._partition(consumer, tp, records, stop, on_handled)
                self._prune()
        finally:
            self.ready.clear()
            consumer.close(autocommit=False)
            for channel in self.channels.values():
                channel.close()

    def _partition(self, consumer, tp: TopicPartition, records, stop: threading.Event, on_handled) -> None:
        for rec in records:
            if stop.is_set() or tp not in consumer.assignment():
                return self._rewind(consumer, tp, rec.offset)
            try:
                handled = self.handle(rec.offset, rec.value, self._waiter(consumer, tp, stop))
            except DBAPIError as e:
                log.warning("notifier: database unavailable (%s); reading offset %d of %s again in %.0f s",
                            str(e.orig).splitlines()[0][:160] if e.orig else e, rec.offset, tp, DB_RETRY_S)
                stop.wait(DB_RETRY_S)
                return self._rewind(consumer, tp, rec.offset)
            if not handled.complete:
                return self._rewind(consumer, tp, rec.offset)
            try:
                consumer.commit({tp: OffsetAndMetadata(rec.offset + 1, "", -1)})
            except (CommitFailedError, KafkaError) as e:
                # rebalanced away: the new owner reads on from the last commit; the ledger keeps it quiet
                log.warning("notifier: commit of %s offset %d failed (%s)", tp, rec.offset, e)
                return self._rewind(consumer, tp, rec.offset + 1)
            if on_handled is not None:
                on_handled(handled)

    def _waiter(self, consumer, tp: TopicPartition, stop: threading.Event) -> Callable[[float], bool]:
        """Wait between retries while staying in the group: poll with every partition paused (records
        a rebalance hands over meanwhile are rewound, not dropped). False once stopping or `tp` is lost."""

        def wait(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while True:
                if stop.is_set() or tp not in consumer.assignment():
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                consumer.pause(*consumer.assignment())
                try:
                    got = consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000) or 1)
                finally:
                    consumer.resume(*consumer.paused())
                for other, recs in got.items():
                    consumer.seek(other, recs[0].offset)

        return wait

    @staticmethod
    def _rewind(consumer, tp: TopicPartition, offset: int) -> None:
        """The next poll returns `offset` of `tp` again (if this member still owns it)."""
        if tp in consumer.assignment():
            consumer.seek(tp, offset)

    def _mark_ready(self, consumer) -> None:
        assignment = consumer.assignment()
        if not assignment:
            self.ready.clear()
            return
        if not self.ready.is_set():
            for tp in assignment:
                consumer.position(tp)  # resolves a new group's start (latest/earliest) now, not lazily
            self.ready.set()

    def _prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        try:
            n = self.ledger.prune(self.cfg.ledger_retention_days)
            if n:
                log.info("notifier: pruned %d ledger rows older than %.0f days", n, self.cfg.ledger_retention_days)
        except DBAPIError as e:
            log.warning("notifier: pruning the ledger failed (%s); next try in an hour", e)


def send_test(channel: Channel, base_url: str) -> tuple[Notification, object]:
    """`fusionwatch notify test`: one made-up notification (transition "test") through a channel, once."""
    import uuid
    from datetime import datetime, timezone

    from services.notify.notification import Links

    now = datetime.now(timezone.utc)
    event_id = str(uuid.uuid4())
    n = Notification(event_id=event_id, revision=0, transition="test", asset="fusionwatch-test", kind="test",
                     severity="low", previous_severity=None, status="test", start_time=now, end_time=now,
                     changed_at=now, peak_score=0.0, threshold=1.0, learning=False, closed_by=None, modality_shares={},
                     links=Links.of(base_url, event_id))
    return n, channel.send(n)
