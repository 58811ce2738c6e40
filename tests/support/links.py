"""Test helpers (not tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from xp2p.link import (
    IncomingRequest,
    Link,
    LinkConfig,
    LinkIdentity,
    accept_link,
    open_link,
    parse_offer,
)
from xp2p.link.connect import PendingLink

GRANT = "grant-token"
LOOPBACK = LinkConfig(host_addresses=("127.0.0.1",), connect_timeout=5.0)


Handler = Callable[[IncomingRequest], Awaitable[None]]


async def no_handler(request: IncomingRequest) -> None:
    await request.respond(404, body=b"no route")


@dataclass
class Device:
    """The device half of a test: what ``signal`` saw and what it produced."""

    identity: LinkIdentity
    config: LinkConfig
    handler: Handler
    pending: list[PendingLink] = field(default_factory=list)
    offers: list[dict[str, Any]] = field(default_factory=list)

    async def signal(self, offer: dict[str, Any]) -> dict[str, Any]:
        self.offers.append(offer)
        remote, grant = parse_offer(offer)
        assert grant == GRANT
        pending = await accept_link(
            self.config, self.identity, remote, handler=self.handler, peer_label="viewer"
        )
        self.pending.append(pending)
        return pending.answer


@contextlib.asynccontextmanager
async def link_pair(
    handler: Handler = no_handler,
    viewer_config: LinkConfig = LOOPBACK,
    device_config: LinkConfig | None = None,
) -> AsyncIterator[tuple[Link, Link]]:
    device = Device(LinkIdentity.generate(), device_config or viewer_config, handler)
    viewer = await open_link(
        viewer_config,
        device.signal,
        fingerprint=device.identity.fingerprint,
        grant=GRANT,
        peer_label="device",
    )
    try:
        device_link = await asyncio.wait_for(device.pending[0].link, 5)
        try:
            yield viewer, device_link
        finally:
            await device_link.close()
    finally:
        await viewer.close()
