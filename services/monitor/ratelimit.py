"""Per-asset rate limit: one flooding device must not starve the others (token bucket)."""

from __future__ import annotations

from collections import OrderedDict


class AssetRateLimiter:
    def __init__(self, rate_per_s: float, burst_s: float = 5.0, max_assets: int = 10_000):
        self.rate, self.capacity, self.max_assets = rate_per_s, rate_per_s * burst_s, max_assets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # asset -> (tokens, last time)

    def allow(self, asset: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, last = self._buckets.pop(asset, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[asset] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > self.max_assets:  # bounded memory even under a flood of new keys
            self._buckets.popitem(last=False)
        return ok
