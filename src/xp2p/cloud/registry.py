"""Device presence: who is signed in, under which session, and their last xp2pInfo.

:class:`DeviceRegistry` is the interface the cloud talks to; :class:`MemoryRegistry` is the
embedded default. A Redis implementation for several cloud nodes fits the same interface:
every method is async and takes the session id, so updates from a replaced (stale) session can
be refused atomically with a compare-and-set on the stored session id.

A sign-in that replaces a session still online is counted: ``DUPLICATE_THRESHOLD`` of them
within ``DUPLICATE_WINDOW`` seconds flag the identity as used by more than one agent
(``duplicate_identity``, shown in p2p-info), which a lone reconnect after a network change
never does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

#: Replacements of a live session within ``DUPLICATE_WINDOW`` s that flag a duplicate identity.
DUPLICATE_THRESHOLD = 3
DUPLICATE_WINDOW = 60


@dataclass(frozen=True)
class DevicePresence:
    product_id: str
    device_name: str
    online: bool
    session_id: str | None = None
    xp2p_info: str | None = None
    #: Unix seconds of the last xp2pInfo report (DescribeP2PInfo's ReportTime).
    report_time: int | None = None
    signed_in_at: int | None = None
    #: Sign-ins that replaced a session still online, in all.
    session_replacements: int = 0
    #: Unix seconds of the recent ones (at most ``DUPLICATE_THRESHOLD``).
    recent_replacements: tuple[int, ...] = ()
    #: Two agents seem to share this identity (they keep replacing each other).
    duplicate_identity: bool = False


class DeviceRegistry(Protocol):
    async def sign_in(
        self, product_id: str, device_name: str, session_id: str, now: int
    ) -> DevicePresence:
        """Mark the device online under ``session_id``, replacing any earlier session; the
        new presence (with the duplicate-identity count updated)."""

    async def sign_out(self, product_id: str, device_name: str, session_id: str, now: int) -> bool:
        """Mark the device offline if ``session_id`` is still its session.

        Returns False when a newer session has taken over, which must stay online.
        The last xp2pInfo is kept.
        """

    async def report_xp2p_info(
        self, product_id: str, device_name: str, session_id: str, xp2p_info: str, now: int
    ) -> bool:
        """Store xp2pInfo if ``session_id`` is still the device's session."""

    async def get(self, product_id: str, device_name: str) -> DevicePresence | None:
        """Presence of a device that has signed in at least once, else None."""


class MemoryRegistry:
    """In-process registry for one cloud node."""

    def __init__(self) -> None:
        self._devices: dict[tuple[str, str], DevicePresence] = {}

    async def sign_in(
        self, product_id: str, device_name: str, session_id: str, now: int
    ) -> DevicePresence:
        key = (product_id, device_name)
        old = self._devices.get(key) or DevicePresence(product_id, device_name, online=False)
        recent = tuple(t for t in old.recent_replacements if now - t < DUPLICATE_WINDOW)
        total = old.session_replacements
        if old.online:
            recent = (*recent, now)[-DUPLICATE_THRESHOLD:]
            total += 1
        new = replace(
            old,
            online=True,
            session_id=session_id,
            signed_in_at=now,
            session_replacements=total,
            recent_replacements=recent,
            duplicate_identity=len(recent) >= DUPLICATE_THRESHOLD,
        )
        self._devices[key] = new
        return new

    def _update(self, key: tuple[str, str], expected_session: str, /, **changes: Any) -> bool:
        # Compare-and-set on the session id: a replaced session's late updates are dropped.
        old = self._devices.get(key)
        if old is None or old.session_id != expected_session:
            return False
        self._devices[key] = replace(old, **changes)
        return True

    async def sign_out(self, product_id: str, device_name: str, session_id: str, now: int) -> bool:
        return self._update((product_id, device_name), session_id, online=False, session_id=None)

    async def report_xp2p_info(
        self, product_id: str, device_name: str, session_id: str, xp2p_info: str, now: int
    ) -> bool:
        key = (product_id, device_name)
        return self._update(key, session_id, xp2p_info=xp2p_info, report_time=now)

    async def get(self, product_id: str, device_name: str) -> DevicePresence | None:
        return self._devices.get((product_id, device_name))
