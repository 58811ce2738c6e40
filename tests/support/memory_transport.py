"""An in-memory ``RequestTransport`` pair: a unit-test double for the transport seam.

It carries requests between two ends in one event loop with no framing at all, so a test can
show that ``IncomingRequest``/``ResponseStream`` and whatever serves them (the device's
routes) depend on the seam alone, not on QUIC. The real transport is tested in
tests/integration/test_link.py; this one never stands in for it there.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable

from xp2p.link.errors import LinkError, StreamClosed
from xp2p.link.requests import IncomingRequest, ResponseStream, check_target
from xp2p.link.transport import StreamState
from xp2p.tasks import TaskSet

Handler = Callable[[IncomingRequest], Awaitable[None]]


class MemoryEnd:
    """One end. Back-pressure: a writer waits while the reader has more than ``window``
    bytes it has not taken."""

    _ids = itertools.count(1)

    def __init__(self, handler: Handler | None = None, window: int = 64 * 1024) -> None:
        self.id = next(self._ids)
        self.close_reason = ""
        self.handler = handler
        self.window = window
        self.peer: MemoryEnd | None = None
        self.streams: dict[int, StreamState] = {}
        self._next_stream = itertools.count(0, 4)
        self._closed = False
        self._progress = asyncio.Event()
        self._tasks = TaskSet(f"memory{self.id}")

    @property
    def closed(self) -> bool:
        return self._closed

    def _other(self) -> MemoryEnd:
        assert self.peer is not None
        return self.peer

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        timeout: float = 10.0,
    ) -> ResponseStream:
        if self._closed:
            raise LinkError("closed", f"link is closed ({self.close_reason})")
        try:
            check_target(target)
        except ValueError as exc:
            raise LinkError("bad_request", str(exc)) from exc
        stream_id = next(self._next_stream)
        loop = asyncio.get_running_loop()
        stream = StreamState(stream_id, headers=loop.create_future())
        self.streams[stream_id] = stream
        peer = self._other()
        peer_stream = StreamState(stream_id)
        peer.streams[stream_id] = peer_stream
        raw = [(b":method", method.encode()), (b":path", target.encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers]
        peer._tasks.spawn(peer._serve(peer_stream, raw), f"serve-{stream_id}")
        if body is None:
            stream.finished = True
            peer_stream.body.put_nowait(None)
        elif isinstance(body, bytes):
            await self.write(stream_id, body, end=True)
        else:
            self._tasks.spawn(self._upload(stream_id, body), f"upload-{stream_id}")
        try:
            answer = await asyncio.wait_for(asyncio.shield(stream.headers), timeout)
        except TimeoutError as exc:
            self.cancel(stream_id)
            raise LinkError("request_timeout", f"no response within {timeout:.1f} s") from exc
        return ResponseStream(self, stream, answer)

    async def _upload(self, stream_id: int, body: AsyncIterable[bytes]) -> None:
        try:
            async for chunk in body:
                await self.write(stream_id, chunk)
            await self.write(stream_id, b"", end=True)
        except StreamClosed:
            pass

    async def _serve(self, stream: StreamState, raw: list[tuple[bytes, bytes]]) -> None:
        request = IncomingRequest.from_headers(self, stream, raw)
        try:
            assert request is not None and self.handler is not None
            await self.handler(request)
            if not stream.finished and not stream.closed:
                await self.write(stream.stream_id, b"", end=True)
        except StreamClosed:
            pass
        finally:
            self.streams.pop(stream.stream_id, None)

    def send_response(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]]
    ) -> None:
        peer_stream = self._other().streams.get(stream_id)
        if peer_stream is None or peer_stream.headers is None or peer_stream.headers.done():
            raise StreamClosed(f"stream {stream_id} has no requester waiting")
        raw = [(b":status", str(status).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers]
        peer_stream.headers.set_result(raw)

    async def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed or stream.finished:
            raise StreamClosed(f"stream {stream_id} is closed")
        while self.backlog(stream_id) > self.window:
            await self._progress.wait()
            if stream.closed:
                raise StreamClosed(f"stream {stream_id} was closed by the peer")
        peer_stream = self._other().streams.get(stream_id)
        if peer_stream is None:
            raise StreamClosed(f"stream {stream_id} is gone at the peer")
        if data:
            peer_stream.unread += len(data)
            peer_stream.body.put_nowait(data)
        if end:
            peer_stream.body.put_nowait(None)
        stream.finished = end

    def backlog(self, stream_id: int) -> int:
        peer_stream = self._other().streams.get(stream_id)
        return 0 if peer_stream is None else peer_stream.unread

    def consumed(self, stream: StreamState, size: int) -> None:
        stream.unread -= size
        self._other()._wake()

    def cancel(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.cancelled = True
        _close(stream)
        peer_stream = self._other().streams.get(stream_id)
        if peer_stream is not None:
            _close(peer_stream)
        self._other()._wake()

    def release(self, stream: StreamState) -> None:
        self.streams.pop(stream.stream_id, None)

    async def close(self, reason: str = "closed") -> None:
        for end in (self, self._other()):
            if end._closed:
                continue
            end._closed = True
            end.close_reason = reason
            for stream in end.streams.values():
                _close(stream)
            end._wake()
        await self._tasks.cancel_all()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()


def _close(stream: StreamState) -> None:
    if stream.closed:
        return
    stream.closed = True
    stream.body.put_nowait(None)
    if stream.headers is not None and not stream.headers.done():
        stream.headers.set_exception(LinkError("closed", "stream closed before a response"))
        stream.headers.exception()


def memory_pair(handler: Handler, window: int = 64 * 1024) -> tuple[MemoryEnd, MemoryEnd]:
    """(requester, server) ends joined to each other."""
    requester, server = MemoryEnd(window=window), MemoryEnd(handler, window=window)
    requester.peer, server.peer = server, requester
    return requester, server
