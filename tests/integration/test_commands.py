"""Commands end to end: a real cloud, device and viewer over real ICE + QUIC (protocol §10)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.devices import DeviceSwap
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.device import ChannelConfig
from xp2p.device.commands import MAX_COMMAND_BYTES
from xp2p.device.ptz import Direction, PtzLimits, PtzSimulator
from xp2p.device.request import BadRequest
from xp2p.device.voice import TalkSession
from xp2p.flv import FlvReader, FlvTag
from xp2p.link import Link, Xp2pInfo, open_link
from xp2p.media import TestPatternConfig, TestPatternSource
from xp2p.viewer import CommandResult, P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudClient

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
FFPROBE = shutil.which("ffprobe")


def inner(cmd: str, **params: str) -> str:
    query = f"action=inner_define&channel={params.pop('channel', '0')}&cmd={cmd}"
    return query + "".join(f"&{k}={v}" for k, v in params.items())


def ptz(cmd: str, message_id: int = 1) -> str:
    text = json.dumps({"topic": "ptz", "data": {"cmd": cmd}, "message_id": message_id})
    return f"action=user_define&channel=0&cmd={text}"


@pytest.fixture
async def swap(stack: Stack) -> AsyncIterator[DeviceSwap]:
    devices = DeviceSwap(stack)
    yield devices
    await devices.close()


async def test_get_device_st_replies_in_seed_shape(stack: Stack, module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    for kind in ("live", "voice", "playback"):
        result = await module.send_command("cam", inner("get_device_st", type=kind))
        assert result == CommandResult("success", 200, [{"status": "0", "appConnectNum": "0"}]), (
            kind
        )
    cases = {
        inner("get_device_st"): "404",  # no type: bad request
        inner("get_device_st", type="live", quality="ultra"): "404",
        inner("get_device_st", type="snapshot"): "406",
    }
    for command, status in cases.items():
        result = await module.send_command("cam", command)
        assert result.type == "success", result
        assert result.data == [{"status": status, "appConnectNum": "0"}], command
    # The talk-back module's contract: state.talk set = a talk session is open.
    stack.device.routes.state.talk = TalkSession(link_id=0, channel=0, calltype="pcm")
    try:
        busy = await module.send_command("cam", inner("get_device_st", type="voice"))
        live = await module.send_command("cam", inner("get_device_st", type="live"))
    finally:
        stack.device.routes.state.talk = None
    assert busy.data == [{"status": "1", "appConnectNum": "0"}]
    assert live.data == [{"status": "0", "appConnectNum": "0"}]
    # A viewer that pulls counts; the reply's raw bytes are exactly the seed's text.
    await module.start_stream("cam", lambda _b: None)
    link = module._services["cam"].link
    response = await link.request("GET", "/command?" + inner("get_device_st", type="live"))
    assert response.status == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert await response.read() == b'[{"status":"0","appConnectNum":"1"}]'


async def test_get_nvr_list_and_request_keyframe_on_one_channel(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    result = await module.send_command("cam", inner("get_nvr_list", nvr="cam1"))
    assert result.type == "success"
    assert result.data == [{"DeviceName": "cam1-ch0", "Channel": "0", "Online": "1"}]
    assert (await module.send_command("cam", inner("get_nvr_list"))).data == result.data
    other = await module.send_command("cam", inner("get_nvr_list", nvr="cam2"))
    assert (other.type, other.status, other.errcode) == ("failure", 404, 404)
    assert "not NVR 'cam2'" in other.errmsg
    key = await module.send_command("cam", inner("request_keyframe"))
    assert key == CommandResult("success", 200, {"status": "0"})


def keyframe_times(data: bytes) -> list[int]:
    return [
        t.timestamp
        for t in FlvReader().feed(data)
        if isinstance(t, FlvTag) and t.is_video and t.is_keyframe and not t.is_sequence_header
    ]


def last_timestamp(data: bytes) -> int:
    tags = [t for t in FlvReader().feed(data) if isinstance(t, FlvTag)]
    return tags[-1].timestamp if tags else -1


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
async def test_request_keyframe_makes_the_source_send_an_idr(
    stack: Stack, swap: DeviceSwap, tmp_path: Path
) -> None:
    # One keyframe every 10 s: any other keyframe in the first seconds was asked for.
    slow_gop = TestPatternConfig(width=320, height=180, fps=25, bitrate=300_000, gop=250)
    await swap.start(
        channels={0: ChannelConfig(default=lambda: TestPatternSource(slow_gop))},
        max_lag=30.0,
    )
    module = P2PModule()
    await module.init(stack.app_params)
    data = bytearray()
    try:
        await module.start_p2p_service("cam", DEVICE, data_callback=data.extend)
        deadline = time.monotonic() + 15
        while last_timestamp(bytes(data)) < 1500:
            assert time.monotonic() < deadline, "no video"
            await asyncio.sleep(0.05)
        asked_at = last_timestamp(bytes(data))
        first_gop = [t for t in keyframe_times(bytes(data)) if t <= asked_at]
        result = await module.send_command("cam", inner("request_keyframe"))
        assert result == CommandResult("success", 200, {"status": "0"})
        while last_timestamp(bytes(data)) < asked_at + 3000:
            assert time.monotonic() < deadline + 10, "stream stalled"
            await asyncio.sleep(0.05)
        await module.stop_stream("cam")
    finally:
        await module.destroy()
    forced = [t for t in keyframe_times(bytes(data)) if asked_at < t <= asked_at + 3000]
    assert len(first_gop) == 1, first_gop  # the stream started on the source's first keyframe
    assert len(forced) == 1, keyframe_times(bytes(data))
    assert forced[0] - first_gop[0] < 10_000  # long before the GOP's own next keyframe
    # ffprobe, independently: that frame is a decodable IDR (key frame, picture type I).
    path = tmp_path / "forced.flv"
    await asyncio.to_thread(path.write_bytes, bytes(data))
    args = ["-v", "error", "-select_streams", "v", "-show_frames", "-of", "json", str(path)]
    probe = await asyncio.to_thread(
        subprocess.run,
        [FFPROBE or "ffprobe", *args, "-show_entries", "frame=key_frame,pict_type,pts_time"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frames = json.loads(probe.stdout)["frames"]
    keys = [f for f in frames if f["key_frame"] == 1]
    assert [f["pict_type"] for f in keys] == ["I", "I"]
    gap_ms = (float(keys[1]["pts_time"]) - float(keys[0]["pts_time"])) * 1000
    assert abs(gap_ms - (forced[0] - first_gop[0])) <= 1


async def test_ptz_through_the_link(stack: Stack, module: P2PModule) -> None:
    """The default handler: the demo's PTZ, pressing and releasing, with its errors."""
    await module.start_p2p_service("cam", DEVICE)
    for n, cmd in enumerate(("ptz_left_press", "ptz_release_pre", "ptz_up_press")):
        result = await module.send_command("cam", ptz(cmd, n))
        assert result == CommandResult("success", 200, {"apex": "no"}), cmd
    simulator = stack.device.routes.state.ptz
    assert simulator is not None
    head = simulator.heads[0]
    assert head.moving == "up"
    await module.send_command("cam", ptz("ptz_release_pre"))
    pan, tilt = head.position(time.monotonic())
    assert pan < 0 < tilt and head.moving is None
    for text, status in (("nonsense", 400), ('{"topic":"zoom","data":{}}', 406)):
        result = await module.send_command("cam", f"action=user_define&channel=0&cmd={text}")
        assert (result.type, result.status, result.errcode) == ("failure", status, status)
        assert result.data["status"] == str(status)


