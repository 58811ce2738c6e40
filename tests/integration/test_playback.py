"""Playback end to end: recordings on a real device's disk streamed to a real viewer over ICE +
QUIC, paced, steered by the playback commands, and played through the local player."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.recordings import (
    FFPROBE,
    FRAME_MS,
    GOP_MS,
    check_decodes,
    frame_times,
    needs_ffprobe,
    parse_flv,
    record,
    start_recording_device,
)
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.device.record_index import Segment
from xp2p.flv import FlvReader, FlvTag, starts_gop
from xp2p.player.server import PlayerServer
from xp2p.viewer import FlvParams, P2PModule, StreamInfo
from xp2p.viewer.command import CommandResult

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")


@dataclass
class Recorded:
    t0: int  #: unix seconds; the recording runs [t0 + 0.5 s, t0 + 12.5 s) in 2 s segments
    segments: list[Segment]
    folder: Path

    @property
    def frames(self) -> dict[bytes, int]:
        return frame_times(self.folder, self.segments)


@pytest.fixture
async def recorded(stack: Stack, tmp_path: Path) -> Recorded:
    t0 = int(time.time()) - 7200
    folder = tmp_path / "rec" / "ch0"
    segments = record(folder, t0 * 1000 + 500, seconds=12.0)
    await start_recording_device(stack, tmp_path / "rec")
    return Recorded(t0, segments, folder)


class Viewer:
    """One service's events and bytes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.data = bytearray()

    def on_msg(self, event: str, subtype: str, detail: Any) -> None:
        self.events.append((event, subtype, detail))

    def on_data(self, chunk: bytes) -> None:
        self.data += chunk

    def subtypes(self) -> list[str]:
        return [s for e, s, _ in self.events if e == "notify"]

    async def wait_for(self, subtype: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while subtype not in self.subtypes():
            assert time.monotonic() < deadline, f"no {subtype} in {timeout} s: {self.subtypes()}"
            await asyncio.sleep(0.05)

    def tags(self, upto: int | None = None) -> list[FlvTag]:
        data = bytes(self.data if upto is None else self.data[:upto])
        items = FlvReader().feed(data)
        assert sum(not isinstance(i, FlvTag) for i in items) == 1, "one FLV header"
        return [i for i in items if isinstance(i, FlvTag)]


def video(tags: list[FlvTag]) -> list[FlvTag]:
    return [t for t in tags if t.is_video and not t.is_sequence_header]


def assert_monotonic_without_gaps(tags: list[FlvTag]) -> None:
    stamps = [t.timestamp for t in tags if not t.is_script and not t.is_sequence_header]
    assert all(a <= b for a, b in itertools.pairwise(stamps)), "timestamps go back"
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(video(tags))]
    assert max(gaps) <= 100 and min(gaps) > 0, gaps


async def start_playback(
    module: P2PModule, start: int, end: int, viewer: Viewer | None = None
) -> Viewer:
    viewer = viewer or Viewer()
    if not module.has_service("cam"):
        await module.start_p2p_service("cam", DEVICE, msg_callback=viewer.on_msg)
    params = f"action=playback&channel=0&start_time={start}&end_time={end}"
    await module.start_stream("cam", viewer.on_data, FlvParams(params=params))
    return viewer


async def command(module: P2PModule, cmd: str) -> CommandResult:
    return await module.send_command("cam", f"action=inner_define&channel=0&cmd={cmd}")


async def progress(module: P2PModule) -> int:
    result = await command(module, "playback_progress")
    assert result.type == "success" and result.data["status"] == "0", result
    assert isinstance(result.data["progress"], str)
    return int(result.data["progress"])


async def wait_progress(module: P2PModule, at_least: int, timeout: float = 10.0) -> int:
    """Wait until the open playback has played ``at_least`` ms; returns its progress then."""
    seen = 0

    async def reached() -> bool:
        nonlocal seen
        seen = await progress(module)
        return seen >= at_least

    await wait_until(reached, timeout=timeout, interval=0.1, what=f"progress of {at_least} ms")
    return seen


