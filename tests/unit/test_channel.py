"""LiveChannel and Subscription: GOP start for new viewers, bounded lag for slow ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tests.support.waiting import wait_until
from xp2p.device.channel import LiveChannel, Subscription
from xp2p.flv import FlvHeader, FlvReader, FlvTag
from xp2p.media import MediaSource

AVC_SEQ = FlvTag(9, 0, b"\x17\x00\x00\x00\x00" + b"\x01" * 10)
AAC_SEQ = FlvTag(8, 0, b"\xaf\x00\x12\x10")


def video(ts: int, key: bool, size: int = 1000) -> FlvTag:
    return FlvTag(9, ts, (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00" + b"v" * size)


def audio(ts: int) -> FlvTag:
    return FlvTag(8, ts, b"\xaf\x01" + b"a" * 50)


class ListSource(MediaSource):
    """A unit-test double: yields a fixed list of tags, then waits (a live source never ends)."""

    def __init__(self, tags: list[FlvTag]) -> None:
        self.header = FlvHeader()
        self.description = "list"
        self._tags = tags
        self.release = asyncio.Event()

    async def _gen(self) -> AsyncIterator[FlvTag]:
        for tag in self._tags:
            yield tag
            await asyncio.sleep(0)
        await self.release.wait()

    def tags(self) -> AsyncIterator[FlvTag]:
        return self._gen()

    async def aclose(self) -> None:
        self.release.set()


def gop_stream(gops: int, frames: int = 10, step: int = 40) -> list[FlvTag]:
    tags = [AVC_SEQ, AAC_SEQ]
    ts = 0
    for _ in range(gops):
        for i in range(frames):
            tags.append(video(ts, key=i == 0))
            tags.append(audio(ts))
            ts += step
    return tags


async def test_new_viewer_starts_with_header_sequence_headers_and_keyframe() -> None:
    stream = gop_stream(3)
    channel = LiveChannel("t", lambda: ListSource(stream))
    await channel.start()
    assert await channel.wait_ready(2)
    # The GOP cache holds the newest GOP once the source has yielded every tag.
    await wait_until(lambda: channel.tags_seen == len(stream), timeout=2, what="all tags")
    start, subscription = channel.subscribe()
    items = FlvReader().feed(start)
    assert isinstance(items[0], FlvHeader)
    tags = [i for i in items if isinstance(i, FlvTag)]
    assert tags[0] == AVC_SEQ and tags[1] == AAC_SEQ
    assert tags[2].is_video and tags[2].is_keyframe and tags[2].timestamp == 800
    assert channel.viewers == 1
    subscription.close()
    assert channel.viewers == 0
    await channel.aclose()


async def test_slow_viewer_skips_to_next_keyframe_and_stays_bounded() -> None:
    channel = LiveChannel("t", lambda: ListSource([]), max_lag=1.0)
    subscription = Subscription(channel, max_lag_ms=1000)
    # 5 s of media pushed while the viewer reads nothing.
    for tag in gop_stream(gops=5, frames=25):
        subscription.push(tag)
        queued = [t for t in subscription._queue if not t.is_sequence_header]
        if queued:
            assert queued[-1].timestamp - queued[0].timestamp <= 1000
    assert subscription.skips >= 3
    batch = await subscription.next_batch()
    first_video = next(t for t in batch if t.is_video and not t.is_sequence_header)
    assert first_video.is_keyframe, "after a skip the viewer resumes on a keyframe"
    assert first_video.timestamp == 4000, "it resumes at the newest GOP, not an older one"


async def test_viewer_that_keeps_up_never_skips() -> None:
    channel = LiveChannel("t", lambda: ListSource([]), max_lag=1.0)
    subscription = Subscription(channel, max_lag_ms=1000)
    received: list[FlvTag] = []
    for tag in gop_stream(gops=4, frames=25):
        subscription.push(tag)
        received += await subscription.next_batch()
    assert subscription.skips == 0
    assert received == gop_stream(gops=4, frames=25)


async def test_closed_subscription_wakes_its_reader() -> None:
    channel = LiveChannel("t", lambda: ListSource([]))
    subscription = Subscription(channel, max_lag_ms=1000)
    reader = asyncio.create_task(subscription.next_batch())
    await asyncio.sleep(0)  # one turn of the loop: the reader is now waiting
    assert not reader.done()
    subscription.close()
    assert await asyncio.wait_for(reader, 1) == []
