"""Token buckets by key: how often an app may ask one device for a link (per (app, device)),
and how often the STUN responder answers one source IP.

Every offer costs the device an ICE agent, STUN and TURN allocations and a QUIC handshake, so
an app that loops on ``connect`` (a bug, or stolen credentials) could keep a camera busy for
every other viewer. Sans-IO: the caller passes the clock. The table is bounded
(``max_buckets``): full buckets are forgotten first, then the least recently used, so keys an
attacker invents (spoofed UDP sources) cannot grow memory.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Past this many buckets, full ones (idle long enough to refill) are forgotten.
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``burst`` requests at once, then ``rate`` per second, for each key."""

    def __init__(self, rate: float, burst: int, *, max_buckets: int = MAX_BUCKETS) -> None:
        if rate <= 0 or burst < 1 or max_buckets < 1:
            raise ValueError("rate and max_buckets must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._max = max_buckets
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    def take(self, key: tuple[str, ...], now: float) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one will be there."""
        bucket = self._buckets.pop(key, None)  # re-inserted below: the dict is LRU-ordered
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._forget_full(now)
            while len(self._buckets) >= self._max:
                # A flood of fresh keys: drop the least recently used. Forgetting a bucket
                # only grants that key one more burst.
                del self._buckets[next(iter(self._buckets))]
            bucket = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < refill}