@needs_ffprobe
async def test_playback_crosses_segments_paced_and_ends_with_eof(
    recorded: Recorded, module: P2PModule, tmp_path: Path
) -> None:
    start, end = recorded.t0 + 3, recorded.t0 + 9  # keyframes sit at t0 + n s + 0.5 s
    began = time.monotonic()
    viewer = await start_playback(module, start, end)
    await viewer.wait_for("eof", timeout=30)
    elapsed = time.monotonic() - began
    parsed = next(d for e, s, d in viewer.events if s == "parsed")
    assert parsed["status"] == 200 and parsed["headers"]["content-type"] == "video/x-flv"

    tags = viewer.tags()
    assert viewer.data.startswith(b"FLV\x01")
    assert tags[0].is_metadata and {t.tag_type for t in tags[1:3]} == {8, 9}
    assert all(t.is_sequence_header for t in tags[1:3])
    frames = video(tags)
    assert starts_gop(frames[0]) and frames[0].timestamp == 0
    assert_monotonic_without_gaps(tags)
    # Byte for byte the recorded pictures, from the keyframe before the start to the end,
    # across three segment boundaries.
    times = [recorded.frames[f.data] for f in frames]
    assert times == list(range(recorded.t0 * 1000 + 2500, end * 1000, FRAME_MS))
    duration = frames[-1].timestamp + FRAME_MS
    assert abs(duration - (end - start) * 1000) <= GOP_MS
    assert elapsed >= (end - start) - 1.0  # paced in real time, not sent in a burst
    path = tmp_path / "playback.flv"
    path.write_bytes(bytes(viewer.data))
    probe = check_decodes(path, min_seconds=end - start)
    assert abs(float(probe["format"]["duration"]) - (end - start)) <= GOP_MS / 1000 + 0.1


async def test_pause_sends_nothing_and_resume_continues(
    recorded: Recorded, module: P2PModule
) -> None:
    start, end = recorded.t0 + 1, recorded.t0 + 12
    viewer = await start_playback(module, start, end)
    before = await wait_progress(module, 500)
    assert before < 3000
    result = await command(module, "playback_pause")
    assert result.type == "success" and result.data == {"status": "0"}
    await asyncio.sleep(0.7)  # what was in flight arrives
    paused_at, paused_progress = len(viewer.data), await progress(module)
    await asyncio.sleep(1.5)
    assert len(viewer.data) == paused_at, "bytes arrived while paused"
    assert await progress(module) == paused_progress
    assert "eof" not in viewer.subtypes()  # the response stays open
    result = await command(module, "playback_resume")
    assert result.type == "success" and result.data == {"status": "0"}
    await wait_progress(module, paused_progress + 1000)
    await wait_until(lambda: len(viewer.data) > paused_at, what="bytes after the resume")
    await module.stop_stream("cam")
    tags = viewer.tags()  # still one FLV header: resume does not resend it
    assert_monotonic_without_gaps(tags)
    times = [recorded.frames[f.data] for f in video(tags)]
    assert times == list(range(times[0], times[0] + len(times) * FRAME_MS, FRAME_MS))


async def test_seek_by_time_and_by_progress_lands_on_the_keyframe_before(
    recorded: Recorded, module: P2PModule
) -> None:
    start, end = recorded.t0 + 1, recorded.t0 + 12
    viewer = await start_playback(module, start, end)
    await wait_progress(module, 500)
    frames = recorded.frames

    def video_after(mark: int) -> list[FlvTag]:
        return video(viewer.tags())[len(video(viewer.tags(mark))) :]

    # time=, while paused so the byte stream has a clean before and after.
    await command(module, "playback_pause")
    await asyncio.sleep(0.7)
    mark = len(viewer.data)
    target = (recorded.t0 + 8) * 1000
    result = await command(module, f"playback_seek&time={target // 1000}")
    assert result.type == "success" and result.data == {"status": "0"}
    assert await progress(module) == target - start * 1000
    await command(module, "playback_resume")
    await wait_until(lambda: bool(video_after(mark)), interval=0.1, what="video after the seek")
    after = video_after(mark)
    assert starts_gop(after[0])
    landed = frames[after[0].data]
    assert target - GOP_MS < landed <= target
    assert landed == recorded.t0 * 1000 + 7500  # the keyframe at or before, per the index
    assert 6000 <= await progress(module) <= 9000

    # progress=, while playing.
    mark = len(viewer.data)
    result = await command(module, "playback_seek&progress=2000")
    assert result.type == "success" and result.data == {"status": "0"}
    expected = recorded.t0 * 1000 + 2500  # start + 2 s = t0 + 3 s; its keyframe: t0 + 2.5 s

    def played_since_the_jump() -> int:
        times = [frames[f.data] for f in video_after(mark)]
        return len(times) - times.index(expected) if expected in times else 0

    await wait_until(lambda: played_since_the_jump() >= 25, interval=0.1, what="25 frames")
    await module.stop_stream("cam")
    later = video_after(mark)
    jump = next(i for i, f in enumerate(later) if frames[f.data] == expected)
    assert starts_gop(later[jump])
    times = [frames[f.data] for f in later[jump:]]
    assert times == list(range(expected, expected + len(times) * FRAME_MS, FRAME_MS))
    assert len(times) >= 20
    assert_monotonic_without_gaps(viewer.tags())  # across both seeks


