"""The cloud's ``/metrics`` (issue 13 item 4) against real sign-ins, connects and a 1vN room:
each number follows what happened, the reader is the operator only, and no secret is in it.
Read with prometheus_client's own parser, as a scraper would."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_swarm_client import LOOPBACK, join
from tests.support.stack import PATTERN, Stack
from tests.support.waiting import wait_until
from xp2p.cloud import CloudConfig, CloudServer
from xp2p.cloud.config import TurnServerConfig
from xp2p.cloud.metrics import MetricsAccess
from xp2p.device import DeviceAgent
from xp2p.device.cloud_session import CloudSignInError
from xp2p.device.http_origin import OriginServer
from xp2p.errors import XP2PError
from xp2p.media import TestPatternSource
from xp2p.viewer import P2PModule, StreamInfo

TURN_SECRET = "turn-shared-secret-0123456789"


async def scrape(cloud: CloudServer, token: str = "") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{cloud.url}/metrics", headers=headers) as resp,
    ):
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def turn_cloud() -> AsyncIterator[tuple[CloudServer, CloudConfig]]:
    """The demo cloud with one TURN server configured."""
    turn = TurnServerConfig(urls=("turn:127.0.0.1:3478",), shared_secret=TURN_SECRET)
    config = dataclasses.replace(
        CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0), turn=(turn,)
    )
    server = CloudServer(config)
    await server.start()
    yield server, config
    await server.stop()


async def test_metrics_follow_sign_ins_connects_and_errors(stack: Stack) -> None:
    cloud = stack.cloud
    status, text = await scrape(cloud)
    assert status == 200
    assert value(text, "xp2p_devices_online") == 1
    assert value(text, "xp2p_device_sign_ins_total", outcome="ok") == 1
    assert value(text, "xp2p_connects_total", outcome="answered") == 0

    # A camera with a wrong secret: refused, counted, not online.
    impostor = DeviceAgent(stack.device_config(device_secret="not the secret at all"))
    with pytest.raises(CloudSignInError):
        await impostor.start()
        await impostor.wait_signed_in(timeout=10)
    await impostor.close()

    # Two viewers connect (direct on loopback), one asks for an unknown device.
    viewers = [P2PModule(link_config=LOOPBACK) for _ in range(2)]
    try:
        for i, viewer in enumerate(viewers):
            await viewer.init(stack.app_params)
            await viewer.start_p2p_service(
                f"v{i}", StreamInfo(product_id="DEMO", device_name="cam1")
            )
        with pytest.raises(XP2PError):
            await viewers[0].start_p2p_service(
                "x", StreamInfo(product_id="DEMO", device_name="nope")
            )

        async def links_reported() -> bool:
            return value((await scrape(cloud))[1], "xp2p_links_total", mode="direct") == 2

        await wait_until(links_reported, 10, 0.05, "both devices' link_up reports")
        _, text = await scrape(cloud)
    finally:
        for viewer in viewers:
            await viewer.destroy()
    assert value(text, "xp2p_device_sign_ins_total", outcome="auth_failed") == 1
    assert value(text, "xp2p_devices_online") == 1
    assert value(text, "xp2p_connects_total", outcome="answered") == 2
    assert value(text, "xp2p_signalling_relay_seconds_count") == 2
    assert value(text, "xp2p_signalling_relay_seconds_sum") > 0
    assert value(text, "xp2p_links_total", mode="relay") == 0
    assert value(text, "xp2p_turn_credentials_issued_total") == 0  # no TURN configured
    assert value(text, "xp2p_api_errors_total", code="unknown_device") >= 1
    for secret in (
        stack.config.apps[0].secret,
        stack.config.devices[0].secret,
    ):
        assert secret not in text


async def test_turn_credentials_are_counted_and_never_shown(
    turn_cloud: tuple[CloudServer, CloudConfig],
) -> None:
    """One credential per TURN server for each device welcome and app session (no TURN
    server needs to run: nothing connects here)."""
    server, config = turn_cloud
    stack = Stack(server, config, device=None)  # type: ignore[arg-type]
    device = DeviceAgent(stack.device_config())
    viewer = P2PModule(link_config=LOOPBACK)
    try:
        await device.start()
        await device.wait_signed_in(timeout=10)
        assert value((await scrape(server))[1], "xp2p_turn_credentials_issued_total") == 1
        await viewer.init(stack.app_params)
        _, text = await scrape(server)
    finally:
        await viewer.destroy()
        await device.close()
    assert value(text, "xp2p_turn_credentials_issued_total") == 2
    assert TURN_SECRET not in text and config.devices[0].secret not in text


async def test_a_room_shows_its_viewers_and_where_their_bytes_came_from(
    cloud: tuple[CloudServer, CloudConfig],
) -> None:
    server, _config = cloud
    origin = OriginServer(lambda: TestPatternSource(PATTERN), name="metrics")
    await origin.start()
    viewers = []
    try:
        viewers = [await join(server, origin.url, f"m{i}") for i in range(2)]

        async def fed() -> bool:
            return all(len(v.data) > 50_000 for v in viewers)

        await wait_until(fed, 30, 0.1, "video for both viewers")
        _, text = await scrape(server)
    finally:
        for viewer in viewers:
            await viewer.module.destroy()
        await origin.stop()
    assert value(text, "xp2p_swarm_rooms") == 1
    ((room,),) = {
        labels for (name, labels), _ in samples(text).items() if name == "xp2p_swarm_viewers"
    }
    assert room[0] == "room" and room[1] not in origin.url  # an id, not the URL
    assert value(text, "xp2p_swarm_viewers", room=room[1]) == 2
    cdn = value(text, "xp2p_swarm_bytes_total", room=room[1], source="cdn")
    p2p = value(text, "xp2p_swarm_bytes_total", room=room[1], source="p2p")
    assert cdn > 50_000 and p2p >= 0
    assert "metrics.flv" not in text


async def test_only_the_operator_reads_the_metrics() -> None:
    config = CloudConfig.demo(port=0, stun_port=0)
    async with CloudServer(config, metrics_access=MetricsAccess("scrape-token-0123")) as cloud:
        for token in ("", "wrong"):
            status, body = await scrape(cloud, token)
            assert status == 403 and "metrics token" in body and "xp2p_" not in body
        status, body = await scrape(cloud, "scrape-token-0123")
        assert status == 200 and "xp2p_devices_online" in body
    # Without a token: this machine only.
    open_access = MetricsAccess()
    assert open_access.allows("127.0.0.1", "") and open_access.allows("::1", "")
    assert not open_access.allows("203.0.113.7", "") and not open_access.allows(None, "")
    assert not MetricsAccess("t").allows("127.0.0.1", "Bearer t2")
