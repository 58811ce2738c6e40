"""The browser tier: real headless Chromium (Debian's) against the real in-process stack."""

from __future__ import annotations

import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from aioice import ice as aioice_ice

from tests.browser.chromium import Chromium
from tests.browser.sdk_site import SdkSite
from tests.support.stack import Stack
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import AppConfig, CloudConfig
from xp2p.cloud.config import DeviceConfig as DeviceAccount
from xp2p.device import DeviceAgent


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    browser = Chromium()
    yield browser
    browser.close()


@pytest.fixture
async def sdk_site() -> AsyncIterator[SdkSite]:
    """An app's web site (page, SDK, token backend) on its own origin."""
    site = SdkSite()
    await site.start()
    yield site
    await site.stop()


@pytest.fixture
async def sdk_stack(sdk_site: SdkSite) -> AsyncIterator[Stack]:
    """Cloud and test-pattern camera, the cloud allowing the site's origin for the app."""
    base = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0)
    app = base.apps[0]
    config = replace(
        base,
        apps=(AppConfig(app.key, app.secret, cors_origins=(sdk_site.url,)),),
        # A second camera, never started: tokens for it must not reach cam1.
        devices=(*base.devices, DeviceAccount("DEMO", "cam2", secrets.token_urlsafe(24))),
    )
    server = CloudServer(config)
    await server.start()
    sdk_site.attach(server.url, app.key, app.secret)
    stack = Stack(server, config, device=None)  # type: ignore[arg-type]
    stack.device = DeviceAgent(stack.device_config())
    await stack.device.start()
    await stack.device.wait_signed_in(timeout=10)
    yield stack
    await stack.device.close()  # a test may have swapped in a new device
    await server.stop()


@pytest.fixture(autouse=True)
async def fresh_mdns_resolver() -> AsyncIterator[None]:
    """aioice keeps one mDNS resolver (its socket and an asyncio.Lock) per thread, bound to
    the loop that made it; Chromium's host candidates are mDNS names, so the device resolves
    them. Each test has its own loop: close the resolver in it and forget it, or the next
    test's device refuses the offer ("Lock ... is bound to a different event loop")."""
    yield
    state = aioice_ice._mdns
    protocol = getattr(state, "protocol", None)
    if protocol is not None:
        await protocol.close()
    aioice_ice._mdns = threading.local()
