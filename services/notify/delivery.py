"""Deliver one notification to its channels: attempts, exponential backoff with jitter, and the
dead letter once a channel reaches the attempt or age limit (or refuses for good).

Channels are tried side by side: a fast one finishes while a slow one waits for its next attempt.
`deliver` returns only when every channel is finished (delivered or dead-lettered, each with its
ledger row) or when `wait` says to give up (the service stops, or lost the record's partition);
the caller then does not commit the offset, and the next reader of the record tries again the
channels that are not finished.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping

from schemas.tables import utcnow
from services.notify.channel import Channel
from services.notify.ledger import DeadLetter, Ledger
from services.notify.notification import Notification
from services.observability import metrics as m
from services.settings import NotifyRetrySettings

log = logging.getLogger(__name__)

# wait(seconds) -> False when delivery must stop now (unfinished channels stay unfinished)
Wait = Callable[[float], bool]


def backoff_s(attempt: int, retry: NotifyRetrySettings, rng: random.Random | None = None) -> float:
    """Pause after failed attempt number `attempt` (1-based): exponential, capped, with "equal
    jitter" (half fixed, half random), so retries of many notifiers do not arrive in lockstep."""
    ceiling = min(retry.max_delay_s, retry.initial_delay_s * 2 ** (attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass
class _Attempts:
    channel: Channel
    count: int = 0
    first_at: datetime | None = None
    first_mono: float = 0.0
    next_mono: float = 0.0
    last_error: str = ""


@dataclass
class Outcome:
    delivered: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    complete: bool = True  # False: stopped before every channel finished


def deliver(notification: Notification, channels: Mapping[str, Channel], ledger: Ledger,
            retry: NotifyRetrySettings, wait: Wait, clock: Callable[[], float] = time.monotonic) -> Outcome:
    pending = {name: _Attempts(ch) for name, ch in channels.items()}
    outcome = Outcome()
    while pending:
        now = clock()
        for name in sorted(n for n, a in pending.items() if a.next_mono <= now):
            a = pending[name]
            if a.count == 0:
                a.first_at, a.first_mono = utcnow(), clock()
            a.count += 1
            result = a.channel.send(notification)
            label = m.notify_channel_label(name)
            if result.ok:
                ledger.delivered(notification.event_id, notification.revision, name, notification.transition, a.count)
                m.NOTIFICATIONS_DELIVERED.labels(channel=label, transition=notification.transition).inc()
                m.NOTIFICATION_LATENCY.labels(channel=label).observe(
                    max(0.0, (utcnow() - notification.changed_at).total_seconds()))
                outcome.delivered.append(name)
                del pending[name]
                continue
            m.NOTIFICATION_ATTEMPTS_FAILED.labels(channel=label).inc()
            a.last_error = result.error
            age = clock() - a.first_mono
            if not result.retryable or a.count >= retry.max_attempts or age >= retry.max_age_s:
                why = ("refused" if not result.retryable else
                       f"{a.count} attempts" if a.count >= retry.max_attempts else f"{age:.0f} s")
                log.warning("notification %s (%s %s) to channel %s dead-lettered after %s: %s", notification.key,
                            notification.asset, notification.transition, name, why, result.error)
                ledger.dead_letter(DeadLetter(
                    event_id=notification.event_id, revision=notification.revision, channel=name,
                    transition=notification.transition, payload=notification.payload(), attempts=a.count,
                    first_attempt_at=a.first_at or utcnow(), last_attempt_at=utcnow(), last_error=result.error))
                m.NOTIFICATIONS_DEAD_LETTERED.labels(channel=label).inc()
                outcome.dead_lettered.append(name)
                del pending[name]
                continue
            pause = backoff_s(a.count, retry)
            if result.retry_after_s is not None:
                pause = min(max(pause, result.retry_after_s), retry.max_delay_s)
            # never wait past the age limit: the last attempt happens at it, not after it
            pause = min(pause, max(0.0, retry.max_age_s - age))
            a.next_mono = clock() + pause
            log.info("notification %s to channel %s failed (attempt %d: %s); next in %.1f s", notification.key,
                     name, a.count, result.error, pause)
        if pending and not wait(max(0.0, min(a.next_mono for a in pending.values()) - clock())):
            outcome.complete = False
            return outcome
    return outcome
