"""Network inputs that survive: reconnection with capped exponential backoff, errors sorted into
those a retry can cure and those it cannot, and a live stream's records kept on the wall clock.

A camera that reboots, a switch that flaps, an encoder that restarts: each ends the stream or
refuses connections for a while. A live input (RTSP, RTMP, SRT, UDP/RTP, TCP, or an HTTP stream
without a length) therefore treats the end of its stream as an error and connects again, waiting
0.5 s, 1 s, 2 s, … up to `max_delay_s` (each ±25 % so that many gateways do not reconnect in
step), for as long as `retry_for_s` allows without media. What no retry fixes — a scheme FFmpeg
cannot open, credentials refused, no stream at the path — ends the run at once with one sentence.

A restarted stream starts its timestamps again (an encoder's PTS, an RTP clock), so media time
cannot carry over a reconnect. Each connection is anchored to the wall clock at the moment it
opened (the first packet of a live stream was captured then, give or take the network), never
earlier than the last record sent: the outage shows downstream as windows without frames or
audio, not as records stamped back in time. Within a connection the stream's own clock keeps
the spacing, and its drift against this host's clock is corrected (`LiveClock`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from schemas.errors import ConfigError, DependencyUnavailable
from services.ingest.common import source_uri

log = logging.getLogger(__name__)

# schemes whose input is live whatever the container says; http(s) is live when it has no length
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp"})
NETWORK_SCHEMES = LIVE_SCHEMES | {"http", "https"}


@dataclass(frozen=True)
class RetryPolicy:
    retry_for_s: float = 300.0  # give up after this long without media; 0 = never
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.25  # each wait is drawn from ±25 % around the nominal one

    def __post_init__(self) -> None:
        if self.retry_for_s < 0:
            raise ConfigError("--retry-for must be 0 (never give up) or a number of seconds")


@dataclass
class Backoff:
    """Waits between connection attempts; starts over once media flowed again. With an asset and
    a source, the state is exported (fusionwatch_ingest_connected, _reconnect_attempts_total)."""

    policy: RetryPolicy
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0  # failed attempts since media last flowed
    down_since: float | None = None  # monotonic time of the first failure of this run of them
    asset: str | None = None
    source: str | None = None

    def media_flowed(self) -> None:
        self.attempts, self.down_since = 0, None
        self._export(connected=True)

    def _export(self, connected: bool, reconnecting: bool = False) -> None:
        if self.asset is not None and self.source is not None:
            from services.observability import metrics

            metrics.ingest_state(self.asset, input_label(self.source), connected, reconnecting)

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or None when the retry budget is spent."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        self.attempts += 1
        self._export(connected=False, reconnecting=True)
        nominal = min(self.policy.max_delay_s, self.policy.first_delay_s * 2 ** (self.attempts - 1))
        delay = nominal * self.rng.uniform(1 - self.policy.jitter, 1 + self.policy.jitter)
        budget = self.policy.retry_for_s
        if budget and now - self.down_since + delay > budget:
            left = budget - (now - self.down_since)
            return left if left > 0.05 else None  # one last attempt at the deadline
        return delay

    def offline_s(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since


class LiveClock:
    """Event times of a live stream: wall clock at each connection, the stream's clock within it.

    The stream's timestamps keep frames and audio spaced as captured; the anchor moves only to
    keep them honest against this host's clock: never ahead of it (a camera clock running fast),
    and, when even the promptest record of the last `resync_s` arrived more than `max_lag_s`
    after its stamp, forward by that lag (a camera clock running slow would otherwise drift
    behind until the monitor calls its records late)."""

    def __init__(self, resync_s: float = 60.0, max_lag_s: float = 1.0, now=time.time):
        self.resync_s, self.max_lag_s, self.now = resync_s, max_lag_s, now
        self.opened_at = 0.0
        self.origin: float | None = None
        self.last = float("-inf")  # latest event time handed out, over every connection
        self._min_lag = float("inf")
        self._lag_since = 0.0

    def connected(self, opened_at: float) -> None:
        self.opened_at, self.origin = opened_at, None

    def origin_for(self, rel: float) -> float:
        """The wall-clock time of media time zero of this connection, for a record at `rel`."""
        now = self.now()
        if self.origin is None:
            self.origin = max(self.opened_at, self.last + 1e-3) - max(rel, 0.0)
            self._min_lag, self._lag_since = float("inf"), now
        if self.origin + rel > now:
            self.origin = now - rel
        self._min_lag = min(self._min_lag, now - (self.origin + rel))
        if now - self._lag_since >= self.resync_s:
            if self._min_lag > self.max_lag_s:
                log.info("live stream clock fell %.1f s behind this host's: re-anchored", self._min_lag)
                self.origin += self._min_lag
            self._min_lag, self._lag_since = float("inf"), now
        self.last = max(self.last, self.origin + rel)
        return self.origin


@dataclass(frozen=True)
class Failure:
    permanent: bool
    reason: str  # what happened, as a clause: "connection refused", "no answer within 10 s"


def classify(e: Exception, src: str, elapsed_s: float, timeout_s: float) -> Failure:
    """What an FFmpeg error from opening or reading a network input means, and whether to retry."""
    import av.error as ave

    where = source_uri("video", src)
    if isinstance(e, ave.ProtocolNotFoundError):
        scheme = urlsplit(src).scheme
        return Failure(True, f"{where}: FFmpeg cannot open '{scheme}://' addresses; check the URL "
                             f"({', '.join(s + '://' for s in sorted(NETWORK_SCHEMES))} work)")
    if isinstance(e, (ave.HTTPUnauthorizedError, ave.HTTPForbiddenError)):
        code = 401 if isinstance(e, ave.HTTPUnauthorizedError) else 403
        return Failure(True, f"{where} refused the credentials ({code}); check the user name and password in the "
                             "URL (user:password@host) and that this user may view the stream")
    if isinstance(e, ave.HTTPNotFoundError):
        return Failure(True, f"{where} has no stream at that path (404); check the path in the camera's or "
                             "encoder's settings (e.g. /stream1, /Streaming/Channels/101)")
    if isinstance(e, ave.HTTPClientError):
        return Failure(True, f"{where} rejected the request ({_text(e)}); check the URL and its parameters")
    if isinstance(e, ave.ConnectionRefusedError):
        port = urlsplit(src).port
        return Failure(False, f"connection refused (nothing listens on {'port ' + str(port) if port else 'that port'})")
    if isinstance(e, (ave.ExitError, ave.TimeoutError)) or (
            isinstance(e, ave.InvalidDataError) and elapsed_s >= 0.9 * timeout_s):
        # PyAV's timeout interrupts FFmpeg (ExitError); the RTSP demuxer reports it as invalid data
        return Failure(False, f"no answer within {timeout_s:.0f} s")
    if isinstance(e, ave.HTTPServerError):
        return Failure(False, "the server answered with an error (5xx)")
    if isinstance(e, ave.InvalidDataError):
        return Failure(False, "the server answered, but not with a stream FFmpeg can read")
    return Failure(False, _text(e))


def input_label(src: str) -> str:
    """scheme://host[:port] of a network input: a metric label without its path or credentials."""
    parts = urlsplit(src)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}"


