"""The seed's 1v1→1vN switch end to end: a real cloud with its edge, a real camera with
``max_viewers`` 2 and eight `P2PModule`s asking for it with ``live_stream_domain``.

Two get the camera directly; the other six find it full (``get_device_st`` 405) and join the
swarm of ``xp2p-device://PID/DEV?quality=high``, which the edge pulls over its own link (the
camera's one slot beyond ``max_viewers``). Everyone's bytes decode; the camera never serves
more than three pulls; the room stops and the edge's link closes when the swarm empties.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from tests.integration.test_swarm_client import LOOPBACK, ffprobe_frames, until
from tests.support.devices import DeviceSwap
from tests.support.stack import Stack
from xp2p import ErrorCode, XP2PError
from xp2p.cloud import AppConfig, CloudConfig, CloudServer
from xp2p.cloud.edge.device_source import CloudDeviceSource
from xp2p.device import DeviceAgent
from xp2p.device.capacity import ViewerSlots, slots
from xp2p.flv import FlvReader
from xp2p.player.server import PlayerServer
from xp2p.swarm.device_url import DeviceUrl, parse_device_url
from xp2p.swarm.edge_routes import room_id
from xp2p.viewer import AppParams, CommandResult, P2PModule, StreamInfo
from xp2p.viewer.swarm import SwarmService
from xp2p.viewer.switch import camera_is_full, edge_url, quality_of, swarm_info

MAX_VIEWERS = 2
VIEWERS = 8


class Viewer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.module = P2PModule(link_config=LOOPBACK)
        self.events: list[tuple[str, str, Any]] = []
        self.data = bytearray()

    def on_msg(self, event: str, subtype: str, detail: Any) -> None:
        self.events.append((event, subtype, detail))

    def on_data(self, chunk: bytes) -> None:
        self.data += chunk

    @property
    def mode(self) -> str | None:
        modes = [d.get("mode") for e, s, d in self.events if (e, s) == ("notify", "connected")]
        return modes[-1] if modes else None


def whole_tags(data: bytes) -> bytes:
    """The stream up to its last whole tag: a 1v1 viewer's data callback gets the link's
    chunks, which end anywhere, and ffprobe rightly calls a cut-off last tag invalid."""
    reader = FlvReader()
    return b"".join(item.encode() for item in reader.feed(data))


# ---- the decision (sans-IO) ----------------------------------------------------------------


def test_device_url_is_canonical_and_case_sensitive() -> None:
    url = DeviceUrl("AbC1", "cam_1", "standard")
    assert str(url) == "xp2p-device://AbC1/cam_1?quality=standard"
    assert parse_device_url(str(url)) == url
    assert room_id(str(url)) != room_id(str(url).lower())
    for bad in (
        "xp2p-device://AbC1/cam_1",
        "xp2p-device://AbC1/cam_1?quality=ultra",
        "xp2p-device://AbC1/cam 1?quality=high",
        "xp2p-device://AbC1/cam_1/x?quality=high",
    ):
        with pytest.raises(ValueError):
            parse_device_url(bad)


def test_state_reply_decides_the_mode() -> None:
    assert camera_is_full(CommandResult("success", data=[{"status": "405"}]))
    assert not camera_is_full(CommandResult("success", data=[{"status": "0"}]))
    for failed in (
        CommandResult("timeout", errcode=408, errmsg="no reply"),
        CommandResult("failure", errcode=403, errmsg="no command permission"),
        CommandResult("success", data=[{"status": "404"}]),
        CommandResult("success", data={"status": "0"}),
    ):
        with pytest.raises(XP2PError) as caught:
            camera_is_full(failed)
        assert caught.value.code == ErrorCode.DEVICE_STATE_QUERY_FAILED


def test_swarm_info_keeps_the_viewers_1vn_options() -> None:
    info = StreamInfo(
        product_id="P", device_name="d", live_stream_domain="https://edge", upload=False
    )
    moved = swarm_info(info, quality_of(info))
    assert moved.url == "xp2p-device://P/d?quality=high" and not moved.is_1v1
    assert moved.live_stream_domain == "https://edge" and moved.upload is False
    seed = StreamInfo(url="http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?action=live&quality=super")
    assert quality_of(seed) == "super"


def test_relay_slot_is_one_beyond_the_limit() -> None:
    device_slots = ViewerSlots(2)
    assert device_slots.claim(1) and device_slots.claim(2)
    assert not device_slots.claim(3) and device_slots.would_admit(3, relay=True)
    assert device_slots.claim(3, relay=True)
    assert not device_slots.claim(4, relay=True)  # one edge slot, not one per relay link
    device_slots.release(1)
    assert device_slots.claim(4) and device_slots.in_use == 3  # viewers get theirs back
    device_slots.release(3)  # the edge left: its slot is free for the next edge link
    assert not device_slots.claim(5) and device_slots.claim(5, relay=True)
    device_slots.release(2)
    assert device_slots.claim(6) and not device_slots.claim(7)  # 5 keeps the edge's slot


# ---- end to end ----------------------------------------------------------------------------


@pytest.fixture
async def camera(stack: Stack) -> AsyncIterator[DeviceAgent]:
    assert stack.cloud.edge is not None
    # The room stops soon after its last viewer (the default lingers 10 s).
    stack.cloud.edge.config = dataclasses.replace(stack.cloud.edge.config, linger=0.5)
    swap = DeviceSwap(stack)
    yield await swap.start(max_viewers=MAX_VIEWERS)
    await swap.close()


async def watch(stack: Stack, name: str, quality: str = "high") -> Viewer:
    """A seed-style viewer: ``start_p2p_service`` with ``live_stream_domain`` and a data
    callback; the module asks the camera and picks 1v1 or the camera's swarm by itself."""
    account = stack.config.devices[0]
    info = StreamInfo(
        url=f"http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?action=live&channel=0&quality={quality}",
        product_id=account.product_id,
        device_name=account.device_name,
        live_stream_domain=stack.cloud.url,
    )
    viewer = Viewer(name)
    await viewer.module.init(stack.app_params)
    await viewer.module.start_p2p_service(name, info, viewer.on_msg, viewer.on_data)
    return viewer


