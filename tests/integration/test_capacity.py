"""Viewer capacity: ``max_viewers`` links may pull video at once; a slot frees itself however
its viewer leaves (docs/protocol.md §9 503, §10 get_device_st 405)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.devices import DeviceSwap
from tests.support.stack import Stack
from xp2p import ErrorCode, XP2PError
from xp2p.device import DeviceAgent
from xp2p.device.capacity import ViewerSlots
from xp2p.viewer import CommandResult, P2PModule, StreamInfo

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
DEVICE_ST = "action=inner_define&channel=0&cmd=get_device_st&type=live"

# ---- the accounting (sans-IO) ---------------------------------------------------------------


def test_viewer_slots_count_links_not_pulls() -> None:
    slots = ViewerSlots(2)
    assert slots.claim(1) and slots.claim(1)  # two pulls of one link: one viewer
    assert slots.claim(2)
    assert slots.in_use == 2 and not slots.would_admit(3) and slots.would_admit(1)
    assert not slots.claim(3)
    assert slots.in_use == 2  # a refused claim changes nothing
    slots.release(1)
    assert slots.holds(1) and not slots.claim(3)  # link 1 still pulls once
    slots.release(1)
    assert not slots.holds(1) and slots.claim(3)
    slots.release(99)  # releasing what was never claimed is harmless
    assert slots.in_use == 2


def test_viewer_slots_limits() -> None:
    assert not ViewerSlots(0).claim(1)
    with pytest.raises(ValueError):
        ViewerSlots(-1)


# ---- end to end ----------------------------------------------------------------------------


@pytest.fixture
async def small_device(stack: Stack) -> AsyncIterator[DeviceAgent]:
    swap = DeviceSwap(stack)
    yield await swap.start(max_viewers=2)
    await swap.close()


@pytest.fixture
async def viewers(stack: Stack, small_device: DeviceAgent) -> AsyncIterator[list[P2PModule]]:
    modules = [P2PModule() for _ in range(3)]
    try:
        for module in modules:
            await module.init(stack.app_params)
            await module.start_p2p_service("cam", DEVICE)
        yield modules
    finally:
        for module in modules:
            await module.destroy()


async def device_st(module: P2PModule) -> list[dict[str, str]]:
    result = await module.send_command("cam", DEVICE_ST)
    assert result.type == "success", result
    data: list[dict[str, str]] = result.data
    return data


async def start_when_free(module: P2PModule, within: float) -> float:
    """Retry a live pull until the device admits it; returns how long that took."""
    started = time.monotonic()
    while True:
        try:
            await module.start_stream("cam", lambda _b: None)
            return time.monotonic() - started
        except XP2PError as exc:
            assert "(503)" in exc.message, exc
            assert time.monotonic() - started < within, f"still full after {within} s"
            await asyncio.sleep(0.2)


async def test_third_viewer_is_refused_until_one_stops(
    small_device: DeviceAgent, viewers: list[P2PModule]
) -> None:
    a, b, c = viewers
    assert await device_st(c) == [{"status": "0", "appConnectNum": "0"}]
    await a.start_stream("cam", lambda _b: None)
    await b.start_stream("cam", lambda _b: None)
    with pytest.raises(XP2PError) as e:
        await c.start_stream("cam", lambda _b: None)
    assert e.value.code == ErrorCode.START_STREAM_FAILED
    assert "(503): device is at its viewer capacity (2)" in e.value.message
    assert await device_st(c) == [{"status": "405", "appConnectNum": "2"}]
    # A viewer that holds a slot could pull again: it is told 0, and sees the count.
    assert await device_st(a) == [{"status": "0", "appConnectNum": "2"}]
    playback = await c.send_command("cam", DEVICE_ST.replace("live", "playback"))
    assert playback == CommandResult("success", 200, [{"status": "405", "appConnectNum": "2"}])
    # Voice and commands do not take slots.
    voice = await c.send_command("cam", DEVICE_ST.replace("live", "voice"))
    assert voice.data == [{"status": "0", "appConnectNum": "2"}]

    await a.stop_stream("cam")
    await start_when_free(c, within=3.0)
    assert await device_st(a) == [{"status": "405", "appConnectNum": "2"}]

    # Closing the link (stop_p2p_service) frees the slot as well.
    await b.stop_p2p_service("cam")
    await start_when_free(a, within=3.0)
    slots = small_device.routes.state.viewer_slots
    assert slots is not None and slots.in_use == 2


async def test_a_vanished_viewer_frees_its_slot_when_its_link_times_out(
    small_device: DeviceAgent, viewers: list[P2PModule]
) -> None:
    a, b, c = viewers
    await a.start_stream("cam", lambda _b: None)
    await b.start_stream("cam", lambda _b: None)
    with pytest.raises(XP2PError):
        await c.start_stream("cam", lambda _b: None)
    # Viewer b vanishes without a word: its sockets stop sending (acks, pings, everything),
    # and a vanished process does not move its link to a new path either (issue 12 item 6).
    link = b._services["cam"].link
    assert link.mover is not None
    await link.mover.close()
    for protocol in link._ice._protocols:
        protocol.transport.sendto = lambda *_a: None
    idle_timeout = small_device.config.link.idle_timeout
    waited = await start_when_free(c, within=idle_timeout + 6.0)
    assert waited < idle_timeout + 6.0
    assert await device_st(a) == [{"status": "0", "appConnectNum": "2"}]
    assert len(small_device.links) == 2  # b's link is gone on the device


async def test_links_past_max_links_are_refused_until_one_closes(stack: Stack) -> None:
    """Links that only send commands hold no viewer slot, but each costs the device; past
    ``max_links`` an offer gets 503 busy, and a closed link makes room again. (One app
    here: its share is the whole device; tests/security/test_device.py has the shares.)"""
    swap = DeviceSwap(stack)
    device = await swap.start(max_links=2, app_link_share=1.0)
    modules = [P2PModule() for _ in range(3)]
    try:
        for module in modules:
            await module.init(stack.app_params)
        a, b, c = modules
        await a.start_p2p_service("cam", DEVICE)
        await b.start_p2p_service("cam", DEVICE)
        with pytest.raises(XP2PError) as e:
            await c.start_p2p_service("cam", DEVICE)
        assert e.value.code == ErrorCode.START_STREAM_FAILED
        assert "busy: 2 links already open" in e.value.message
        assert len(device.links) == 2
        closed = [asyncio.ensure_future(link.wait_closed()) for link in device.links]
        await a.stop_p2p_service("cam")
        done, _ = await asyncio.wait(closed, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1  # the device saw a's link close; b's is up
        await c.start_p2p_service("cam", DEVICE)
        assert (await device_st(c))[0]["status"] == "0"
    finally:
        for module in modules:
            await module.destroy()
        await swap.close()
