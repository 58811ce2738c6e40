"""Which offers a device takes, and when a link it took must close (docs/protocol.md §12).

Every link costs the camera (an ICE agent, TURN allocations, a QUIC connection), so one
authorised app must not be able to keep it "busy" for every other app. The rules, sans-IO
(no clock, no links: the agent passes the time in and acts on the answers):

* **Device bounds.** At most ``max_pending_links`` links being set up and ``max_links`` links
  in all (pending or open), whoever asks.
* **An app's share.** One app (by the app key the cloud relays with the offer) may hold at
  most ``app_link_share`` of each: ``max(1, floor(max_links * share))`` links and
  ``max(1, floor(max_pending_links * share))`` of them being set up. With the default 0.5 an
  app that opens all it can still leaves half the device to the others; 1.0 turns the rule
  off (a camera only one app ever talks to).
* **A grant's links.** One access grant opens at most ``max_links_per_grant`` links: a grant
  copied out of an app cannot be fanned out into a crowd.
* **Idle links close.** A link that served no request for ``link_idle_timeout`` seconds,
  and has none running now (a live pull, a playback, a download or a talk-back session in
  progress is not idle), is closed.
* **Grants end links.** A link closes when the grant it was opened with expires, unless a
  newer valid grant of the same app for this device was presented on it (``POST /grant``).

``Refused`` carries the status code and reason the viewer gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_links: int
    max_pending_links: int
    app_link_share: float = 0.5
    max_links_per_grant: int = 4

    def __post_init__(self) -> None:
        if self.max_links < 1:
            raise ValueError("max_links must be 1 or more")
        if self.max_pending_links < 1:
            raise ValueError("max_pending_links must be 1 or more")
        if not (0.0 < self.app_link_share <= 1.0) or math.isnan(self.app_link_share):
            raise ValueError("app_link_share must be in (0, 1]")
        if self.max_links_per_grant < 1:
            raise ValueError("max_links_per_grant must be 1 or more")

    @property
    def links_per_app(self) -> int:
        return max(1, math.floor(self.max_links * self.app_link_share))

    @property
    def pending_per_app(self) -> int:
        return max(1, math.floor(self.max_pending_links * self.app_link_share))


class Refused(Exception):
    """An offer the device does not take: ``code`` and ``reason`` reach the viewer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False)
class Slot:
    """One link's place on the device, from its offer until it closes."""

    app_key: str
    grant_id: str
    pending: bool = True


@dataclass
class LinkAdmission:
    """The slots of one device."""

    limits: AdmissionLimits
    _slots: set[Slot] = field(default_factory=set)

    @property
    def pending(self) -> int:
        return sum(1 for s in self._slots if s.pending)

    @property
    def total(self) -> int:
        return len(self._slots)

    def held_by(self, app_key: str) -> tuple[int, int]:
        """(links, of which pending) the app holds."""
        mine = [s for s in self._slots if s.app_key == app_key]
        return len(mine), sum(1 for s in mine if s.pending)

    def admit(self, app_key: str, grant_id: str) -> Slot:
        """A pending slot for a new offer; raises Refused when a rule says no."""
        limits = self.limits
        links, pending = self.held_by(app_key)
        grant_links = sum(1 for s in self._slots if s.grant_id == grant_id)
        if grant_links >= limits.max_links_per_grant:
            raise Refused(
                403,
                f"access grant refused: it already opened {limits.max_links_per_grant} links",
            )
        if self.pending >= limits.max_pending_links:
            raise Refused(503, "busy: too many connections being set up; retry shortly")
        if self.total >= limits.max_links:
            raise Refused(503, f"busy: {limits.max_links} links already open")
        if pending >= limits.pending_per_app:
            raise Refused(
                503,
                f"busy: this app has {pending} connections being set up "
                f"(its share is {limits.pending_per_app}); retry shortly",
            )
        if links >= limits.links_per_app:
            raise Refused(
                503, f"busy: this app holds {links} links, its share of the device's links"
            )
        slot = Slot(app_key, grant_id)
        self._slots.add(slot)
        return slot

    def opened(self, slot: Slot) -> None:
        slot.pending = False

    def release(self, slot: Slot) -> None:
        self._slots.discard(slot)


@dataclass
class LinkWatch:
    """When one open link must close: idle, or its grant expired (sans-IO)."""

    idle_timeout: float
    #: unix seconds the link's newest grant expires at
    grant_expires_at: float
    #: monotonic time of the last request's start or end
    last_activity: float
    active: int = 0  #: requests being served now

    def request_started(self, now: float) -> None:
        self.active += 1
        self.last_activity = now

    def request_ended(self, now: float) -> None:
        self.active = max(0, self.active - 1)
        self.last_activity = now

    def renew(self, expires_at: float) -> bool:
        """A newer grant extends the link; an older or equal one changes nothing."""
        if expires_at <= self.grant_expires_at:
            return False
        self.grant_expires_at = expires_at
        return True

    def due(self, now: float, wall: float) -> tuple[str | None, float]:
        """(why the link must close now, or None; seconds until the next look)."""
        expires_in = self.grant_expires_at - wall
        if expires_in <= 0:
            return "access grant expired", 0.0
        if self.active:
            return None, expires_in
        idle_in = self.last_activity + self.idle_timeout - now
        if idle_in <= 0:
            return f"idle for {self.idle_timeout:g} s", 0.0
        return None, min(expires_in, idle_in)
