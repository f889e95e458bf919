"""What every channel (MQTT, webhook) offers the delivery loop: one attempt, and its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.notify.notification import Notification


@dataclass(frozen=True)
class SendResult:
    ok: bool
    # False: trying again cannot help (a 4xx from the receiver other than 408/425/429); dead-letter now
    retryable: bool = True
    error: str = ""
    retry_after_s: float | None = None  # the receiver asked for this pause (HTTP Retry-After)

    @classmethod
    def delivered(cls) -> "SendResult":
        return cls(True)


class Channel(Protocol):
    name: str
    kind: str  # mqtt | webhook

    def send(self, notification: Notification) -> SendResult:
        """One attempt; never raises for a receiver's failure (that is a SendResult)."""

    def close(self) -> None: ...
