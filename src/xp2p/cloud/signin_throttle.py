"""Throttling of failed device sign-ins, per source address and per identity (sans-IO).

Without it one source could test 333 guessed proofs a second against a device's secret
(issue 10 item 15). Each key (a source address, or a product/device identity) gets a few
free failures; after those, every further failure doubles a refusal period
(``base_delay`` .. ``max_delay``) during which sign-ins are refused with ``auth_throttled``
before any proof is checked. Failures are forgotten ``forget_after`` seconds after the last.

The identity throttle stops guessing one device's secret from many addresses, but it would
also let an attacker lock the real device out. So a source that signed in successfully as an
identity (the camera's usual address) is exempt from that identity's throttle (never from its
own source throttle): an attacker elsewhere cannot lock it out, and a camera that moved waits
out at most ``max_delay``. Memory is bounded: at most ``max_entries`` keys of each kind, the
least recently touched dropped first (a dropped key only loses its count: it fails open to a
few more guesses, never to a lock-out).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottleConfig:
    #: Failures a source may make before it is refused for a while.
    source_free_failures: int = 5
    #: Failures against one identity (from all sources) before unknown sources are refused.
    identity_free_failures: int = 10
    base_delay: float = 1.0
    max_delay: float = 300.0
    forget_after: float = 3600.0
    max_entries: int = 10_000
    #: Sources remembered per identity as having signed in.
    known_sources: int = 4

    def __post_init__(self) -> None:
        for name in ("source_free_failures", "identity_free_failures", "max_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError("base_delay must be positive and at most max_delay")


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class _Counter:
    def __init__(self, free: int, config: ThrottleConfig) -> None:
        self._free = free
        self._config = config
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def _get(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self._config.forget_after:
            del self._records[key]
            return None
        return record

    def retry_after(self, key: str, now: float) -> float:
        record = self._get(key, now)
        return max(0.0, record.blocked_until - now) if record is not None else 0.0

    def failed(self, key: str, now: float) -> None:
        record = self._get(key, now) or _Record()
        record.failures += 1
        record.last = now
        excess = record.failures - self._free
        if excess > 0:
            cfg = self._config
            delay = min(cfg.max_delay, cfg.base_delay * 2.0 ** min(excess - 1, 30))
            record.blocked_until = max(record.blocked_until, now + delay)
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self._config.max_entries:
            self._records.popitem(last=False)

    def failures(self, key: str, now: float) -> int:
        record = self._get(key, now)
        return record.failures if record is not None else 0


class SignInThrottle:
    """``retry_after`` before checking a proof; ``failed`` / ``succeeded`` after."""

    def __init__(self, config: ThrottleConfig | None = None) -> None:
        self.config = config or ThrottleConfig()
        self._sources = _Counter(self.config.source_free_failures, self.config)
        self._identities = _Counter(self.config.identity_free_failures, self.config)
        self._known: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: sign-ins refused by the throttle so far (for status and tests)
        self.refused = 0

    @staticmethod
    def identity_key(product_id: str, device_name: str) -> str:
        return f"{product_id}/{device_name}"

    def retry_after(self, identity: str, source: str, now: float) -> float:
        """Seconds until this source may try this identity again; 0 = go ahead."""
        wait = self._sources.retry_after(source, now)
        if source not in self._known.get(identity, ()):
            wait = max(wait, self._identities.retry_after(identity, now))
        if wait > 0:
            self.refused += 1
        return wait

    def failed(self, identity: str, source: str, now: float) -> None:
        self._sources.failed(source, now)
        self._identities.failed(identity, now)

    def succeeded(self, identity: str, source: str) -> None:
        # The counters are not reset: a holder of one device's secret must not be able to
        # clear its address's record between guesses at another device's.
        known = tuple(s for s in self._known.get(identity, ()) if s != source)
        self._known[identity] = (source, *known)[: self.config.known_sources]
        self._known.move_to_end(identity)
        while len(self._known) > self.config.max_entries:
            self._known.popitem(last=False)

    def failures(self, identity: str, source: str, now: float) -> tuple[int, int]:
        """(failures of the identity, failures of the source) still remembered."""
        return self._identities.failures(identity, now), self._sources.failures(source, now)
