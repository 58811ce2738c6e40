"""A 4 Mbit/s live stream over a real Link through a lossy 50 ms path, watched for stalls.

The device end serves a synthetic live FLV stream (valid FLV, fixed-size video tags at 25 fps
with real timestamps, one keyframe every two seconds; no encoder runs, CPU is scarce) and
writes each frame when its media time comes. The viewer end's link conditioner adds the
whole 50 ms RTT and drops datagrams at random in both directions. A player with a 500 ms
jitter buffer would stall whenever the frame with media time ``t`` arrives later than
``first_arrival + t + 0.5 s``; it then re-buffers, so its clock moves on by the lateness.

Nothing here asserts the test's own speed: only counts of stalls, frames and bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field, replace

import pytest

from xp2p.flv import FlvHeader, FlvReader, FlvTag, TagType
from xp2p.link import Conditions, IncomingRequest, LinkConfig

from .test_link import LOOPBACK, link_pair

FPS = 25
BITRATE = 4_000_000
GOP = 50
JITTER_BUFFER = 0.5
TAG_OVERHEAD = 15  #: tag header (11) + PreviousTagSize (4)


def synthetic_stream(seconds: float, seed: int = 0) -> list[bytes]:
    """The stream as the pieces a source writes: FLV header + AVC sequence header, then one
    video tag per frame, sized so that the whole runs at BITRATE."""
    rng = random.Random(seed)
    frame_bytes = BITRATE // 8 // FPS - TAG_OVERHEAD
    # A fixed pool of payloads: random enough that nothing compresses, cheap to make.
    pool = [rng.randbytes(frame_bytes) for _ in range(8)]
    avc_config = bytes((0x17, 0x00, 0, 0, 0)) + bytes((1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0))
    pieces = [
        FlvHeader(has_audio=False, has_video=True).encode()
        + FlvTag(TagType.VIDEO, 0, avc_config).encode()
    ]
    for n in range(int(seconds * FPS)):
        keyframe = n % GOP == 0
        # Video tag body: frame type + codec (AVC = 7), AVC NALU packet, composition time 0.
        head = bytes(((0x10 if keyframe else 0x20) | 7, 1, 0, 0, 0))
        body = head + pool[n % len(pool)][len(head) :]
        pieces.append(FlvTag(TagType.VIDEO, n * 1000 // FPS, body).encode())
    return pieces


@dataclass
class StallDetector:
    """What a player with a ``buffer``-second jitter buffer would do with these arrivals."""

    buffer: float = JITTER_BUFFER
    base: float | None = None  #: arrival clock of media time 0 (moves on at each stall)
    frames: int = 0
    stalls: int = 0
    stalled_seconds: float = 0.0
    late_frames: list[tuple[int, float]] = field(default_factory=list)  #: (ms, late by s)

    def frame(self, media_ms: int, arrival: float) -> None:
        self.frames += 1
        if self.base is None:
            self.base = arrival - media_ms / 1000
        due = self.base + media_ms / 1000 + self.buffer
        if arrival > due:
            self.stalls += 1
            self.stalled_seconds += arrival - due
            self.late_frames.append((media_ms, arrival - due))
            self.base += arrival - due  # the player re-buffered: its clock is later now


@dataclass
class LiveRun:
    sent_digest: str = ""
    received_digest: str = ""
    sent_bytes: int = 0
    received_bytes: int = 0
    detector: StallDetector = field(default_factory=StallDetector)
    source_late: float = 0.0  #: worst lateness of the source's own writes (a busy machine)


async def run_live(conditions: Conditions, seconds: float) -> LiveRun:
    pieces = synthetic_stream(seconds)
    run = LiveRun()
    sent = hashlib.sha256()
    loop = asyncio.get_running_loop()

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200, [("content-type", "video/x-flv")])
        start = loop.time()
        for n, piece in enumerate(pieces):
            # Piece 0 is the header; frame n - 1 is due at its media time.
            due = start + max(0, n - 1) / FPS
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            run.source_late = max(run.source_late, -delay)
            sent.update(piece)
            run.sent_bytes += len(piece)
            await request.write(piece)

    viewer_config = replace(LOOPBACK, connect_timeout=15.0, conditions=conditions)
    async with link_pair(handler, viewer_config, LOOPBACK) as (viewer, _device):
        response = await viewer.request("GET", "/ipc.flv", timeout=15.0)
        assert response.status == 200
        reader = FlvReader()
        received = hashlib.sha256()
        async for chunk in response:
            now = loop.time()
            received.update(chunk)
            run.received_bytes += len(chunk)
            for item in reader.feed(chunk):
                if isinstance(item, FlvTag) and item.is_video and len(item.data) > 100:
                    run.detector.frame(item.timestamp, now)
        reader.close()
    run.sent_digest, run.received_digest = sent.hexdigest(), received.hexdigest()
    return run


@pytest.mark.timeout(120)
async def test_live_stream_at_1_percent_loss_never_stalls() -> None:
    assert LinkConfig().congestion_control == "xp2p-bbr"
    seconds = 16.0
    run = await run_live(Conditions(rtt_ms=50, loss=0.01, seed=11), seconds)
    detector = run.detector
    assert run.received_bytes == run.sent_bytes
    assert run.received_digest == run.sent_digest
    assert detector.frames == int(seconds * FPS)
    assert detector.stalls == 0, (detector.late_frames[:5], f"source late {run.source_late:.2f}s")


@pytest.mark.timeout(120)
async def test_live_stream_at_5_percent_loss_keeps_flowing() -> None:
    seconds = 12.0
    run = await run_live(Conditions(rtt_ms=50, loss=0.05, seed=12), seconds)
    detector = run.detector
    assert run.received_digest == run.sent_digest
    assert detector.frames == int(seconds * FPS)
    # Every frame came, and (nearly) all of them inside the jitter buffer: at 5 % loss some
    # frames wait for a retransmission or two, but the stream must not fall behind.
    assert detector.stalls <= 2, (detector.late_frames[:5], f"source late {run.source_late:.2f}s")
    assert detector.stalled_seconds <= 1.0
