"""Devices with several channels (an NVR): each channel its own source, selected by
``channel=N`` for live video and commands, listed by ``get_nvr_list``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.devices import DeviceSwap
from tests.support.live import Recorder, TeeSource, parse
from tests.support.stack import PATTERN, Stack
from xp2p import ErrorCode, XP2PError
from xp2p.device import ChannelConfig, DeviceAgent
from xp2p.flv import FlvHeader, FlvTag
from xp2p.media import MediaError, MediaSource, TestPatternConfig, TestPatternSource
from xp2p.viewer import CommandResult, FlvParams, P2PModule, StreamInfo

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
FFPROBE = shutil.which("ffprobe")
#: Channel 1 is a different camera: another picture size tells its video apart.
SMALL = TestPatternConfig(width=256, height=144, fps=25, bitrate=200_000, gop=25)


class BrokenSource(MediaSource):
    """A camera that is unplugged: its source fails at once."""

    def __init__(self) -> None:
        self.header = FlvHeader()
        self.description = "unplugged camera"

    async def _tags(self) -> AsyncIterator[FlvTag]:
        raise MediaError("no signal")
        yield  # pragma: no cover - makes this an async generator

    def tags(self) -> AsyncIterator[FlvTag]:
        return self._tags()

    async def aclose(self) -> None:
        pass


class KeyframeSpy(TeeSource):
    """Counts request_keyframe calls reaching this channel's source."""

    def __init__(self, inner: MediaSource, log: list[FlvTag]) -> None:
        super().__init__(inner, log)
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self.inner.request_keyframe()


@pytest.fixture
async def nvr(stack: Stack) -> AsyncIterator[tuple[DeviceAgent, dict[int, KeyframeSpy]]]:
    spies: dict[int, KeyframeSpy] = {}
    logs: dict[int, list[FlvTag]] = {0: [], 1: []}

    def spy(number: int, config: TestPatternConfig) -> KeyframeSpy:
        spies[number] = KeyframeSpy(TestPatternSource(config), logs[number])
        return spies[number]

    swap = DeviceSwap(stack)
    device = await swap.start(
        channels={
            0: ChannelConfig(default=lambda: spy(0, PATTERN), name="front door"),
            1: ChannelConfig(default=lambda: spy(1, SMALL)),
            2: ChannelConfig(default=BrokenSource, name="garage"),
        }
    )
    yield device, spies
    await swap.close()


async def pull(module: P2PModule, channel: int, size: int = 40_000) -> bytes:
    rec = Recorder()
    params = f"action=live&channel={channel}&quality=high"
    await module.start_stream("cam", rec.on_data, FlvParams(params=params))
    try:
        await rec.wait_bytes(size)
    finally:
        await module.stop_stream("cam")
    return bytes(rec.data)


def ffprobe_size(data: bytes, path: Path) -> tuple[int, int]:
    path.write_bytes(data)
    args = ["-v", "error", "-show_streams", "-select_streams", "v", "-of", "json", str(path)]
    probe = subprocess.run(
        [FFPROBE or "ffprobe", *args], capture_output=True, text=True, timeout=60, check=True
    )
    (video,) = json.loads(probe.stdout)["streams"]
    assert video["codec_name"] == "h264"
    return video["width"], video["height"]


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
async def test_each_channel_streams_its_own_source(
    stack: Stack, nvr: tuple[DeviceAgent, dict[int, KeyframeSpy]], tmp_path: Path
) -> None:
    _device, spies = nvr
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", DEVICE)
        streams = {n: await pull(module, n) for n in (1, 0)}
        for number in (9, 2):  # no such channel; a channel whose camera is unplugged
            with pytest.raises(XP2PError) as e:
                await module.start_stream(
                    "cam", lambda _b: None, FlvParams(params=f"action=live&channel={number}")
                )
            assert e.value.code == ErrorCode.START_STREAM_FAILED
            expected = "(404): no channel 9" if number == 9 else "(503): channel DEMO/cam1/ch2"
            assert expected in e.value.message, e.value.message
    finally:
        await module.destroy()
    sizes = {
        n: await asyncio.to_thread(ffprobe_size, data, tmp_path / f"ch{n}.flv")
        for n, data in streams.items()
    }
    assert sizes == {0: (320, 180), 1: (256, 144)}
    for number, data in streams.items():
        _headers, tags = parse(data)
        source = [t.encode() for t in spies[number].log]
        # The sequence headers are the channel's own source's, byte for byte...
        sequence = [t.encode() for t in tags if t.is_sequence_header]
        assert sequence and all(s in source for s in sequence)
        # ...and the media is a contiguous run of that source's tags (sha256 of the run).
        media = [t.encode() for t in tags if not t.is_sequence_header and not t.is_script]
        start = source.index(media[0])
        received = hashlib.sha256(b"".join(media)).hexdigest()
        assert received == hashlib.sha256(b"".join(source[start : start + len(media)])).hexdigest()


async def test_commands_select_the_channel(
    stack: Stack, nvr: tuple[DeviceAgent, dict[int, KeyframeSpy]]
) -> None:
    _device, spies = nvr
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", DEVICE)
        nvr_list = await module.send_command(
            "cam", "action=inner_define&channel=0&cmd=get_nvr_list&nvr=cam1"
        )
        assert nvr_list == CommandResult(
            "success",
            200,
            [
                {"DeviceName": "front door", "Channel": "0", "Online": "1"},
                {"DeviceName": "cam1-ch1", "Channel": "1", "Online": "1"},
                {"DeviceName": "garage", "Channel": "2", "Online": "0"},
            ],
        )
        key = await module.send_command("cam", "action=inner_define&channel=1&cmd=request_keyframe")
        assert key == CommandResult("success", 200, {"status": "0"})
        assert (spies[0].keyframe_requests, spies[1].keyframe_requests) == (0, 1)
        missing = await module.send_command(
            "cam", "action=inner_define&channel=9&cmd=request_keyframe"
        )
        assert (missing.type, missing.status, missing.errcode) == ("failure", 404, 404)
        assert missing.errmsg == "no channel 9"
        ptz = json.dumps({"topic": "ptz", "data": {"cmd": "ptz_down_press"}, "message_id": 7})
        for channel in (1, 9):
            result = await module.send_command(
                "cam", f"action=user_define&channel={channel}&cmd={ptz}"
            )
            assert result.ok if channel == 1 else result.errcode == 404
        simulator = stack.device.routes.state.ptz
        assert simulator is not None
        heads = simulator.heads
        assert set(heads) == {1} and heads[1].moving == "down"
    finally:
        await module.destroy()