async def test_playback_progress_advances(recorded: Recorded, module: P2PModule) -> None:
    await start_playback(module, recorded.t0 + 1, recorded.t0 + 12)
    first = await wait_progress(module, 200)
    await asyncio.sleep(1.0)  # what is measured
    second = await progress(module)
    assert 700 <= second - first <= 1600, (first, second)


async def test_playback_requests_and_commands_refused_with_reasons(
    recorded: Recorded, module: P2PModule
) -> None:
    t0 = recorded.t0
    await module.start_p2p_service("cam", DEVICE)
    cases = {
        (t0 + 1, t0 + 5): ("(400)", "at least 5 s"),
        (t0 + 5, t0 + 1): ("(400)", "at least 5 s"),
        (t0 + 20, t0 + 40): ("(404)", f"no recordings between {t0 + 20} and {t0 + 40}"),
    }
    for (start, end), (status, reason) in cases.items():
        with pytest.raises(XP2PError) as e:
            await start_playback(module, start, end)
        assert e.value.code == ErrorCode.START_STREAM_FAILED
        assert status in e.value.message and reason in e.value.message, e.value.message
    for params in (
        f"action=playback&start_time=abc&end_time={t0 + 9}",
        f"action=playback&end_time={t0 + 9}",
        f"action=playback&start_time={t0}&end_time=99999999999",
        f"action=playback&channel=x&start_time={t0}&end_time={t0 + 9}",
    ):
        with pytest.raises(XP2PError) as e:
            await module.start_stream("cam", lambda _b: None, FlvParams(params=params))
        assert "(400)" in e.value.message, (params, e.value.message)
    with pytest.raises(XP2PError) as e:
        params = f"action=playback&channel=5&start_time={t0}&end_time={t0 + 9}"
        await module.start_stream("cam", lambda _b: None, FlvParams(params=params))
    assert "(404)" in e.value.message

    # Commands with no playback open on this link.
    for cmd in ("playback_pause", "playback_resume", "playback_progress", "playback_seek&time=1"):
        result = await command(module, cmd)
        assert (result.type, result.errcode) == ("failure", 404), (cmd, result)
        assert "no playback is open" in result.errmsg
    # Bad seeks on an open one.
    await start_playback(module, t0 + 1, t0 + 12)
    for query, reason in (
        (f"time={t0 + 30}", "outside the playback span"),
        (f"time={t0}", "outside the playback span"),
        ("progress=11000", "outside the playback span"),
        ("progress=-5", "progress must be milliseconds"),
        ("progress=1.5", "progress must be milliseconds"),
        (f"time={t0 + 5}&progress=1000", "one of them"),
        ("", "one of them"),
    ):
        result = await command(module, f"playback_seek&{query}")
        assert (result.type, result.errcode) == ("failure", 400), (query, result)
        assert reason in result.errmsg, (query, result.errmsg)
    assert await progress(module) < 3000  # unharmed


