"""Media sources: the test pattern, file loops and URLs, paced in real time off the loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import av
import pytest
from aiohttp import web

from tests.support.procs import free_port
from xp2p.flv import (
    FlvHeader,
    FlvReader,
    FlvTag,
    SoundFormat,
    VideoCodec,
    hevc_nal_type,
    hvcc_nal_units,
    split_nal_units,
    starts_gop,
)
from xp2p.media import (
    FileSource,
    MediaError,
    MediaSource,
    TestPatternConfig,
    TestPatternSource,
    UrlSource,
    make_test_flv,
    remux_items,
)

SMALL = TestPatternConfig(width=320, height=240, fps=25, gop=25, bitrate=300_000)


def media_tags(tags: Iterable[FlvTag]) -> list[FlvTag]:
    return [t for t in tags if not (t.is_script or t.is_sequence_header)]


async def collect(source: MediaSource, media_ms: int) -> list[FlvTag]:
    """Tags until ``media_ms`` of media has been yielded (by timestamp)."""
    out: list[FlvTag] = []
    first: int | None = None
    async for tag in source.tags():
        out.append(tag)
        if tag.is_script or tag.is_sequence_header:
            continue
        first = tag.timestamp if first is None else first
        if tag.timestamp - first >= media_ms:
            break
    return out


def assert_starts_like_a_live_stream(tags: list[FlvTag]) -> None:
    assert tags[0].is_metadata
    assert tags[1].video_codec == VideoCodec.AVC and tags[1].is_sequence_header
    assert tags[2].sound_format == SoundFormat.AAC and tags[2].is_sequence_header
    assert starts_gop(tags[3])


def assert_monotonic(tags: list[FlvTag]) -> None:
    media = media_tags(tags)
    for kind in ("is_video", "is_audio"):
        stamps = [t.timestamp for t in media if getattr(t, kind)]
        assert stamps, kind
        assert all(a < b for a, b in itertools.pairwise(stamps)), kind
    overall = [t.timestamp for t in media]
    # The muxer interleaves by decode time; allow one frame of audio/video skew.
    assert all(b >= a - 50 for a, b in itertools.pairwise(overall))


def assert_headers_once(tags: list[FlvTag]) -> None:
    assert sum(t.is_metadata for t in tags) == 1
    assert sum(t.is_sequence_header for t in tags) == 2


# -- test pattern ----------------------------------------------------------------------------


async def test_test_pattern_headers_keyframe_monotonic_and_paced() -> None:
    threads_before = threading.active_count()
    source = TestPatternSource(SMALL)
    assert source.description == "test pattern 320x240@25 H.264 300 kbit/s + AAC 440 Hz"
    started = time.monotonic()
    tags = await collect(source, 1000)
    elapsed = time.monotonic() - started
    await source.aclose()
    assert_starts_like_a_live_stream(tags)
    assert_monotonic(tags)
    assert_headers_once(tags)
    assert elapsed >= 0.8  # 1 s of media is not delivered faster than real time
    assert source.header == FlvHeader(has_audio=True, has_video=True)
    assert threading.active_count() == threads_before


async def test_test_pattern_without_audio() -> None:
    source = TestPatternSource(TestPatternConfig(width=160, height=120, audio=False))
    tags = await collect(source, 200)
    await source.aclose()
    assert source.header == FlvHeader(has_audio=False, has_video=True)
    assert not any(t.is_audio for t in tags)
    assert tags[0].is_metadata and tags[1].is_sequence_header and starts_gop(tags[2])


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="codec"):
        TestPatternConfig(codec="vp8")
    with pytest.raises(ValueError, match="even"):
        TestPatternConfig(width=641)


def test_make_test_flv_decodes_with_ffprobe(tmp_path: Path) -> None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe is not installed (apt-get install -y ffmpeg)")
    path = tmp_path / "pattern.flv"
    path.write_bytes(make_test_flv(2.0, TestPatternConfig(width=480, height=270, gop=25)))
    command = [ffprobe, "-v", "error", "-count_frames", "-show_streams", "-show_format"]
    result = subprocess.run(
        [*command, "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    info = json.loads(result.stdout)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (480, 270)
    assert 49 <= int(streams["video"]["nb_read_frames"]) <= 51
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["sample_rate"]) == 44100
    assert 1.9 <= float(info["format"]["duration"]) <= 2.2
    assert not result.stderr.strip()


def test_hevc_pattern_is_codec_id_12_and_decodes() -> None:
    config = TestPatternConfig(width=320, height=240, gop=10, codec="hevc")
    items = FlvReader().feed(make_test_flv(1.0, config))
    tags = [t for t in items if isinstance(t, FlvTag)]
    video = [t for t in tags if t.is_video]
    assert all(t.video_codec == VideoCodec.HEVC and not t.is_enhanced for t in video)
    assert all(t.data[0] & 0x0F == 12 for t in video)
    # onMetaData announces codec id 12 too, not Enhanced RTMP's FourCC.
    meta = tags[0].data
    at = meta.index(b"\x00\x0cvideocodecid\x00") + 15
    assert struct.unpack(">d", meta[at : at + 8])[0] == 12.0

    seq = video[0]
    assert seq.is_sequence_header and seq.data[:5] == b"\x1c\x00\x00\x00\x00"
    length_size, parameter_sets = hvcc_nal_units(seq.data[5:])
    assert {32, 33, 34} <= {hevc_nal_type(n) for n in parameter_sets}  # VPS, SPS, PPS
    frames = [t for t in video if not t.is_sequence_header]
    assert starts_gop(frames[0]) and sum(starts_gop(t) for t in frames) in (3, 4)

    # Rebuild Annex B from the record and the length-prefixed NAL units and decode it:
    # proof the tags carry the complete bitstream, not just the right-looking bytes.
    decoder = av.CodecContext.create("hevc", "r")
    start_code = b"\x00\x00\x00\x01"
    decoded = []
    for i, tag in enumerate(frames):
        nals = split_nal_units(tag.data[5:], length_size)
        if tag.is_keyframe:
            assert any(16 <= hevc_nal_type(n) <= 21 for n in nals)  # an IRAP picture
        units = (parameter_sets if i == 0 else []) + nals
        decoded += decoder.decode(av.Packet(b"".join(start_code + n for n in units)))
    decoded += decoder.decode(None)
    assert len(decoded) == len(frames)
    assert {(f.width, f.height) for f in decoded} == {(320, 240)}


def test_hevc_flv_file_loops_as_codec_id_12(tmp_path: Path) -> None:
    # PyAV's FFmpeg (unlike Debian's ffprobe 5.1) demuxes codec id 12; the FLV muxer then
    # writes Enhanced RTMP again, and the source must turn it back into id 12.
    path = tmp_path / "hevc.flv"
    path.write_bytes(make_test_flv(0.4, TestPatternConfig(width=160, height=120, codec="hevc")))
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "hevc"
        assert len(list(container.decode(video=0))) == 10
    items = remux_items(lambda: av.open(str(path)), loop=True)
    tags: list[FlvTag] = []
    for item in items:
        if isinstance(item, FlvTag):
            tags.append(item)
            if item.timestamp > 1000:
                break
    items.close()  # type: ignore[attr-defined]
    assert_headers_once(tags)
    assert_monotonic(tags)
    video = [t for t in tags if t.is_video]
    assert all(t.data[0] & 0x0F == VideoCodec.HEVC for t in video)
    assert video[0].is_sequence_header and starts_gop(video[1])


# -- files ----------------------------------------------------------------------------------


def write_mp4(path: Path, seconds: float) -> None:
    """H.264 with B-frames (x264 defaults) + AAC in MP4, as a phone or NVR would record."""
    graph = (
        f"testsrc2=size=320x240:rate=25:d={seconds},format=yuv420p[out0];"
        f"sine=frequency=440:sample_rate=44100:samples_per_frame=1024:d={seconds}[out1]"
    )
    with av.open(graph, format="lavfi") as source, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "bf": "2"})
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=44100, layout="mono")
        encoders = {source.streams.video[0].index: video, source.streams.audio[0].index: audio}
        for packet in source.demux():
            encoder = encoders[packet.stream.index]
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    frame.pict_type = av.video.frame.PictureType.NONE
                out.mux(encoder.encode(frame))
        for encoder in encoders.values():
            out.mux(encoder.encode(None))


def make_file(tmp_path: Path, kind: str, seconds: float) -> Path:
    path = tmp_path / f"clip.{kind}"
    if kind == "mp4":
        write_mp4(path, seconds)
    else:
        path.write_bytes(make_test_flv(seconds, SMALL))
    return path


@pytest.mark.parametrize("kind", ["mp4", "flv"])
def test_remux_loop_keeps_timestamps_rising(tmp_path: Path, kind: str) -> None:
    path = make_file(tmp_path, kind, 0.6)
    items = remux_items(lambda: av.open(str(path)), loop=True)
    tags: list[FlvTag] = []
    for item in items:
        if isinstance(item, FlvTag):
            tags.append(item)
            if item.is_video and item.timestamp > 2500:  # four passes of 0.6 s
                break
    items.close()  # type: ignore[attr-defined]
    assert_starts_like_a_live_stream(tags)
    assert_headers_once(tags)
    assert_monotonic(tags)
    video = [t.timestamp for t in media_tags(tags) if t.is_video]
    # No hole and no overlap at the seams: the gap is always about one frame (40 ms).
    gaps = {b - a for a, b in itertools.pairwise(video)}
    assert max(gaps) <= 81
    assert sum(starts_gop(t) for t in tags) >= 4


@pytest.mark.parametrize("kind", ["mp4", "flv"])
async def test_file_source_loops_in_real_time(tmp_path: Path, kind: str) -> None:
    path = make_file(tmp_path, kind, 0.4)
    threads_before = threading.active_count()
    source = FileSource(path)
    assert source.header == FlvHeader(has_audio=True, has_video=True)
    started = time.monotonic()
    tags = await collect(source, 1000)  # two and a half passes
    elapsed = time.monotonic() - started
    await source.aclose()
    assert_starts_like_a_live_stream(tags)
    assert_headers_once(tags)
    assert_monotonic(tags)
    assert elapsed >= 0.8
    assert threading.active_count() == threads_before


async def test_file_source_once_ends_at_end_of_file(tmp_path: Path) -> None:
    path = make_file(tmp_path, "flv", 0.3)
    async with FileSource(path, loop=False) as source:
        tags = [tag async for tag in source.tags()]
    video = [t for t in media_tags(tags) if t.is_video]
    assert 7 <= len(video) <= 9


def test_file_source_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"cannot open .*missing\.mp4"):
        FileSource(tmp_path / "missing.mp4")


# -- URLs ------------------------------------------------------------------------------------


async def expect_media_error(source: UrlSource) -> MediaError:
    with pytest.raises(MediaError) as info:
        async for _ in source.tags():
            pass
    await source.aclose()
    return info.value


async def test_url_source_connection_refused_is_media_error() -> None:
    started = time.monotonic()
    error = await expect_media_error(UrlSource(f"http://127.0.0.1:{free_port()}/live.flv"))
    assert "cannot open" in str(error)
    assert time.monotonic() - started < 10


async def test_url_source_open_timeout_and_redacted_credentials() -> None:
    # A server that accepts and then says nothing: only the open timeout ends the wait.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        source = UrlSource(f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", open_timeout=1.0)
        assert "hunter2" not in source.description
        error = await expect_media_error(source)
        assert time.monotonic() - started < 10
        assert "hunter2" not in str(error)
        assert "***@127.0.0.1" in str(error)
    finally:
        server.close()


async def test_url_source_unknown_protocol() -> None:
    await expect_media_error(UrlSource("nosuchproto://example/stream"))


async def test_url_source_remuxes_http_flv() -> None:
    body = make_test_flv(1.0, SMALL)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="video/x-flv")

    app = web.Application()
    app.router.add_get("/live.flv", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with UrlSource(f"http://127.0.0.1:{port}/live.flv", open_timeout=5) as source:
            tags = await collect(source, 400)
    finally:
        await runner.cleanup()
    assert_starts_like_a_live_stream(tags)
    assert_monotonic(tags)


# -- lifecycle -------------------------------------------------------------------------------


async def test_aclose_ends_a_running_iteration_and_stops_the_thread() -> None:
    threads_before = threading.active_count()
    source = TestPatternSource(SMALL)
    received: list[FlvTag] = []
    running = asyncio.Event()

    async def consume() -> None:
        async for tag in source.tags():
            received.append(tag)
            if len(media_tags(received)) >= 5:
                running.set()

    task = asyncio.create_task(consume())
    await running.wait()
    assert threading.active_count() == threads_before + 1
    await source.aclose()
    await asyncio.wait_for(task, 5)  # ends cleanly, no exception
    assert threading.active_count() == threads_before
    await source.aclose()  # idempotent


async def test_break_then_aclose_and_single_iteration() -> None:
    threads_before = threading.active_count()
    source = TestPatternSource(SMALL)
    iterator: AsyncIterator[FlvTag] = source.tags()
    with pytest.raises(RuntimeError, match="only once"):
        source.tags()
    await anext(iterator)
    await source.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(iterator)
    assert threading.active_count() == threads_before


async def test_closed_before_iteration_yields_nothing() -> None:
    source = TestPatternSource(SMALL)
    await source.aclose()
    assert [tag async for tag in source.tags()] == []
