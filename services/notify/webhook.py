"""Webhook channel: the notification's JSON POSTed to a URL, signed so the receiver can trust it.

Headers of every request:
- `X-Fusionwatch-Timestamp`: Unix seconds when this attempt was signed.
- `X-Fusionwatch-Signature`: `v1=` + hex HMAC-SHA256(secret, timestamp + "." + body). The timestamp
  is inside the signature, so a receiver that refuses old timestamps (say, > 5 minutes) also
  refuses a replayed request; docs/production.md has a verification snippet.
- `Idempotency-Key`: event id + ":" + revision — the same on every retry and replay of a revision.

2xx is delivered. 408, 425, 429, 5xx and connection errors are retried (a Retry-After in seconds is
honoured); any other 4xx is dead-lettered at once: the receiver refused this request and will
refuse it again.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from services.notify.channel import SendResult
from services.notify.notification import Notification
from services.settings import WebhookChannelSettings

SIGNATURE_HEADER = "X-Fusionwatch-Signature"
TIMESTAMP_HEADER = "X-Fusionwatch-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_STATUS = {408, 425, 429}


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, now: float | None = None,
           tolerance_s: float = 300.0) -> bool:
    """What a receiver does (Python): signature matches, and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


class WebhookChannel:
    kind = "webhook"

    def __init__(self, name: str, settings: WebhookChannelSettings):
        self.name, self.settings = name, settings
        self._secret = settings.secret.get_secret_value().encode()
        extra = {k: v.get_secret_value() for k, v in settings.headers.items()}
        # no redirects: a signed alert must not be forwarded to wherever a 30x points
        self._client = httpx.Client(timeout=settings.timeout_s, follow_redirects=False,
                                    headers=extra | {"User-Agent": "fusionwatch-notify/1"})

    def send(self, notification: Notification) -> SendResult:
        body = notification.body()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
                   SIGNATURE_HEADER: sign(self._secret, ts, body), IDEMPOTENCY_HEADER: notification.key}
        try:
            response = self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return SendResult(False, error=f"{type(e).__name__}: {e}"[:500])
        if 200 <= response.status_code < 300:
            return SendResult.delivered()
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUS
        return SendResult(False, retryable=retryable, retry_after_s=_retry_after(response),
                          error=f"HTTP {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        self._client.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
