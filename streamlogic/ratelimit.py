"""Per-asset, per-stream rate limit: one flooding device must not starve the others (token bucket,
one per asset and input topic).

The bucket refills by the records' *event time*, not by when the monitor reads them: a backlog
(catching up after an outage, a restart or a rebalance) arrives far faster than real time but
at the plant's own rate per event-second, and must not be dead-lettered. A record's clock is
capped at the wall clock, so a device that stamps records ahead of real time to escape the limit
is held to the real-time rate; one that repeats a timestamp (the usual flood) gets no refill.
One bucket per topic, because a backlog is read topic by topic: the consumer may return minutes of
an asset's audio before its frames, and the frames' earlier event times must still refill.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class AssetRateLimiter:
    def __init__(self, rate_per_s: float, burst_s: float = 5.0, max_assets: int = 10_000):
        self.rate, self.capacity, self.max_assets = rate_per_s, rate_per_s * burst_s, max_assets
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, latest clock)

    def allow(self, key: Hashable, event_time: float, now: float) -> bool:
        """`key`: the asset (and stream) the record counts against."""
        if self.rate <= 0:
            return True
        clock = min(event_time, now)
        tokens, last = self._buckets.pop(key, (self.capacity, clock))
        if clock > last:
            tokens, last = min(self.capacity, tokens + (clock - last) * self.rate), clock
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, last)
        if len(self._buckets) > self.max_assets:  # bounded memory even under a flood of new keys
            self._buckets.popitem(last=False)
        return ok