async def test_a_grant_without_playback_is_403(
    recorded: Recorded, module: P2PModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = module._cloud
    assert cloud is not None
    original = cloud.get_grant

    async def live_only(product_id: str, device_name: str, permissions: Any = None) -> Any:
        return await original(product_id, device_name, ["live", "command"])

    monkeypatch.setattr(cloud, "get_grant", live_only)
    with pytest.raises(XP2PError) as e:
        await start_playback(module, recorded.t0 + 1, recorded.t0 + 9)
    assert "(403)" in e.value.message and "playback" in e.value.message
    # Live still works on that grant.
    live = Viewer()
    await module.start_stream("cam", live.on_data)
    deadline = time.monotonic() + 10
    while len(live.data) < 10_000:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


@needs_ffprobe
async def test_the_local_player_plays_back(recorded: Recorded, module: P2PModule) -> None:
    player = PlayerServer(module, devices=["DEMO/cam1"])
    await player.start()
    try:
        start = recorded.t0 + 4
        url = player.playback_url("DEMO/cam1", start, start + 5)
        assert FFPROBE is not None
        command = [FFPROBE, "-v", "error", "-show_streams", "-count_frames", "-of", "json", url]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr
        streams = json.loads(stdout)["streams"]
        assert sorted(s["codec_name"] for s in streams) == ["aac", "h264"]
        frames = next(int(s["nb_read_frames"]) for s in streams if s["codec_type"] == "video")
        assert abs(frames - 5 * 25) <= 25  # 5 s, ±1 GOP
        async with aiohttp.ClientSession() as http:
            for query, status in (
                (f"start_time={start}&end_time={start + 2}", 400),
                (f"start_time={start + 30}&end_time={start + 40}", 404),
                ("start_time=x&end_time=9", 400),
                (f"start_time={start}&end_time={start + 5}&channel=7", 404),
            ):
                url = f"{player.url}/playback/DEMO/cam1.flv?{query}&token={player.token}"
                async with http.get(url) as response:
                    assert response.status == status, (query, await response.text())
        # Every playback had its own service, and each is gone once its player left.
        await wait_until(
            lambda: not [s for s in module._services if s.startswith("playback:")],
            what="the playback services to stop",
        )
    finally:
        await player.stop()


async def test_many_playbacks_do_not_disturb_live_viewers(
    recorded: Recorded, module: P2PModule
) -> None:
    # Live and three playbacks on links of their own, as the local player runs them: the
    # seed's one link per device is for apps, and this is the player's case.
    module.one_link_per_device = False
    live = Viewer()
    await module.start_p2p_service("live", DEVICE)
    await module.start_stream("live", live.on_data)
    viewers = []
    for n in range(3):
        viewer = Viewer()
        await module.start_p2p_service(f"pb{n}", DEVICE, msg_callback=viewer.on_msg)
        params = f"action=playback&start_time={recorded.t0 + 2 * n}&end_time={recorded.t0 + 12}"
        await module.start_stream(f"pb{n}", viewer.on_data, FlvParams(params=params))
        viewers.append(viewer)
    await wait_until(lambda: all(len(v.data) > 20_000 for v in viewers), what="every playback")
    size = len(live.data)
    await asyncio.sleep(1.0)
    assert len(live.data) > size + 10_000
    _, tags = parse_flv(bytes(live.data))
    assert starts_gop(video(tags)[0])


async def test_a_playback_holds_a_viewer_slot(
    stack: Stack, tmp_path: Path, module: P2PModule
) -> None:
    t0 = int(time.time()) - 7200
    record(tmp_path / "rec" / "ch0", t0 * 1000 + 500, seconds=12.0)
    await start_recording_device(stack, tmp_path / "rec", max_viewers=1)
    other = P2PModule()
    await other.init(stack.app_params)
    try:
        await start_playback(module, t0 + 1, t0 + 12)
        await other.start_p2p_service("cam", DEVICE)
        params = f"action=playback&start_time={t0 + 1}&end_time={t0 + 12}"
        for flv in (FlvParams(), FlvParams(params=params)):
            with pytest.raises(XP2PError) as e:
                await other.start_stream("cam", lambda _b: None, flv)
            assert "(503)" in e.value.message, e.value.message
        await module.stop_stream("cam")  # frees the slot
        deadline = time.monotonic() + 5
        while True:
            try:
                await other.start_stream("cam", lambda _b: None, FlvParams(params=params))
                break
            except XP2PError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        await other.destroy()


@needs_ffprobe
async def test_playback_of_a_live_recording_follows_the_recorder(
    stack: Stack, tmp_path: Path, module: P2PModule
) -> None:
    """Real camera → recorder → disk → playback, up to and past the present: the session
    reads the segment still being written and crosses into the recorder's next ones."""
    await start_recording_device(stack, tmp_path / "rec")
    recordings = stack.device.routes.channels[0].recordings
    assert recordings is not None
    index = recordings.store.index
    deadline = time.monotonic() + 30
    while not index.segments or index.segments[-1].end_ms - index.segments[0].start_ms < 4000:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    now = int(time.time())
    start, end = now - 3, now + 3
    viewer = await start_playback(module, start, end)
    await viewer.wait_for("eof", timeout=30)
    await stack.device.close()

    tags = viewer.tags()
    frames = video(tags)
    assert starts_gop(frames[0])
    assert_monotonic_without_gaps(tags)
    segments = [s for s in index.segments if s.start_ms < end * 1000]
    assert len(segments) >= 3  # it crossed from the growing segment into new ones
    recorded = frame_times(tmp_path / "rec" / "ch0", segments)
    times = [recorded[f.data] for f in frames]
    assert all(b - a == FRAME_MS for a, b in itertools.pairwise(times)), "a frame is missing"
    assert start * 1000 - GOP_MS < times[0] <= start * 1000
    assert end * 1000 - 2 * FRAME_MS <= times[-1] < end * 1000
    path = tmp_path / "live-playback.flv"
    path.write_bytes(bytes(viewer.data))
    check_decodes(path, min_seconds=end - start)