async def test_a_full_camera_moves_later_viewers_to_one_swarm(
    stack: Stack, camera: DeviceAgent
) -> None:
    edge = stack.cloud.edge
    assert edge is not None and isinstance(edge.device_source, CloudDeviceSource)
    device_slots = slots(camera.routes.state)
    most = 0

    async def sample() -> None:
        nonlocal most
        while True:
            most = max(most, device_slots.in_use)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    viewers: list[Viewer] = []
    try:
        for i in range(VIEWERS):
            viewers.append(await watch(stack, f"v{i}"))
            if i < MAX_VIEWERS:  # the next one must find this one's slot taken
                await until(lambda: device_slots.in_use == len(viewers), 10, "a direct pull")
        modes = [v.mode for v in viewers]
        assert modes == ["1v1"] * MAX_VIEWERS + ["swarm"] * (VIEWERS - MAX_VIEWERS)
        (room,) = edge.rooms.values()
        account = stack.config.devices[0]
        assert room.url == str(DeviceUrl(account.product_id, account.device_name, "high"))
        await until(lambda: all(len(v.data) > 150_000 for v in viewers), 60, "video for all")
        state = await viewers[0].module.send_command(
            "v0", "action=inner_define&channel=0&cmd=get_device_st&type=live"
        )
        assert state.data == [{"status": "0", "appConnectNum": str(MAX_VIEWERS + 1)}]
        for v in viewers:
            assert ffprobe_frames(whole_tags(bytes(v.data))) > 10, v.name
        stats = room.stats()
        print(
            f"\nedge egress {stats.edge_egress_copies:.2f} copies for "
            f"{VIEWERS - MAX_VIEWERS} swarm viewers; camera pulls at most {most}"
        )
        # One copy and what peers could not deliver in time: well under one per viewer.
        assert stats.edge_egress_copies < (VIEWERS - MAX_VIEWERS) / 2
        for v in viewers[MAX_VIEWERS:]:
            await v.module.destroy()
        await until(lambda: not edge.rooms, 20, "the room stops")
        await until(lambda: not edge.device_source.links, 10, "the edge's link closes")  # type: ignore[union-attr]
        await until(lambda: device_slots.in_use == MAX_VIEWERS, 10, "the edge's slot freed")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        for v in viewers:
            await v.module.destroy()
    assert most <= MAX_VIEWERS + 1