def _text(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e)).strip()


def connect(src: str, open_once, timeout_s: float, backoff: Backoff, stop: threading.Event):
    """`open_once()` until it succeeds; None when stopped. Raises ConfigError for a failure no
    retry fixes and DependencyUnavailable when the retry budget is spent."""
    import av

    where = source_uri("video", src)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            return open_once()
        except av.FFmpegError as e:
            failure = classify(e, src, time.monotonic() - t0, timeout_s)
        if failure.permanent:
            raise ConfigError(failure.reason)
        if not retry_after(where, failure.reason, backoff, stop):
            return None
    return None


def retry_after(where: str, reason: str, backoff: Backoff, stop: threading.Event) -> bool:
    """Wait before the next attempt (False when stopped); DependencyUnavailable when out of budget."""
    delay = backoff.next_delay()
    if delay is None:
        host = urlsplit(where).hostname or where
        raise DependencyUnavailable(
            f"gave up on {where} after {backoff.offline_s():.0f} s without media ({backoff.attempts} attempts; last: "
            f"{reason}); check that the device at {host} is powered and reachable from this host (address, port, "
            f"firewall) and that it streams at that path, then start again")
    log.warning("%s: %s; connecting again in %.1f s (attempt %d, offline %.0f s)", where, reason, delay,
                backoff.attempts, backoff.offline_s())
    return not stop.wait(delay)
