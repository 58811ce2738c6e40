"""LiveChannel: one source (a channel at one quality) fanned out to every viewer watching it.

The channel keeps the FLV header, the sequence headers and the current GOP (``GopCache``), so
a new viewer gets a decodable start at once instead of waiting for the next keyframe. Each
viewer has a ``Subscription``: a queue the channel pushes tags into and the viewer's response
drains at the speed its link allows. A viewer that falls more than ``max_lag`` behind skips to
the next keyframe; the queue can never hold more than that much media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from xp2p.flv import FlvHeader, FlvTag, GopCache
from xp2p.media import MediaSource

logger = logging.getLogger("xp2p.device")

#: Hard bound on one viewer's queue whatever the timestamps say (a broken source cannot
#: make the device buffer without limit).
MAX_QUEUE_BYTES = 16 * 1024 * 1024


class Subscription:
    """One viewer's view of a LiveChannel."""

    def __init__(self, channel: LiveChannel, max_lag_ms: int) -> None:
        self.channel = channel
        self._max_lag_ms = max_lag_ms
        self._queue: deque[FlvTag] = deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()
        self._waiting_for_keyframe = False
        self.closed = False
        #: how often this viewer fell behind and jumped to the next keyframe
        self.skips = 0
        self.skipped_bytes = 0

    def push(self, tag: FlvTag) -> None:
        if self.closed:
            return
        if self._waiting_for_keyframe:
            if not (tag.is_video and tag.is_keyframe) and not tag.is_sequence_header:
                return
            if tag.is_video and tag.is_keyframe:
                self._waiting_for_keyframe = False
        self._queue.append(tag)
        self._queued_bytes += len(tag.data)
        if self._lagging():
            self._skip_to_next_keyframe()
        self._ready.set()

    def _lagging(self) -> bool:
        if self._queued_bytes > MAX_QUEUE_BYTES:
            return True
        return self._lag_ms() > self._max_lag_ms

    def _lag_ms(self) -> int:
        """Media time between the oldest and newest queued tags (sequence headers carry no
        media time: one kept across a skip must not count as lag)."""
        oldest = next((t for t in self._queue if not t.is_sequence_header), self._queue[-1])
        return self._queue[-1].timestamp - oldest.timestamp

    def _skip_to_next_keyframe(self) -> None:
        """Drop queued media up to the newest queued keyframe, or, if the queue holds no later
        keyframe, drop it all and resume at the next one the source sends."""
        lag = self._lag_ms()
        keep_from = None
        for index in range(len(self._queue) - 1, 0, -1):
            tag = self._queue[index]
            if tag.is_video and tag.is_keyframe and not tag.is_sequence_header:
                keep_from = index
                break
        queue = list(self._queue)
        dropped = queue if keep_from is None else queue[:keep_from]
        kept = [] if keep_from is None else queue[keep_from:]
        # Sequence headers are never dropped: the decoder needs them after the jump.
        kept = [t for t in dropped if t.is_sequence_header] + kept
        dropped_bytes = sum(len(t.data) for t in dropped if not t.is_sequence_header)
        self.skips += 1
        self.skipped_bytes += dropped_bytes
        logger.warning(
            "viewer on %s fell %d ms behind: skipped %d bytes to the next keyframe (skip #%d)",
            self.channel.name,
            lag,
            dropped_bytes,
            self.skips,
        )
        self._queue = deque(kept)
        self._queued_bytes = sum(len(t.data) for t in kept)
        self._waiting_for_keyframe = keep_from is None

    async def next_batch(self) -> list[FlvTag]:
        """Every tag queued so far (waits for at least one); empty once closed."""
        while not self._queue and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return batch

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self.channel._subscribers.discard(self)


class LiveChannel:
    """Runs one MediaSource and fans its tags out to subscribers."""

    def __init__(
        self, name: str, source_factory: Callable[[], MediaSource], *, max_lag: float = 3.0
    ) -> None:
        self.name = name
        self._source_factory = source_factory
        self._max_lag_ms = int(max_lag * 1000)
        self._gop = GopCache()
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._source: MediaSource | None = None
        self.header = FlvHeader()
        self.tags_seen = 0
        self.failed: str | None = None
        self._startable = asyncio.Event()  # set once ready, or once the source failed

    async def start(self) -> None:
        if self._task is None:
            self._source = self._source_factory()
            self.header = self._source.header
            self._task = asyncio.create_task(self._pump(self._source), name=f"channel-{self.name}")
            logger.info("channel %s: %s", self.name, self._source.description)

    async def _pump(self, source: MediaSource) -> None:
        try:
            async for tag in source.tags():
                self.tags_seen += 1
                self._gop.add(tag)
                if not self._startable.is_set() and self._gop.has_keyframe:
                    self._startable.set()
                for subscription in list(self._subscribers):
                    subscription.push(tag)
            self.failed = "source ended"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken source must not take the device down
            self.failed = f"source failed: {exc}"
            logger.error("channel %s: %s", self.name, self.failed)
        self._startable.set()
        for subscription in list(self._subscribers):
            subscription.close()

    @property
    def ready(self) -> bool:
        """The channel can start a viewer: it has sequence headers and a keyframe."""
        return self._gop.has_keyframe

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._startable.wait(), timeout)
        return self.ready

    def subscribe(self) -> tuple[bytes, Subscription]:
        """The bytes a new viewer starts with (header, sequence headers, GOP) and its queue."""
        subscription = Subscription(self, self._max_lag_ms)
        self._subscribers.add(subscription)
        start = self.header.encode() + b"".join(tag.encode() for tag in self._gop.snapshot())
        return start, subscription

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        """The source is started and has neither failed nor ended (a channel's "online")."""
        return self._task is not None and not self._task.done() and self.failed is None

    def request_keyframe(self) -> None:
        """Ask the source for an IDR soon (``request_keyframe`` command, docs/protocol.md §10)."""
        if self._source is not None:
            self._source.request_keyframe()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._source is not None:
            await self._source.aclose()
            self._source = None
        for subscription in list(self._subscribers):
            subscription.close()