async def test_ptz_reaches_its_limit_through_the_link(stack: Stack, swap: DeviceSwap) -> None:
    fast = PtzSimulator(PtzLimits(speed=2000.0))  # any limit within 0.1 s
    await swap.start(user_command_handler=fast)
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", DEVICE)
        assert (await module.send_command("cam", ptz("ptz_right_press"))).data == {"apex": "no"}
        head = fast.heads[0]
        await wait_until(lambda: head.at_limit(Direction.RIGHT, time.monotonic()), what="limit")
        assert (await module.send_command("cam", ptz("ptz_right_press"))).data == {"apex": "yes"}
        assert (await module.send_command("cam", ptz("ptz_release_pre"))).data == {"apex": "yes"}
        assert (await module.send_command("cam", ptz("ptz_left_press"))).data == {"apex": "no"}
        assert fast.heads[0].position(time.monotonic() + 10)[0] == -170.0
    finally:
        await module.destroy()


async def test_custom_user_handler_through_the_sdk(stack: Stack, swap: DeviceSwap) -> None:
    agent = swap.build()
    seen: list[tuple[int, str]] = []

    @agent.user_command
    async def on_command(channel: int, command: str) -> Any:
        seen.append((channel, command))
        if command == "text":
            return "plain answer\x00"
        if command == "boom":
            raise RuntimeError("the maker's bug")
        if command == "refuse":
            raise BadRequest(409, "the door is open")
        if command == "bytes":
            return b"not allowed"
        return {"echo": command, "channel": channel, "n": 1}

    await swap.start(agent)
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", DEVICE)
        # Python's json.dumps has spaces; non-ASCII, + and quotes travel as written.
        text = json.dumps({"say": "grüß dich 1+1", "q": "\"'<>"})
        result = await module.send_command("cam", f"action=user_define&channel=0&cmd={text}")
        assert result == CommandResult("success", 200, {"echo": text, "channel": 0, "n": 1})
        plain = await module.send_command("cam", "action=user_define&channel=0&cmd=text")
        assert plain == CommandResult("success", 200, "plain answer")
        boom = await module.send_command("cam", "action=user_define&channel=0&cmd=boom")
        assert (boom.type, boom.status, boom.errcode) == ("failure", 500, 500)
        assert boom.errmsg == "the command handler failed"  # the exception text stays inside
        refused = await module.send_command("cam", "action=user_define&channel=0&cmd=refuse")
        assert (refused.type, refused.errcode, refused.errmsg) == (
            "failure",
            409,
            "the door is open",
        )
        wrong = await module.send_command("cam", "action=user_define&channel=0&cmd=bytes")
        assert (wrong.type, wrong.errcode) == ("failure", 500)
        again = await module.send_command("cam", "action=user_define&channel=0&cmd=x")
        assert again.ok  # the device kept serving
        assert [c for _ch, c in seen] == [text, "text", "boom", "refuse", "bytes", "x"]
    finally:
        await module.destroy()


