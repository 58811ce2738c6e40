"""The per-(app, device) offer budget of the cloud, as a pure token bucket."""

from __future__ import annotations

import re

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


def test_limit_and_permission_settings_are_validated_by_field() -> None:
    from xp2p.cloud.config import AppConfig, CloudConfig, ConfigError

    app = {"key": "a", "secret": "a-secret-0123456789"}
    doc = {
        "apps": [{**app, "permissions": ["live", "playback"]}],
        "request_rate": 5,
        "request_burst": 10,
        "nonce_quota": 1000,
        "clock_skew": 10,
        "auth_failure_limit": 3,
        "auth_failure_window": 30,
        "stun_rate": 1.5,
        "stun_burst": 3,
        "header_timeout": 2,
        "keepalive_timeout": 4.5,
        "max_connections_per_source": 8,
    }
    config = CloudConfig.from_dict(doc)
    assert config.apps[0].permissions == ("live", "playback")
    assert (config.request_rate, config.keepalive_timeout, config.stun_burst) == (5.0, 4.5, 3)
    assert CloudConfig.from_dict({"apps": [app]}).apps[0].permissions == (
        "command",
        "download",
        "live",
        "playback",
        "voice",
    )
    bad: list[tuple[dict[str, object], str]] = [
        ({"apps": [{**app, "permissions": ["live", "root"]}]}, "apps[0].permissions[1]"),
        ({"apps": [{**app, "permissions": []}]}, "apps[0].permissions"),
        ({"apps": [{**app, "permissions": "live"}]}, "apps[0].permissions"),
        ({"request_rate": 0}, "request_rate"),
        ({"request_burst": True}, "request_burst"),
        ({"clock_skew": 301}, "clock_skew"),
        ({"nonce_quota": 0}, "nonce_quota"),
        ({"auth_failure_limit": 0}, "auth_failure_limit"),
        ({"header_timeout": "10"}, "header_timeout"),
        ({"max_connections_per_source": 0}, "max_connections_per_source"),
        ({"stun_rate": -1}, "stun_rate"),
    ]
    for extra, field in bad:
        with pytest.raises(ConfigError, match=rf"^{re.escape(field)}:"):
            CloudConfig.from_dict({"apps": [app], **extra})
    with pytest.raises(ConfigError, match=r"^apps\[0\]\.permissions\[0\]:"):
        CloudConfig(apps=(AppConfig("a", "a-secret-0123456789", permissions=("all",)),))
