"""The baseline of bench/first_frame.py: HTTP-FLV over TCP through a user-space delay proxy.

``DelayProxy`` stands for a path with the same round trip as the conditioner gives the P2P
link: setting up a connection costs one RTT (the TCP handshake: SYN, SYN-ACK), and every chunk
is held ``rtt/2`` in each direction, in order. It does not model a congestion window: the
kernel's TCP runs on loopback under it, so a response goes out at once and the baseline is
the ideal "one RTT from request to data" fetch (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass

from xp2p.flv import FlvHeader, FlvReader, FlvTag

CHUNK = 64 * 1024
_Address = tuple[str, int]


def is_first_keyframe(item: FlvHeader | FlvTag) -> bool:
    """A coded video keyframe: what a player needs before it can show a picture."""
    return (
        isinstance(item, FlvTag)
        and item.is_video
        and item.is_keyframe
        and not item.is_sequence_header
    )


class KeyframeWatch:
    """Feeds FLV bytes as they arrive and notes when the first keyframe tag is complete."""

    def __init__(self) -> None:
        self._reader = FlvReader()
        self.done = asyncio.get_running_loop().create_future()
        self.received = 0
        self.first_byte_at: float | None = None
        self.keyframe_size = 0  #: bytes of the keyframe tag
        self.keyframe_end = 0  #: stream offset just past the keyframe tag
        #: (monotonic time, bytes received so far) for every chunk until the keyframe
        self.timeline: list[tuple[float, int]] = []
        self._offset = 0

    def feed(self, chunk: bytes) -> None:
        now = time.monotonic()
        if self.first_byte_at is None:
            self.first_byte_at = now
        self.received += len(chunk)
        if self.done.done():
            return
        self.timeline.append((now, self.received))
        for item in self._reader.feed(chunk):
            self._offset += len(item.encode()) if isinstance(item, FlvHeader) else item.size
            if is_first_keyframe(item):
                assert isinstance(item, FlvTag)
                self.keyframe_size = item.size
                self.keyframe_end = self._offset
                self.done.set_result(now)
                return


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that adds ``rtt_ms`` to the path it stands in front of."""

    def __init__(self, upstream: _Address, rtt_ms: float) -> None:
        self.upstream = upstream
        self.rtt = rtt_ms / 1000.0
        self._server: asyncio.Server | None = None
        self._address: _Address | None = None
        #: client address -> set once the emulated handshake is done and upstream is open
        self._established: dict[_Address, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._address = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _future(self, client: _Address) -> asyncio.Future[None]:
        future = self._established.get(client)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._established[client] = future
        return future

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection through the proxy; returns once the emulated handshake is over."""
        assert self._address is not None
        reader, writer = await asyncio.open_connection(*self._address)
        _nodelay(writer)
        client = writer.get_extra_info("sockname")[:2]
        try:
            await asyncio.wait_for(self._future(client), 10.0)
        finally:
            self._established.pop(client, None)
        return reader, writer

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")[:2]
        established = self._future(client)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            await asyncio.sleep(self.rtt)  # SYN out, SYN-ACK back
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            _nodelay(upstream_writer)
            if not established.done():
                established.set_result(None)
            half = self.rtt / 2
            await asyncio.gather(
                self._pump(reader, upstream_writer, half),
                self._pump(upstream_reader, writer, half),
            )
        except (OSError, asyncio.CancelledError) as exc:
            if not established.done():
                established.set_exception(ConnectionError(f"proxy: {exc!r}"))
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        """Copy in order, each chunk ``delay`` after it was read; EOF follows the data."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(CHUNK):
                    queue.put_nowait((loop.time() + delay, chunk))
            queue.put_nowait((loop.time() + delay, b""))

        task = asyncio.create_task(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()
        except OSError:
            return
        finally:
            task.cancel()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class TcpRun:
    connect_ms: float
    keyframe_ms: float
    keyframe_size: int
    keyframe_end: int


async def fetch_first_keyframe(proxy: DelayProxy, path: str, timeout: float = 10.0) -> TcpRun:
    """One baseline run: a fresh connection, ``GET path``, until the first keyframe tag."""
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(proxy.connect(), timeout)
    connected = time.monotonic()
    watch = KeyframeWatch()
    try:
        # HTTP/1.0 so the body comes unchunked; the server closes when we do.
        sent = time.monotonic()
        writer.write(f"GET {path} HTTP/1.0\r\nHost: device\r\n\r\n".encode())
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in status + b" ":
                raise ConnectionError(f"baseline server answered {status!r}")
            if b"transfer-encoding: chunked" in head.lower():
                raise ConnectionError("baseline server chunked its answer to HTTP/1.0")
            while not watch.done.done():
                chunk = await reader.read(CHUNK)
                if not chunk:
                    raise ConnectionError("baseline stream ended before a keyframe")
                watch.feed(chunk)
        keyframe_at = watch.done.result()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return TcpRun(
        connect_ms=(connected - started) * 1000,
        keyframe_ms=(keyframe_at - sent) * 1000,
        keyframe_size=watch.keyframe_size,
        keyframe_end=watch.keyframe_end,
    )