async def test_unknown_and_malformed_commands(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    unknown = await module.send_command("cam", inner("format_disk"))
    assert unknown == CommandResult(
        "failure",
        406,
        {"status": "406", "errmsg": "unknown command 'format_disk'"},
        406,
        "unknown command 'format_disk'",
    )
    cases = {
        "action=inner_define&channel=0": (400, "inner_define needs cmd="),
        "action=shell&cmd=ls": (400, "action must be inner_define or user_define"),
        "cmd=get_device_st": (400, "action must be inner_define or user_define"),
        "action=user_define&channel=0": (400, "user_define needs cmd="),
        inner("get_device_st", channel="9"): (404, "no channel 9"),
        inner("get_device_st", channel="x"): (400, "channel must be a small non-negative"),
        inner("get_device_st", type="live") + "&type=voice": (400, "'type' given twice"),
        inner("get_device_st") + "&=1": (400, "empty parameter name"),
        inner("get_device_st") + "&x=%ff": (400, "not UTF-8"),
        inner("get_device_st") + "&_secret=1": (400, "unknown internal parameter '_secret'"),
    }
    for command, (status, reason) in cases.items():
        result = await module.send_command("cam", command)
        assert (result.type, result.status, result.errcode) == ("failure", status, status), command
        assert reason in result.errmsg, (command, result)
    # _crypto and _token are ours, accepted and ignored
    ok = await module.send_command("cam", inner("get_device_st", type="live", _crypto="off"))
    assert ok.ok


async def test_command_size_limits(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    base = inner("get_device_st", type="live") + "&pad="
    ok = await module.send_command("cam", base + "x" * (15 * 1024 - len(base)))
    assert ok == CommandResult("success", 200, [{"status": "0", "appConnectNum": "0"}])
    exact = await module.send_command("cam", base + "x" * (MAX_COMMAND_BYTES - len(base)))
    assert exact.ok
    with pytest.raises(XP2PError) as e:
        await module.send_command("cam", base + "x" * (MAX_COMMAND_BYTES - len(base) + 1))
    assert e.value.code == ErrorCode.BAD_PARAM and "command too large" in e.value.message
    # The device enforces the same bound on whatever a peer sends...
    link = module._services["cam"].link
    over = "/command?" + base + "x" * (MAX_COMMAND_BYTES - len(base) + 1)
    response = await link.request("GET", over)
    assert response.status == 400
    assert await response.read() == b"command too large (16385 bytes, at most 16384)"
    # ...while every other path keeps the 3000-byte query limit of docs/protocol.md §9.
    response = await link.request("GET", "/ipc.flv?action=live&pad=" + "x" * 3000)
    assert response.status == 400
    assert b"query longer than 3000 bytes" in await response.read()
    assert (await module.send_command("cam", inner("get_device_st", type="live"))).ok


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "7", True])
async def test_send_command_argument_errors(module: P2PModule, bad: Any) -> None:
    await module.start_p2p_service("cam", DEVICE)
    with pytest.raises(XP2PError) as e:
        await module.send_command("cam", inner("get_device_st", type="live"), timeout=bad)
    assert e.value.code == ErrorCode.BAD_PARAM and "timeout" in e.value.message
    with pytest.raises(XP2PError) as e:
        await module.send_command("nope", inner("get_device_st"))
    assert e.value.code == ErrorCode.SERVICE_NOT_STARTED


