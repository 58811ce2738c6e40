"""The device's routes, grants and capacity over a transport that is not QUIC.

A real ``DeviceAgent`` (test-pattern channel, real H.264/AAC) serves requests that arrive
through the in-memory ``RequestTransport`` double: the same answers, status codes and FLV
a QUIC link gets (tests/integration/test_e2e_live.py, test_commands.py), so a browser
transport only has to implement the seam (xp2p.link.transport)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.memory_transport import MemoryEnd, memory_pair
from tests.support.stack import PATTERN
from xp2p.auth import PERMISSIONS, AccessGrant
from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
from xp2p.flv import FlvReader, FlvTag
from xp2p.link import IncomingRequest
from xp2p.media import TestPatternSource

pytestmark = pytest.mark.timeout(60)


def grant(*permissions: str) -> AccessGrant:
    now = int(time.time())
    return AccessGrant("app", "DEMO", "cam1", frozenset(permissions), now, now + 300)


@pytest.fixture
async def device() -> AsyncIterator[DeviceAgent]:
    config = DeviceConfig(
        cloud_url="http://127.0.0.1:9",  # nothing listens: requests come through the double
        product_id="DEMO",
        device_name="cam1",
        device_secret="a secret of sixteen bytes or more",
        # No cloud here: any pinned key does (requests bring their grants through the double).
        grant_public_key=Ed25519PrivateKey.generate().public_key(),
        channels={0: ChannelConfig(default=lambda: TestPatternSource(PATTERN))},
        max_viewers=1,
    )
    agent = DeviceAgent(config)
    await agent.start()  # the sources; its cloud session retries in the background, unused
    yield agent
    await agent.close()


def viewer_of(device: DeviceAgent, access: AccessGrant) -> MemoryEnd:
    async def serve(request: IncomingRequest) -> None:
        await device.routes.handle(request, access)

    requester, _device_end = memory_pair(serve)
    return requester


async def test_a_command_is_answered_as_on_a_link(device: DeviceAgent) -> None:
    viewer = viewer_of(device, grant(*PERMISSIONS))
    response = await viewer.request(
        "GET", "/command?action=inner_define&channel=0&cmd=get_device_st&type=live"
    )
    assert response.status == 200
    assert json.loads(await response.read()) == [{"status": "0", "appConnectNum": "0"}]


async def test_live_video_starts_at_a_keyframe_and_counts_against_capacity(
    device: DeviceAgent,
) -> None:
    viewer = viewer_of(device, grant(*PERMISSIONS))
    response = await viewer.request("GET", "/ipc.flv?action=live&channel=0&quality=high")
    assert response.status == 200
    reader = FlvReader()
    tags: list[FlvTag] = []
    async for chunk in response:
        tags += [item for item in reader.feed(chunk) if isinstance(item, FlvTag)]
        if sum(tag.is_video for tag in tags) >= 10:
            break
    first_frame = next(tag for tag in tags if tag.is_video and not tag.is_sequence_header)
    assert first_frame.is_keyframe
    # The one viewer slot is taken: a second pull gets 503 and get_device_st says 405.
    second = viewer_of(device, grant(*PERMISSIONS))
    refused = await second.request("GET", "/ipc.flv?action=live&channel=0&quality=high")
    assert refused.status == 503
    state = await second.request(
        "GET", "/command?action=inner_define&channel=0&cmd=get_device_st&type=live"
    )
    assert json.loads(await state.read())[0]["status"] == "405"
    response.cancel()


@pytest.mark.parametrize(
    ("target", "permissions", "status", "reason"),
    [
        ("/ipc.flv?action=live&channel=0", ("command",), 403, "does not allow live"),
        ("/ipc.flv?action=teleport&channel=0", PERMISSIONS, 400, "action must be"),
        ("/ipc.flv?action=live&channel=7", PERMISSIONS, 404, "no channel 7"),
        ("/ipc.flv?action=live&_evil=1", PERMISSIONS, 400, "unknown internal parameter"),
        ("/nowhere", PERMISSIONS, 404, "no such path"),
    ],
)
async def test_bad_requests_get_the_links_status_codes(
    device: DeviceAgent, target: str, permissions: tuple[str, ...], status: int, reason: str
) -> None:
    viewer = viewer_of(device, grant(*permissions))
    response = await viewer.request("GET", target)
    assert response.status == status
    assert reason in (await response.read()).decode()