async def test_a_failed_state_query_is_2801_and_leaves_no_link() -> None:
    """The seed's -2801: here the app's grants may not send commands, so the camera refuses
    ``get_device_st`` (403); the start fails and the camera holds no link for it."""
    live_only = AppConfig("live-only", "live-only-secret-0123456789", permissions=("live",))
    config = CloudConfig.demo(port=0, stun_port=0)
    config = dataclasses.replace(config, apps=(*config.apps, live_only))
    cloud = CloudServer(config)
    await cloud.start()
    camera = DeviceAgent(Stack(cloud, config, None).device_config())  # type: ignore[arg-type]
    module = P2PModule(link_config=LOOPBACK)
    try:
        await camera.start()
        await camera.wait_signed_in(10)
        await module.init(AppParams(cloud.url, live_only.key, live_only.secret))
        account = config.devices[0]
        info = StreamInfo(
            product_id=account.product_id,
            device_name=account.device_name,
            live_stream_domain=cloud.url,
        )
        with pytest.raises(XP2PError) as caught:
            await module.start_p2p_service("cam", info, data_callback=lambda _b: None)
        assert caught.value.code == ErrorCode.DEVICE_STATE_QUERY_FAILED
        assert "device state query failed" in caught.value.message
        assert "403" in caught.value.message
        assert not module.has_service("cam")
        await until(lambda: not camera.links, 10, "the camera's link for the query closes")
        with pytest.raises(XP2PError) as caught:  # a domain that is no edge: before any link
            await module.start_p2p_service("cam", replace(info, live_stream_domain="ftp://x"))
        assert caught.value.code == ErrorCode.BAD_PARAM
    finally:
        await module.destroy()
        await camera.close()
        await cloud.stop()


def test_live_stream_domain_is_a_host_or_an_http_url() -> None:
    assert edge_url("edge.example.com") == "https://edge.example.com"
    assert edge_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert (
        StreamInfo(stream_live_domain="e.example").switch_domain == "e.example"
    )  # the other spelling
    for bad in ("ftp://edge", "https://", "https://u:p@edge", "https://edge?x=1", "https://e:0"):
        with pytest.raises(XP2PError) as caught:
            edge_url(bad)
        assert caught.value.code == ErrorCode.BAD_PARAM


async def test_the_local_player_switches_a_full_camera_to_its_swarm(
    stack: Stack, camera: DeviceAgent
) -> None:
    """What ``xp2p watch --live-stream-domain`` serves: with the camera full, the player's
    pull joins the camera's room and its HTTP-FLV plays from a keyframe, as a 1v1 one."""
    device_slots = slots(camera.routes.state)
    direct = [await watch(stack, f"d{i}") for i in range(MAX_VIEWERS)]
    module = P2PModule(link_config=LOOPBACK)
    await module.init(stack.app_params)
    account = stack.config.devices[0]
    label = f"{account.product_id}/{account.device_name}"
    player = PlayerServer(module, devices=[label], live_stream_domain=stack.cloud.url)
    await player.start()
    try:
        await until(lambda: device_slots.in_use == MAX_VIEWERS, 10, "the direct pulls")
        data = bytearray()
        async with aiohttp.ClientSession() as http, http.get(player.live_url(label)) as resp:
            assert resp.status == 200 and resp.content_type == "video/x-flv"
            async for piece in resp.content.iter_any():
                data += piece
                if len(data) > 150_000:
                    break
        assert data.startswith(b"FLV\x01") and ffprobe_frames(bytes(data)) > 10
        (service,) = (s for s in module._services.values())
        assert isinstance(service, SwarmService)
        assert service.info.url == str(DeviceUrl(account.product_id, account.device_name, "high"))
    finally:
        await player.stop()
        await module.destroy()
        for v in direct:
            await v.module.destroy()
