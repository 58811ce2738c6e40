"""Test helpers (not tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from xp2p.flv import FlvHeader, FlvReader, FlvTag
from xp2p.media import MediaSource


class Recorder:
    """msg_callback and data_callback of one service, kept for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.data = bytearray()
        self.got_data = asyncio.Event()

    def on_msg(self, event: str, subtype: str, detail: Any) -> None:
        self.events.append((event, subtype, detail))

    def on_data(self, chunk: bytes) -> None:
        self.data += chunk
        self.got_data.set()

    def subtypes(self) -> list[str]:
        return [subtype for event, subtype, _ in self.events if event == "notify"]

    async def wait_for(self, subtype: str, timeout: float) -> float:
        start = time.monotonic()
        while subtype not in self.subtypes():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"no {subtype!r} within {timeout} s: {self.subtypes()}")
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def wait_bytes(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.data) < n:
            assert time.monotonic() < deadline, f"only {len(self.data)} bytes in {timeout} s"
            await asyncio.sleep(0.05)


class TeeSource(MediaSource):
    """Records every tag the real test pattern yields, so the test can compare byte for byte
    what the device's source produced with what the viewer received."""

    def __init__(self, inner: MediaSource, log: list[FlvTag]) -> None:
        self.inner = inner
        self.header = inner.header
        self.description = inner.description
        self.log = log

    async def _tags(self) -> AsyncIterator[FlvTag]:
        async for tag in self.inner.tags():
            self.log.append(tag)
            yield tag

    def tags(self) -> AsyncIterator[FlvTag]:
        return self._tags()

    async def aclose(self) -> None:
        await self.inner.aclose()


def parse(data: bytes) -> tuple[list[FlvHeader], list[FlvTag]]:
    items = FlvReader().feed(data)
    return (
        [i for i in items if isinstance(i, FlvHeader)],
        [i for i in items if isinstance(i, FlvTag)],
    )
