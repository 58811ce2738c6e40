"""Signalling hub: routes a viewer's offer to its signed-in device and the answer back.

The hub knows devices only as :class:`DeviceLink` objects (anything that can send a JSON
message and be closed), so it does not depend on aiohttp and a multi-node version can route
through Redis pub/sub behind the same methods.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger("xp2p.cloud")

#: Offers waiting for one device's answer; more are refused (a slow or hostile device must
#: not make the cloud hold unbounded state).
MAX_PENDING_PER_DEVICE = 64
#: Answered offers remembered for their ``link_up`` report: links come up within the connect
#: timeout, so a few seconds of offers at the fastest rate the cloud admits is plenty.
MAX_ANSWERED = 4096


class DeviceLink(Protocol):
    @property
    def product_id(self) -> str: ...
    @property
    def device_name(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    async def send(self, message: dict[str, Any]) -> None: ...
    async def close(self, reason: str) -> None: ...


class RelayError(Exception):
    """An offer could not be answered; ``code`` is the cloud's JSON error code."""

    status = 502
    code = "relay_failed"


class DeviceOffline(RelayError):
    status, code = 404, "device_offline"


class DeviceTimeout(RelayError):
    status, code = 504, "device_timeout"


class DeviceBusy(RelayError):
    status, code = 503, "device_busy"


class DeviceRefused(RelayError):
    status, code = 502, "device_refused"

    def __init__(self, device_code: int, reason: str) -> None:
        super().__init__(f"device refused the connection: {reason} ({device_code})")
        self.device_code = device_code
        self.reason = reason


@dataclass
class _Pending:
    link: DeviceLink
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SignallingHub:
    def __init__(self, *, max_pending_per_device: int = MAX_PENDING_PER_DEVICE) -> None:
        self._links: dict[tuple[str, str], DeviceLink] = {}
        self._pending: dict[str, _Pending] = {}
        self._max_pending = max_pending_per_device
        #: answered offers whose link may still report its path (``link_up``), oldest first:
        #: a device can only report on offers it was sent, each once
        self._answered: OrderedDict[str, DeviceLink] = OrderedDict()

    @property
    def online(self) -> int:
        """Devices signed in to this node."""
        return len(self._links)

    def attach(self, link: DeviceLink) -> DeviceLink | None:
        """Make ``link`` the device's current link; returns the one it replaces, if any."""
        key = (link.product_id, link.device_name)
        old = self._links.get(key)
        self._links[key] = link
        return old if old is not link else None

    def link(self, product_id: str, device_name: str) -> DeviceLink | None:
        """The device's current session on this node, if it is signed in here."""
        return self._links.get((product_id, device_name))

    def detach(self, link: DeviceLink) -> bool:
        """Forget ``link``; offers waiting on it fail at once. True if it was current."""
        for request_id, pending in list(self._pending.items()):
            if pending.link is link and not pending.future.done():
                pending.future.set_exception(DeviceOffline("device went offline"))
                del self._pending[request_id]
        key = (link.product_id, link.device_name)
        if self._links.get(key) is link:
            del self._links[key]
            return True
        return False

    async def relay_offer(
        self,
        product_id: str,
        device_name: str,
        app_key: str,
        offer: dict[str, Any],
        answer_within: float,
        ice_servers: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Send ``offer`` to the device and wait for its answer; raises :class:`RelayError`.

        ``ice_servers`` travel with the offer: TURN credentials minted now, so a device signed
        in for longer than their lifetime still gets a working relay."""
        link = self._links.get((product_id, device_name))
        if link is None:
            raise DeviceOffline("device is offline")
        if sum(1 for p in self._pending.values() if p.link is link) >= self._max_pending:
            raise DeviceBusy("too many connection requests waiting for this device")
        request_id = secrets.token_hex(8)
        pending = _Pending(link)
        self._pending[request_id] = pending
        try:
            frame: dict[str, Any] = {
                "type": "offer",
                "request_id": request_id,
                "app_key": app_key,
                "offer": offer,
            }
            if ice_servers is not None:
                frame["ice_servers"] = ice_servers
            await link.send(frame)
            async with asyncio.timeout(answer_within):
                return await pending.future
        except TimeoutError:
            raise DeviceTimeout(f"device did not answer within {answer_within:g} s") from None
        except (ConnectionError, RuntimeError):
            # The socket closed between the lookup and the send.
            raise DeviceOffline("device went offline") from None
        finally:
            self._pending.pop(request_id, None)

    def _settle(self, link: DeviceLink, request_id: str) -> asyncio.Future[dict[str, Any]] | None:
        pending = self._pending.get(request_id)
        # Only the link an offer went to may answer it: one device cannot answer for another.
        if pending is None or pending.link is not link or pending.future.done():
            return None
        return pending.future

    def answer(self, link: DeviceLink, request_id: str, answer: dict[str, Any]) -> bool:
        future = self._settle(link, request_id)
        if future is None:
            return False
        future.set_result(answer)
        self._answered[request_id] = link
        while len(self._answered) > MAX_ANSWERED:
            self._answered.popitem(last=False)
        return True

    def link_up(self, link: DeviceLink, request_id: str) -> bool:
        """Whether ``link``'s device may report the link of offer ``request_id`` (once)."""
        if self._answered.get(request_id) is not link:
            return False
        del self._answered[request_id]
        return True

    def refuse(self, link: DeviceLink, request_id: str, code: int, reason: str) -> bool:
        future = self._settle(link, request_id)
        if future is None:
            return False
        future.set_exception(DeviceRefused(code, reason))
        return True
