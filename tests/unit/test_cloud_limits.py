"""The per-(app, device) offer budget of the cloud, as a pure token bucket."""

from __future__ import annotations

import pytest

from xp2p.cloud.limits import MAX_BUCKETS, RateLimiter


def test_a_burst_passes_then_requests_wait_for_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    key = ("app", "P/dev")
    assert [limiter.take(key, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(key, 100.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.take(key, 100.25) == pytest.approx(0.25)
    assert limiter.take(key, 100.5) == 0.0
    assert limiter.take(key, 100.5) == pytest.approx(0.5)


def test_keys_have_their_own_budgets() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.take(("a", "P/d1"), 0.0) == 0.0
    assert limiter.take(("a", "P/d1"), 0.0) > 0
    assert limiter.take(("a", "P/d2"), 0.0) == 0.0  # another device
    assert limiter.take(("b", "P/d1"), 0.0) == 0.0  # another app


def test_an_idle_bucket_refills_only_up_to_the_burst() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    key = ("a", "P/d")
    limiter.take(key, 0.0)
    assert [limiter.take(key, 3600.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take(key, 3600.0) > 0


def test_a_clock_that_goes_back_grants_nothing_extra() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.take(("a",), 10.0) == 0.0
    assert limiter.take(("a",), 5.0) > 0


def test_memory_stays_bounded_by_forgetting_refilled_buckets() -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    for n in range(MAX_BUCKETS):
        limiter.take((f"app{n}",), 0.0)
    assert len(limiter) == MAX_BUCKETS
    limiter.take(("late",), 1.0)  # 1 s later every old bucket is full again: forgotten
    assert len(limiter) == 1


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


def test_a_flood_of_fresh_keys_cannot_grow_the_table() -> None:
    # Spoofed STUN sources: every key new, none refilled yet, so none can be forgotten as full.
    limiter = RateLimiter(rate=1.0, burst=5, max_buckets=100)
    for n in range(1000):
        limiter.take((f"198.51.{n // 256}.{n % 256}",), 0.0)
    assert len(limiter) == 100
    # The least recently used go first: a source still sending keeps its bucket.
    busy = ("203.0.113.1",)
    for _ in range(5):
        limiter.take(busy, 0.0)
    for n in range(99):
        limiter.take((f"192.0.2.{n}",), 0.0)
    assert limiter.take(busy, 0.0) > 0  # still empty: not forgotten and refilled
