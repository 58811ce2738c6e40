"""What the recordings and playback tests share: real FFmpeg media recorded faster than real
time through the recorder's sans-IO core, and ffprobe checks. (No tests here.)"""

from __future__ import annotations

import functools
import io
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import pytest

from tests.support.stack import PATTERN, Stack
from xp2p.device import DeviceAgent
from xp2p.device.record_index import INDEX_NAME, RecordIndex, Segment, is_end_of_sequence
from xp2p.device.record_store import write_atomically
from xp2p.device.recorder import CloseSegment, SegmentFiles, SegmentRecorder
from xp2p.flv import FlvHeader, FlvReader, FlvTag, starts_gop
from xp2p.media import make_test_flv

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(
    FFPROBE is None, reason="ffprobe missing: apt-get install -y ffmpeg (scripts/setup.sh)"
)
#: PATTERN has a keyframe every 25 frames at 25 fps.
GOP_MS = 1000
FRAME_MS = 40


@functools.cache
def pattern_flv(seconds: float, variant: int = 0) -> bytes:
    """Real H.264 + AAC from FFmpeg (cached: the encode is the slow part). Variants differ in
    picture size, so every frame differs from the other variants' byte for byte."""
    return make_test_flv(seconds, replace(PATTERN, height=PATTERN.height - 16 * variant))


def parse_flv(data: bytes) -> tuple[list[FlvHeader], list[FlvTag]]:
    items = FlvReader().feed(data)
    return (
        [i for i in items if isinstance(i, FlvHeader)],
        [i for i in items if isinstance(i, FlvTag)],
    )


def pattern_tags(seconds: float, variant: int = 0) -> tuple[FlvHeader, list[FlvTag]]:
    headers, tags = parse_flv(pattern_flv(seconds, variant))
    return headers[0], tags


def record(
    folder: Path,
    start_ms: int,
    seconds: float = 7.0,
    segment_ms: int = 2000,
    *,
    variant: int = 0,
    write_index: bool = True,
) -> list[Segment]:
    """Record ``seconds`` of the pattern as if it had been live from ``start_ms`` (unix ms):
    the recorder core with a synthetic wall clock, its actions applied to real files."""
    folder.mkdir(parents=True, exist_ok=True)
    header, tags = pattern_tags(seconds, variant)
    core = SegmentRecorder(segment_ms, header)
    files = SegmentFiles(folder)
    segments: list[Segment] = []
    first = next(t.timestamp for t in tags if starts_gop(t))  # that is live at start_ms
    for tag in tags:
        actions = core.feed(tag, start_ms + tag.timestamp - first)
        files.apply(actions)
        segments += [a.segment for a in actions if isinstance(a, CloseSegment)]
    actions = core.finish()
    files.apply(actions)
    segments += [a.segment for a in actions if isinstance(a, CloseSegment)]
    if write_index:
        old = _existing_index(folder)
        write_atomically(folder / INDEX_NAME, RecordIndex(old + segments).to_json())
    return segments


def make_mp4(path: Path, flv: bytes) -> None:
    """Remux FLV to MP4 with PyAV (stream copy): a clip someone copied onto the camera."""
    with av.open(io.BytesIO(flv), format="flv") as source, av.open(str(path), "w") as out:
        mapping = {s.index: out.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)


async def start_recording_device(stack: Stack, folder: Path, **overrides: Any) -> DeviceAgent:
    """Replace the stack's camera by one that records into (and plays back from) ``folder``."""
    await stack.device.close()
    stack.device = DeviceAgent(
        stack.device_config(recordings_dir=folder, segment_seconds=2, **overrides)
    )
    await stack.device.start()
    await stack.device.wait_signed_in(10)
    return stack.device


def _existing_index(folder: Path) -> list[Segment]:
    path = folder / INDEX_NAME
    return RecordIndex.from_json(path.read_bytes()).segments if path.exists() else []


def media_tags(tags: list[FlvTag]) -> list[FlvTag]:
    """Audio and video frames (FFmpeg's end-of-sequence marker at a file's end is none)."""
    return [
        t
        for t in tags
        if not t.is_sequence_header and not t.is_script and not is_end_of_sequence(t)
    ]


def keyframe_times(folder: Path, segments: list[Segment]) -> dict[bytes, int]:
    """Each keyframe's picture (the tag body) → its unix ms, read back from the files: the
    test pattern draws a frame counter, so every picture is unique."""
    found: dict[bytes, int] = {}
    for segment in segments:
        _, tags = parse_flv((folder / segment.file_name).read_bytes())
        for tag in tags:
            if starts_gop(tag):
                found[tag.data] = segment.start_ms + tag.timestamp
    return found


def frame_times(folder: Path, segments: list[Segment]) -> dict[bytes, int]:
    """Every video frame's body → its unix ms."""
    found: dict[bytes, int] = {}
    for segment in segments:
        _, tags = parse_flv((folder / segment.file_name).read_bytes())
        for tag in tags:
            if tag.is_video and not tag.is_sequence_header:
                found[tag.data] = segment.start_ms + tag.timestamp
    return found


def ffprobe(path: Path) -> dict[str, Any]:
    """Streams, format and the video frames' key flags, decoded by Debian's FFmpeg."""
    assert FFPROBE is not None
    command = [
        FFPROBE,
        "-v",
        "error",
        "-show_streams",
        "-show_format",
        "-show_entries",
        "frame=media_type,key_frame,pts_time",
        "-of",
        "json",
        str(path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_decodes(path: Path, min_seconds: float) -> dict[str, Any]:
    """ffprobe decodes ``path`` as H.264 + AAC whose first video frame is a keyframe."""
    probe = ffprobe(path)
    codecs = sorted(s["codec_name"] for s in probe["streams"])
    assert codecs == ["aac", "h264"], (path.name, codecs)
    video = [f for f in probe["frames"] if f["media_type"] == "video"]
    assert video and video[0]["key_frame"] == 1, path.name
    assert len(video) >= min_seconds * 25 - 1, (path.name, len(video))
    return probe