@asynccontextmanager
async def open_raw_link(stack: Stack, permissions: list[str]) -> AsyncIterator[Link]:
    """A link with a grant for only ``permissions`` (P2PModule always asks for all)."""
    app = stack.config.apps[0]
    client = CloudClient(stack.cloud.url, app.key, app.secret, timeout=5)
    try:
        grant, _ = await client.get_grant("DEMO", "cam1", permissions)
        info = Xp2pInfo.parse(stack.device.xp2p_info or "")

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            return await client.connect("DEMO", "cam1", offer)

        link = await open_link(
            stack.device.config.link,
            signal,
            fingerprint=info.fingerprint,
            grant=grant,
            peer_label="DEMO/cam1",
        )
        try:
            yield link
        finally:
            await link.close()
    finally:
        await client.close()


async def test_commands_need_the_command_permission(stack: Stack) -> None:
    async with open_raw_link(stack, ["live"]) as link:
        response = await link.request("GET", "/command?" + inner("get_device_st", type="live"))
        body = await response.read()
        assert response.status == 403
        assert json.loads(body) == {
            "status": "403",
            "errmsg": "the access grant does not allow command",
        }
        # the grant's own permission still works on the same link
        live = await link.request("GET", "/ipc.flv?action=live&channel=0")
        assert live.status == 200
        live.cancel()
    async with open_raw_link(stack, ["command"]) as link:
        response = await link.request("GET", "/command?" + inner("get_device_st", type="live"))
        assert response.status == 200
        assert await response.read() == b'[{"status":"0","appConnectNum":"0"}]'


async def test_timeout_cancels_and_the_device_keeps_serving(stack: Stack, swap: DeviceSwap) -> None:
    agent = swap.build()
    cancelled = asyncio.Event()

    @agent.user_command
    async def slow(channel: int, command: str) -> dict[str, str]:
        if command == "slow":
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return {"status": "0"}

    await swap.start(agent)
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", DEVICE)
        async with asyncio.timeout(3):  # the viewer's own timeout ends the wait, not 5 s
            result = await module.send_command(
                "cam", "action=user_define&channel=0&cmd=slow", timeout=0.5
            )
        assert result == CommandResult("timeout", 0, None, 408, "no reply within 0.5 s")
        # The viewer cancelled the request: the device stops the handler, nobody waits for it.
        await asyncio.wait_for(cancelled.wait(), 3)
        quick = await module.send_command("cam", "action=user_define&channel=0&cmd=quick")
        assert quick == CommandResult("success", 200, {"status": "0"})
    finally:
        await module.destroy()


async def test_error_when_the_link_is_lost(stack: Stack, module: P2PModule) -> None:
    @stack.device.user_command
    async def close_on_command(channel: int, command: str) -> str:
        await asyncio.sleep(0.1)
        for link in list(stack.device.links):
            await link.close("device gone")
        await asyncio.sleep(5)
        return "never"

    await module.start_p2p_service("cam", DEVICE)
    lost = await module.send_command("cam", "action=user_define&channel=0&cmd=x", timeout=5)
    assert (lost.type, lost.status, lost.errcode) == ("error", 0, 502)
    assert "closed" in lost.errmsg or "lost" in lost.errmsg, lost
    # and on a link that is already closed: an error result, not an exception
    after = await module.send_command("cam", inner("get_device_st", type="live"))
    assert (after.type, after.errcode) == ("error", 502)
    assert "link is closed" in after.errmsg
