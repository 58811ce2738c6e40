"""get_month_record, get_record_index and get_file_list over a real link (real cloud, device
and viewer, ICE + QUIC on this machine), answered from recordings on disk."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.recordings import make_mp4, pattern_flv, record, start_recording_device
from tests.support.stack import Stack
from xp2p.device.record_index import Segment
from xp2p.viewer import P2PModule, StreamInfo
from xp2p.viewer.command import CommandResult

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")


@dataclass
class Recorded:
    t0: int  #: unix seconds; recordings run [t0 + 0.5 s, t0 + 12.5 s) and [t0 + 60, t0 + 66)
    segments: list[Segment]
    folder: Path  #: the channel folder


@pytest.fixture
async def recorded(stack: Stack, tmp_path: Path) -> Recorded:
    t0 = int(time.time()) - 7200
    folder = tmp_path / "rec" / "ch0"
    segments = record(folder, t0 * 1000 + 500, seconds=12.0)
    segments += record(folder, (t0 + 60) * 1000, seconds=6.0, variant=1)
    make_mp4(folder / "clip.mp4", pattern_flv(3.0))
    os.utime(folder / "clip.mp4", (t0 + 300, t0 + 300))
    (folder / "door.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))
    os.utime(folder / "door.jpg", (t0 + 200, t0 + 200))
    await start_recording_device(stack, tmp_path / "rec")
    return Recorded(t0, segments, folder)


async def command(module: P2PModule, cmd: str) -> CommandResult:
    return await module.send_command("cam", f"action=inner_define&channel=0&cmd={cmd}")


async def test_get_record_index_merges_segments_into_spans(
    recorded: Recorded, module: P2PModule
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    t0 = recorded.t0
    result = await command(module, f"get_record_index&start_time={t0 - 100}&end_time={t0 + 100}")
    assert result.type == "success", result
    assert result.data == {
        "video_list": [
            {"start_time": str(t0), "end_time": str(t0 + 13)},  # six segments, one span
            {"start_time": str(t0 + 60), "end_time": str(t0 + 66)},
        ]
    }
    # Clipped to the query.
    result = await command(module, f"get_record_index&start_time={t0 + 5}&end_time={t0 + 62}")
    assert result.data == {
        "video_list": [
            {"start_time": str(t0 + 5), "end_time": str(t0 + 13)},
            {"start_time": str(t0 + 60), "end_time": str(t0 + 62)},
        ]
    }
    result = await command(module, f"get_record_index&start_time={t0 + 20}&end_time={t0 + 50}")
    assert result.type == "success" and result.data == {"video_list": []}
    # The raw reply is JSON text with every number a string, as the seed's devices send it.
    service_link = module._service("cam").link
    raw = await service_link.request(
        "GET",
        f"/command?action=inner_define&channel=0&cmd=get_record_index"
        f"&start_time={t0 + 59}&end_time={t0 + 61}",
    )
    assert raw.status == 200
    body = json.loads(await raw.read())
    assert body == {"video_list": [{"start_time": str(t0 + 60), "end_time": str(t0 + 61)}]}


async def test_get_month_record_is_a_utc_day_bitmap(recorded: Recorded, module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    day = datetime.fromtimestamp(recorded.t0, UTC)
    result = await command(module, f"get_month_record&time={day:%Y%m}")
    assert result.type == "success", result
    bits = int(result.data["video_list"])
    assert isinstance(result.data["video_list"], str) and 0 <= bits < 2**32
    assert bits & (1 << (day.day - 1))
    # The live recording adds today; nothing else is recorded this month.
    today = datetime.now(UTC)
    expected = 1 << (day.day - 1)
    if (today.year, today.month) == (day.year, day.month):
        expected |= 1 << (today.day - 1)
    assert bits == expected
    result = await command(module, "get_month_record&time=200001")
    assert result.data == {"video_list": "0"}


async def test_get_file_list_lists_segments_and_dropped_files(
    recorded: Recorded, module: P2PModule
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    t0, folder = recorded.t0, recorded.folder
    result = await command(module, f"get_file_list&start_time={t0}&end_time={t0 + 400}")
    assert result.type == "success", result
    listing = result.data["file_list"]
    names = [f["file_name"] for f in listing]
    assert names == [s.file_name for s in recorded.segments] + ["door.jpg", "clip.mp4"]
    for entry in listing:
        assert set(entry) == {"file_name", "file_size", "file_type", "start_time", "end_time"}
        assert all(isinstance(v, str) for v in entry.values())
        assert int(entry["file_size"]) == (folder / entry["file_name"]).stat().st_size
    first = listing[0]
    assert (first["file_type"], first["start_time"], first["end_time"]) == (
        "0",
        str(t0),
        str(t0 + 3),
    )
    clip = listing[-1]
    assert clip["file_type"] == "0" and clip["end_time"] == str(t0 + 300)
    assert int(clip["end_time"]) - int(clip["start_time"]) in (3, 4)  # probed: 3 s
    door = listing[-2]
    assert (door["file_type"], door["start_time"], door["end_time"]) == (
        "1",
        str(t0 + 200),
        str(t0 + 200),
    )
    pictures = await command(
        module, f"get_file_list&start_time={t0}&end_time={t0 + 400}&file_type=1"
    )
    assert [f["file_name"] for f in pictures.data["file_list"]] == ["door.jpg"]
    videos = await command(
        module, f"get_file_list&start_time={t0 + 61}&end_time={t0 + 63}&file_type=0"
    )
    assert [f["file_name"] for f in videos.data["file_list"]] == [
        s.file_name for s in recorded.segments[6:8]
    ]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("get_record_index&end_time=100", "start_time is required"),
        ("get_record_index&start_time=200&end_time=100", "end_time is before start_time"),
        ("get_record_index&start_time=-5&end_time=100", "start_time must be unix seconds"),
        ("get_record_index&start_time=1e9&end_time=2e9", "start_time must be unix seconds"),
        ("get_record_index&start_time=0&end_time=99999999999", "end_time must be unix seconds"),
        ("get_file_list&start_time=0&end_time=10&file_type=2", "file_type must be 0"),
        ("get_file_list&start_time=0&end_time=x", "end_time must be unix seconds"),
        ("get_month_record", "time must be YYYYMM"),
        ("get_month_record&time=2026", "time must be YYYYMM"),
        ("get_month_record&time=202613", "time must be YYYYMM"),
        ("get_month_record&time=%EF%BC%92026011", "time must be YYYYMM"),
    ],
)
async def test_bad_parameters_are_400_with_a_reason(
    recorded: Recorded, module: P2PModule, query: str, reason: str
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    result = await command(module, query)
    assert (result.type, result.status, result.errcode) == ("failure", 400, 400), result
    assert reason in result.errmsg
    # The device still answers everyone.
    result = await command(module, "get_month_record&time=200001")
    assert result.type == "success"


async def test_unknown_channel_is_404(recorded: Recorded, module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    result = await module.send_command(
        "cam", "action=inner_define&channel=3&cmd=get_record_index&start_time=0&end_time=9"
    )
    assert (result.type, result.errcode) == ("failure", 404)


async def test_a_device_that_does_not_record_answers_empty_lists(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    now = int(time.time())
    month = await command(module, f"get_month_record&time={datetime.now(UTC):%Y%m}")
    spans = await command(module, f"get_record_index&start_time=0&end_time={now}")
    files = await command(module, f"get_file_list&start_time=0&end_time={now}")
    assert month.data == {"video_list": "0"}
    assert spans.data == {"video_list": []}
    assert files.data == {"file_list": []}


async def test_xp2p_records_prints_days_spans_and_files(
    recorded: Recorded,
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xp2p.cli import build_parser
    from xp2p.cli.records import stamp

    app = stack.config.apps[0]
    monkeypatch.setenv("XP2P_APP_SECRET", app.secret)
    base = ["records", "DEMO/cam1", "--cloud", stack.cloud.url, "--app-key", app.key]
    t0 = recorded.t0
    day = datetime.fromtimestamp(t0, UTC)

    args = build_parser().parse_args([*base, "--month", f"{day:%Y%m}"])
    await args.run(args, asyncio.Event())
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "days with recordings" in x)
    assert line.startswith(f"DEMO/cam1 channel 0: days with recordings in {day:%Y-%m} (UTC): ")
    assert str(day.day) in line.rpartition(": ")[2].split(", ")

    since = datetime.fromtimestamp(t0 - 100, UTC).isoformat()
    until = datetime.fromtimestamp(t0 + 400, UTC).replace(tzinfo=None).isoformat()  # naive: UTC
    args = build_parser().parse_args([*base, "--from", since, "--to", until, "--files"])
    await args.run(args, asyncio.Event())
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert f"  {stamp(t0)} -> {stamp(t0 + 13)}  (0m13s)" in lines
    assert f"  {stamp(t0 + 60)} -> {stamp(t0 + 66)}  (0m06s)" in lines
    assert "files (11):" in lines
    assert any(x.startswith("  door.jpg  picture  64 B  ") for x in lines)
    assert any(x.startswith("  clip.mp4  video  ") for x in lines)
    for segment in recorded.segments:
        assert any(x.startswith(f"  {segment.file_name}  video  ") for x in lines)
    assert app.secret not in captured.out + captured.err
