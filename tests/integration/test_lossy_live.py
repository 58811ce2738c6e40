"""A 4 Mbit/s live stream over a real Link through a lossy 50 ms path, watched for stalls.

The device end serves the synthetic live FLV stream of ``live_stream.py`` and writes each
frame when its media time comes. The viewer end's link conditioner adds the whole 50 ms RTT
and drops datagrams at random in both directions; ``live_stream.StallDetector`` plays the
player with a 500 ms jitter buffer.

Nothing here asserts the test's own speed: only counts of stalls, frames and bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field, replace

import pytest

from tests.support.links import LOOPBACK, link_pair
from tests.support.live_stream import FPS, LiveWatch, stream_pieces
from xp2p.link import Conditions, IncomingRequest, LinkConfig


@dataclass
class LiveRun:
    sent_digest: str = ""
    sent_bytes: int = 0
    watch: LiveWatch = field(default_factory=LiveWatch)
    source_late: float = 0.0  #: worst lateness of the source's own writes (a busy machine)


async def run_live(conditions: Conditions, seconds: float) -> LiveRun:
    pieces = stream_pieces(seconds)
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
        async for chunk in response:
            run.watch.feed(chunk, loop.time())
        run.watch.reader.close()
    run.sent_digest = sent.hexdigest()
    return run


@pytest.mark.timeout(120)
async def test_live_stream_at_1_percent_loss_never_stalls() -> None:
    assert LinkConfig().congestion_control == "xp2p-bbr"
    seconds = 16.0
    run = await run_live(Conditions(rtt_ms=50, loss=0.01, seed=11), seconds)
    detector = run.watch.detector
    assert run.watch.bytes == run.sent_bytes
    assert run.watch.sha256.hexdigest() == run.sent_digest
    assert detector.frames == int(seconds * FPS)
    assert detector.stalls == 0, (detector.late_frames[:5], f"source late {run.source_late:.2f}s")


@pytest.mark.timeout(120)
async def test_live_stream_at_5_percent_loss_keeps_flowing() -> None:
    seconds = 12.0
    run = await run_live(Conditions(rtt_ms=50, loss=0.05, seed=12), seconds)
    detector = run.watch.detector
    assert run.watch.sha256.hexdigest() == run.sent_digest
    assert detector.frames == int(seconds * FPS)
    # Every frame came, and (nearly) all of them inside the jitter buffer: at 5 % loss some
    # frames wait for a retransmission or two, but the stream must not fall behind.
    assert detector.stalls <= 2, (detector.late_frames[:5], f"source late {run.source_late:.2f}s")
    assert detector.stalled_seconds <= 1.0
