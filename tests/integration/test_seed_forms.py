"""The seed's forms of a stream (issue 12 item 3), through a real cloud, device and link: its
1v1 url naming the pull, one link per device (-2401), a refused automatic pull leaving no
service, the names before 1.3.0 and its event constants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import xp2p
from tests.support.live import Recorder, parse
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.viewer import P2PModule, StreamInfo

SEED_URL = "http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?action=live&channel=0&quality=standard"


def device_info(stack: Stack, **fields: str) -> StreamInfo:
    account = stack.config.devices[0]
    return StreamInfo(product_id=account.product_id, device_name=account.device_name, **fields)


def requests(rec: Recorder) -> list[str]:
    return [d["target"] for e, s, d in rec.events if (e, s) == ("notify", "request")]


async def test_the_seed_1v1_url_names_the_pull(stack: Stack, module: P2PModule) -> None:
    info = device_info(stack, url=SEED_URL)
    assert info.is_1v1  # not a 1vN stream, though it has a url
    rec = Recorder()
    await module.start_p2p_service("cam", info, msg_callback=rec.on_msg)
    await module.start_stream("cam", rec.on_data)  # no flv: the url's file and params
    await rec.wait_bytes(20_000)
    await module.stop_stream("cam")
    assert requests(rec) == ["/ipc.flv?action=live&channel=0&quality=standard"]
    headers, tags = parse(bytes(rec.data))
    assert len(headers) == 1 and any(t.is_video for t in tags)
    # The same url with a data callback at start: the seed's usual form.
    await module.stop_p2p_service("cam")
    auto = Recorder()
    await module.start_p2p_service("auto", info, auto.on_msg, auto.on_data)
    await auto.wait_bytes(20_000)
    assert requests(auto) == ["/ipc.flv?action=live&channel=0&quality=standard"]
    # The async-iterator form pulls what the url names too.
    await module.stop_p2p_service("auto")
    await module.start_p2p_service("iter", info, msg_callback=rec.on_msg)
    rec.events.clear()
    async with module.stream("iter") as chunks:
        async for _chunk in chunks:
            break
    assert requests(rec) == ["/ipc.flv?action=live&channel=0&quality=standard"]


async def test_one_link_per_device(stack: Stack, module: P2PModule) -> None:
    info = device_info(stack)
    await module.start_p2p_service("a", info)
    with pytest.raises(XP2PError) as caught:
        await module.start_p2p_service("b", info)
    assert caught.value.code == ErrorCode.SERVICE_ALREADY_STARTED
    assert "同一个设备只能有1个连接" in caught.value.message and "'a'" in caught.value.message
    assert not module.has_service("b")
    await module.stop_p2p_service("a")
    # Two starts at once: one wins, the other is -2401, and only one link reaches the camera.
    results = await asyncio.gather(
        module.start_p2p_service("c", info),
        module.start_p2p_service("d", info),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, XP2PError)]
    assert len(errors) == 1 and errors[0].code == ErrorCode.SERVICE_ALREADY_STARTED
    assert module.has_service("c") != module.has_service("d")
    await wait_until(lambda: len(stack.device.links) == 1, timeout=10, what="one device link")


async def test_a_refused_automatic_pull_leaves_no_service(stack: Stack, module: P2PModule) -> None:
    # Channel 7 does not exist: the camera refuses the pull the data callback asked for.
    info = device_info(stack, url=SEED_URL.replace("channel=0", "channel=7"))
    with pytest.raises(XP2PError) as caught:
        await module.start_p2p_service("cam", info, data_callback=lambda _b: None)
    assert caught.value.code == ErrorCode.START_STREAM_FAILED
    assert not module.has_service("cam")
    await wait_until(lambda: not stack.device.links, timeout=10, what="the refused link closes")
    await module.start_p2p_service("cam", device_info(stack))  # the device is free again


async def test_the_names_before_1_3_0_still_work(stack: Stack, module: P2PModule) -> None:
    rec = Recorder()
    await module.start_p2p_service("cam", device_info(stack), msg_callback=rec.on_msg)
    await module.start_p2p_stream("cam", rec.on_data)
    await rec.wait_bytes(20_000)
    await module.stop_p2p_stream("cam")
    await rec.wait_for("close", 10)
    await module.stop_service_by_id("cam")
    assert not module.has_service("cam")


async def test_the_voice_names_before_1_3_0_reach_the_device(
    stack: Stack, module: P2PModule
) -> None:
    rec = Recorder()
    await module.start_p2p_service("cam", device_info(stack), msg_callback=rec.on_msg)
    stops: list[bool] = []

    async def half_a_second() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield bytes(1600)  # 0.1 s of 8 kHz mono s16le

    await module.start_voice_service("cam", half_a_second(), on_stop=stops.append)
    await rec.wait_for("voice_close", 15)
    (close,) = [d for e, s, d in rec.events if s == "voice_close"]
    assert close["ok"] and stops == [False], (close, stops)
    await module.start_voice_service("cam", half_a_second())
    await module.stop_voice_service("cam")
    await wait_until(
        lambda: rec.subtypes().count("voice_close") == 2, timeout=15, what="the second close"
    )


def test_the_seed_event_constants_are_exported() -> None:
    assert xp2p.XP2PEventEnum.Notify == "notify" and xp2p.XP2PEventEnum.Log == "log"
    assert P2PModule.XP2PNotify_SubType.Disconnect == "disconnect"
    assert xp2p.XP2PNotify_SubType.Close == "close"
    assert xp2p.XP2PNotify_SubType.VoiceClose == "voice_close"  # talk-back has its own
