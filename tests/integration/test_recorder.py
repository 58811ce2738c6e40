"""The recorder and its folder: real FFmpeg media cut into segments that each play alone, an
index that survives restarts and crashes, retention, and files people drop in the folder."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shutil
import time
from pathlib import Path

from tests.support.recordings import (
    FRAME_MS,
    GOP_MS,
    check_decodes,
    make_mp4,
    media_tags,
    needs_ffprobe,
    parse_flv,
    pattern_flv,
    pattern_tags,
    record,
    start_recording_device,
)
from tests.support.stack import Stack
from xp2p.device import DeviceAgent
from xp2p.device.record_index import INDEX_NAME, RecordIndex, segment_name
from xp2p.device.record_store import (
    FILE_TYPE_PICTURE,
    FILE_TYPE_VIDEO,
    RecordStore,
    load_index,
)
from xp2p.device.recorder import CloseSegment, SegmentRecorder
from xp2p.device.recordings import ChannelRecordings
from xp2p.flv import FlvHeader, starts_gop

HOUR = 3_600_000
DAY = 24 * HOUR


def now_ms() -> int:
    return int(time.time() * 1000)


def sha256_of_media(tags: list) -> str:  # type: ignore[type-arg]
    digest = hashlib.sha256()
    for tag in media_tags(tags):
        digest.update(bytes([tag.tag_type]) + tag.data)
    return digest.hexdigest()


@needs_ffprobe
def test_segments_are_cut_at_keyframes_and_each_plays_alone(tmp_path: Path) -> None:
    start = now_ms() - HOUR
    segments = record(tmp_path, start, seconds=7.0, segment_ms=2000)
    assert len(segments) == 4  # 2 s + 2 s + 2 s + the last second
    all_tags = []
    for i, segment in enumerate(segments):
        path = tmp_path / segment.file_name
        data = path.read_bytes()
        assert len(data) == segment.size
        headers, tags = parse_flv(data)
        assert headers == [FlvHeader(has_audio=True, has_video=True)]
        assert data.startswith(headers[0].encode())
        # onMetaData, the two sequence headers, then a keyframe at timestamp 0
        kinds = [(t.is_metadata, t.is_sequence_header) for t in tags[:3]]
        assert kinds == [(True, False), (False, True), (False, True)]
        assert {t.tag_type for t in tags[1:3]} == {8, 9}
        assert starts_gop(tags[3]) and tags[3].timestamp == 0
        assert segment.keyframes[0].offset == segment.head_size
        assert [k.timestamp for k in segment.keyframes] == [
            n * GOP_MS for n in range(len(segment.keyframes))
        ]
        if i < len(segments) - 1:
            assert segment.end_ms - segment.start_ms == 2000
            assert segment.end_ms == segments[i + 1].start_ms  # contiguous, no overlap
        check_decodes(path, min_seconds=(segment.end_ms - segment.start_ms) / 1000)
        all_tags += tags
    assert segments[0].start_ms == start
    assert segments[0].file_name == segment_name(start)
    # Byte for byte, the segments hold exactly the source's media, in order.
    _, source = pattern_tags(7.0)
    assert sha256_of_media(all_tags) == sha256_of_media(source)


@needs_ffprobe
async def test_index_survives_a_restart_and_a_crash_cut_segment_is_repaired(
    tmp_path: Path,
) -> None:
    start = now_ms() - HOUR
    segments = record(tmp_path, start, seconds=7.0, segment_ms=3000)
    assert load_index(tmp_path).segments == segments  # a clean restart trusts the index

    # A crash: the last segment was being written (the index never heard of it) and its last
    # tag is half on disk; an index write was interrupted too.
    last = segments[-2]
    assert len(last.keyframes) == 3
    cut = last.keyframes[2].offset + 1000
    (tmp_path / last.file_name).write_bytes((tmp_path / last.file_name).read_bytes()[:cut])
    (tmp_path / INDEX_NAME).write_text(RecordIndex(segments[:-2]).to_json())
    (tmp_path / f"{INDEX_NAME}.abc123.tmp").write_text("{half an ind")
    store = await RecordStore.open(tmp_path, retention_bytes=10**12, retention_days=30)
    repaired = store.index.get(last.file_name)
    assert repaired is not None and not repaired.recording
    assert repaired.size == last.keyframes[2].offset == (tmp_path / last.file_name).stat().st_size
    assert repaired.keyframes == last.keyframes[:2]
    assert repaired.end_ms == last.start_ms + 2 * GOP_MS  # up to its last complete frame
    check_decodes(tmp_path / last.file_name, min_seconds=1.9)
    assert store.index.get(segments[-1].file_name) == segments[-1]  # rescanned: same entry
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # What was repaired is in the index file now.
    on_disk = RecordIndex.from_json((tmp_path / INDEX_NAME).read_bytes())
    assert on_disk.get(last.file_name) == repaired

    # A destroyed index is rebuilt from the files alone, entry for entry.
    (tmp_path / INDEX_NAME).write_bytes(b"\x00garbage")
    rebuilt = load_index(tmp_path)
    assert rebuilt.segments == store.index.segments

    # A segment with no complete keyframe holds nothing playable and goes.
    stub = segment_name(start + 10 * HOUR)
    (tmp_path / stub).write_bytes(FlvHeader().encode() + b"\x09\x00")
    assert stub not in load_index(tmp_path) and not (tmp_path / stub).exists()


async def test_retention_deletes_oldest_segments_by_age_and_by_bytes(tmp_path: Path) -> None:
    old = record(tmp_path, now_ms() - 10 * DAY, seconds=4.0, segment_ms=2000)
    recent = record(tmp_path, now_ms() - HOUR, seconds=7.0, segment_ms=2000)
    store = await RecordStore.open(tmp_path, retention_bytes=10**12, retention_days=7)
    assert store.deleted == [s.file_name for s in old]
    assert [s.file_name for s in store.index.segments] == [s.file_name for s in recent]
    assert not any((tmp_path / s.file_name).exists() for s in old)

    budget = sum(s.size for s in recent[-2:])
    store = await RecordStore.open(tmp_path, retention_bytes=budget, retention_days=7)
    kept = [s.file_name for s in store.index.segments]
    assert kept == [s.file_name for s in recent[-2:]]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("rec_")) == kept
    assert RecordIndex.from_json((tmp_path / INDEX_NAME).read_bytes()).segments == recent[-2:]

    # Retention runs as segments close, too.
    store.retention_bytes = recent[-1].size
    await store.segment_closed(recent[-1])
    assert [s.file_name for s in store.index.segments] == [recent[-1].file_name]


async def test_files_dropped_in_the_folder_are_listed(tmp_path: Path) -> None:
    recorded = record(tmp_path, now_ms() - HOUR, seconds=3.0, segment_ms=2000)
    make_mp4(tmp_path / "holiday.mp4", pattern_flv(3.0))
    (tmp_path / "snap.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / ".hidden.mp4").write_bytes(b"x")
    (tmp_path / "sub.mp4").mkdir()
    os.symlink("/etc/hostname", tmp_path / "link.jpg")
    mtime = now_ms() // 1000 - 600
    os.utime(tmp_path / "holiday.mp4", (mtime, mtime))
    os.utime(tmp_path / "snap.jpg", (mtime + 5, mtime + 5))

    store = await RecordStore.open(tmp_path, retention_bytes=10**12, retention_days=7)
    everything = await store.list_files(0, now_ms() + HOUR)
    names = [f.file_name for f in everything]
    assert names == [s.file_name for s in recorded] + ["holiday.mp4", "snap.jpg"]
    mp4 = everything[-2]
    assert mp4.file_type == FILE_TYPE_VIDEO
    assert mp4.file_size == (tmp_path / "holiday.mp4").stat().st_size
    assert mp4.end_ms == mtime * 1000
    assert abs((mp4.end_ms - mp4.start_ms) - 3000) <= 2 * FRAME_MS  # probed duration
    jpg = everything[-1]
    assert (jpg.file_type, jpg.file_size, jpg.start_ms, jpg.end_ms) == (
        FILE_TYPE_PICTURE,
        104,
        (mtime + 5) * 1000,
        (mtime + 5) * 1000,
    )
    pictures = await store.list_files(0, now_ms() + HOUR, FILE_TYPE_PICTURE)
    assert [f.file_name for f in pictures] == ["snap.jpg"]
    around_mp4 = await store.list_files(mp4.start_ms + 1000, mp4.start_ms + 2000)
    assert [f.file_name for f in around_mp4] == ["holiday.mp4"]


@needs_ffprobe
async def test_a_live_channel_is_recorded(stack: Stack, tmp_path: Path) -> None:
    await stack.device.close()
    folder = tmp_path / "rec"
    began = now_ms()
    stack.device = DeviceAgent(stack.device_config(recordings_dir=folder, segment_seconds=2))
    await stack.device.start()
    channel = stack.device.routes.channels[0]
    recordings = channel.recordings
    assert isinstance(recordings, ChannelRecordings)
    index = recordings.store.index
    deadline = time.monotonic() + 30
    while sum(not s.recording for s in index.segments) < 2:
        assert time.monotonic() < deadline, index.segments
        await asyncio.sleep(0.2)
    growing = [s for s in index.segments if s.recording]
    assert len(growing) == 1 and (folder / "ch0" / growing[0].file_name).exists()
    await stack.device.close()  # finishes the segment being written
    ended = now_ms()

    segments = load_index(folder / "ch0").segments
    assert len(segments) >= 3 and not any(s.recording for s in segments)
    assert RecordIndex.from_json((folder / "ch0" / INDEX_NAME).read_bytes()).segments == segments
    for segment in segments:
        # Dated by the wall clock (the first GOP may come from the channel's cache).
        assert began - 2 * GOP_MS <= segment.start_ms <= segment.end_ms <= ended + GOP_MS
        # The last one may hold a single frame if the device stopped right after a cut.
        seconds = 1.9 if segment is not segments[-1] else 0
        check_decodes(folder / "ch0" / segment.file_name, min_seconds=seconds)
    for a, b in itertools.pairwise(segments):
        assert abs(b.start_ms - a.end_ms) <= FRAME_MS  # contiguous recording
    assert index.spans(0, ended + HOUR)[0].start_ms == segments[0].start_ms
    assert len(index.spans(0, ended + HOUR)) == 1


async def test_recording_survives_its_folder_vanishing(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    await start_recording_device(stack, folder)
    recordings = stack.device.routes.channels[0].recordings
    assert isinstance(recordings, ChannelRecordings)
    recorder, index = recordings.recorder, recordings.store.index
    deadline = time.monotonic() + 30
    while recorder.segments_written < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await asyncio.to_thread(shutil.rmtree, folder / "ch0")  # the SD card is pulled
    while recorder.write_errors < 2:  # it keeps trying, once per keyframe
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    (folder / "ch0").mkdir()  # and put back
    written = recorder.segments_written
    while recorder.segments_written < written + 1:
        assert time.monotonic() < deadline, recorder.write_errors
        await asyncio.sleep(0.1)
    assert stack.device.routes.channels[0].live["high"].running  # live never noticed
    await stack.device.close()
    on_disk = load_index(folder / "ch0").segments
    assert on_disk and all((folder / "ch0" / s.file_name).exists() for s in on_disk)
    assert {s.file_name for s in on_disk} <= {s.file_name for s in index.segments}


def test_a_hole_in_the_source_ends_the_segment() -> None:
    """A subscription that skipped ahead (slow disk) leaves a hole: the segment ends there
    and the next starts at the next keyframe, so no segment has a gap inside."""
    header, tags = pattern_tags(7.0)
    first = next(t.timestamp for t in tags if starts_gop(t))
    core = SegmentRecorder(60_000, header)
    closed = []
    t0 = now_ms()
    for tag in tags:
        if first + 2500 <= tag.timestamp < first + 5200 and not tag.is_sequence_header:
            continue  # skipped
        actions = core.feed(tag, t0 + tag.timestamp - first)
        closed += [a.segment for a in actions if isinstance(a, CloseSegment)]
    closed += [a.segment for a in core.finish() if isinstance(a, CloseSegment)]
    assert [s.start_ms - t0 for s in closed] == [0, 6000]
    assert 2500 <= closed[0].end_ms - t0 < 2500 + FRAME_MS  # the last frame, audio or video
    assert closed[1].end_ms - t0 == 7000
