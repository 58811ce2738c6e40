"""A room whose source is a camera: the edge pulls its live stream over its own 1v1 link.

The source of the 1v1→1vN switch (docs/protocol.md §12): a viewer that finds a camera at its
``max_viewers`` joins the room of ``xp2p-device://PID/DEV?quality=Q``
(`xp2p.swarm.device_url`), and the edge pulls that camera once, as the app that made the
room, and cuts the stream into the swarm's chunks like any FLV source.

Who may: every app that joins (not only the room's maker) must be one the cloud would grant
``live`` on that device (`authorise`: the app's products and permissions, the device in the
registry), so a room never lets an app read a camera its own grants would not allow. The
edge's grant is minted here with the cloud's grant key, for the room's maker, with ``live``
and ``relay``; ``relay`` (never granted to an app, `xp2p.auth.RELAY`) gives the link the one
slot the device keeps beyond ``max_viewers``. The grant is renewed on the link (``POST
/grant``) before it expires, as `P2PModule` does.

Device sources need the cloud's signalling hub: they exist only for the edge inside
``xp2p cloud``; a standalone ``xp2p edge`` refuses them ("source refused").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from xp2p.auth import RELAY, AccessGrant, GrantSigner
from xp2p.cloud.accounts import Accounts
from xp2p.cloud.config import CloudConfig
from xp2p.cloud.hub import RelayError, SignallingHub
from xp2p.cloud.registry import DeviceRegistry
from xp2p.errors import XP2PError
from xp2p.link import Link, LinkConfig, LinkError, Xp2pInfo, open_link
from xp2p.link.config import parse_ice_servers
from xp2p.swarm.device_url import DeviceUrl

from .source import SourceError, SourceStalled

logger = logging.getLogger("xp2p.edge")

#: A grant is renewed on the link this long before it expires (at most half its life).
GRANT_RENEW_MARGIN = 60.0


class DeviceSource(Protocol):
    """What a room with a device URL needs from the cloud."""

    def authorise(self, app_key: str, url: DeviceUrl) -> None:
        """Return if ``app_key`` may watch this camera live; SourceError(refused) if not."""

    def pull(
        self, app_key: str, url: DeviceUrl, *, connect_timeout: float, stall_timeout: float
    ) -> AsyncIterator[bytes]:
        """The camera's live FLV, as `xp2p.cloud.edge.source.pull_flv` gives an http one."""


class CloudDeviceSource:
    """`DeviceSource` of the edge inside the cloud: its registry, hub and grant key."""

    def __init__(
        self,
        config: CloudConfig,
        accounts: Accounts,
        registry: DeviceRegistry,
        hub: SignallingHub,
        signer: GrantSigner,
        ice_servers: Callable[[str], list[dict[str, Any]]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._accounts = accounts
        self._registry = registry
        self._hub = hub
        self._signer = signer
        self._ice_servers = ice_servers
        self._clock = clock
        #: open links to cameras, by room URL (a test's and an operator's view)
        self.links: dict[str, Link] = {}

    def authorise(self, app_key: str, url: DeviceUrl) -> None:
        app = self._accounts.app(app_key)
        pid, dev = url.product_id, url.device_name
        if app is None or not app.allows(pid) or "live" not in app.permissions:
            raise SourceError(f"app {app_key} may not watch {pid} live", refused=True)
        if self._accounts.device(pid, dev) is None:
            raise SourceError(f"no device {pid}/{dev}", refused=True)

    def _grant(self, app_key: str, url: DeviceUrl) -> tuple[str, int]:
        now = int(self._clock())
        expires = now + self._config.grant_ttl
        grant = AccessGrant(
            app_key, url.product_id, url.device_name, frozenset({"live", RELAY}), now, expires
        )
        logger.info(
            "grant %s for the edge (app %s) on %s/%s: live,relay",
            grant.grant_id, app_key, url.product_id, url.device_name,
        )  # fmt: skip
        return self._signer.sign(grant), expires

    async def _open(self, app_key: str, url: DeviceUrl, connect_timeout: float) -> Link:
        pid, dev = url.product_id, url.device_name
        presence = await self._registry.get(pid, dev)
        if presence is None or not presence.online or not presence.xp2p_info:
            raise SourceError(f"the camera {pid}/{dev} is offline")
        try:
            info = Xp2pInfo.parse(presence.xp2p_info)
        except XP2PError:
            raise SourceError(f"the camera {pid}/{dev} reported a malformed xp2pInfo") from None
        grant, _ = self._grant(app_key, url)

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            try:
                return await self._hub.relay_offer(
                    pid,
                    dev,
                    app_key,
                    offer,
                    answer_within=self._config.connect_timeout,
                    ice_servers=self._ice_servers(f"{pid}/{dev}"),
                )
            except RelayError as exc:
                raise SourceError(f"the camera did not answer the edge's offer: {exc}") from None

        config = LinkConfig(
            ice_servers=parse_ice_servers(self._ice_servers(f"edge/{pid}/{dev}")),
            connect_timeout=connect_timeout,
        )
        try:
            return await open_link(
                config, signal, fingerprint=info.fingerprint, grant=grant, peer_label=f"{pid}/{dev}"
            )
        except LinkError as exc:
            raise SourceError(f"cannot connect to the camera {pid}/{dev}: {exc}") from None

    async def _renew(self, link: Link, app_key: str, url: DeviceUrl, expires: float) -> None:
        while not link.closed:
            remaining = expires - self._clock()
            await asyncio.sleep(max(0.0, remaining - min(GRANT_RENEW_MARGIN, remaining / 2)))
            grant, expires = self._grant(app_key, url)
            try:
                response = await link.request("POST", "/grant", body=grant.encode("ascii"))
                await response.read(4096)
            except LinkError as exc:
                logger.warning("edge: cannot renew its grant on %s: %s", link.peer_label, exc)
                return
            if response.status != 200:
                status = response.status
                logger.warning("edge: %s refused a renewed grant (%d)", link.peer_label, status)
                return

    async def pull(
        self, app_key: str, url: DeviceUrl, *, connect_timeout: float, stall_timeout: float
    ) -> AsyncIterator[bytes]:
        self.authorise(app_key, url)  # the maker's rights may have changed since the join
        async with asyncio.timeout(connect_timeout + 1.0):
            link = await self._open(app_key, url, connect_timeout)
        key = str(url)
        self.links[key] = link
        renew = asyncio.create_task(
            self._renew(link, app_key, url, self._clock() + self._config.grant_ttl),
            name=f"edge-grant-{key}",
        )
        try:
            try:
                response = await link.request("GET", url.target, timeout=connect_timeout)
            except LinkError as exc:
                raise SourceError(f"the camera's live request failed: {exc}") from None
            if response.status != 200:
                response.cancel()
                raise SourceError(f"the camera answered HTTP {response.status}")
            chunks = aiter(response)
            while True:
                try:
                    async with asyncio.timeout(stall_timeout):
                        data = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    msg = f"no data from the camera for {stall_timeout:g} s"
                    raise SourceStalled(msg) from None
                except LinkError as exc:
                    raise SourceError(f"the link to the camera failed: {exc}") from None
                yield data
        finally:
            renew.cancel()
            if self.links.get(key) is link:
                del self.links[key]
            with contextlib.suppress(Exception):
                await link.close("the edge's room stopped")
