"""One neighbour: a link and the bidirectional message pipe on it (`POST /swarm`).

The opener of the link sends ``POST /swarm``: its streamed request body carries the opener's
framed messages (`xp2p.swarm.protocol.frame`), the response body the acceptor's. Both ends
then look the same to the service: `send` a message, get each incoming one through
``on_message``, and ``on_closed`` once when the pipe ends for any reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable

from xp2p.link import IncomingRequest, Link, LinkError, StreamClosed
from xp2p.swarm import protocol as proto
from xp2p.tasks import TaskSet

logger = logging.getLogger("xp2p.viewer.swarm")

SWARM_PATH = "/swarm"
#: Bytes queued for a neighbour before new chunk data for it is refused: a neighbour that
#: cannot take what it asked for must not grow this viewer's memory.
MAX_QUEUED = 4 * 1024 * 1024

MessageHandler = Callable[["PeerPipe", proto.Message], None]
CloseHandler = Callable[["PeerPipe", str], None]


class PeerPipe:
    def __init__(
        self,
        peer_id: str,
        link: Link,
        *,
        on_message: MessageHandler,
        on_closed: CloseHandler,
        opener: bool,
    ) -> None:
        self.peer_id = peer_id
        self.link = link
        self.opener = opener
        self._on_message = on_message
        self._on_closed = on_closed
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.closed = False
        self.close_reason = ""
        self.hello: proto.Hello | None = None  #: the neighbour's, once it came
        self.received = 0
        self.chunk_bytes = 0  #: of ``received``, the chunks themselves (their wire form)
        #: What the neighbour announced lately (kept even while this viewer pulls nothing,
        #: so a pull that starts knows at once who holds what).
        self.haves: set[int] = set()
        self.sent = 0
        self._tasks = TaskSet(f"pipe-{peer_id}")
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        return f"PeerPipe({self.peer_id!r}, link {self.link.id})"

    # ---- running --------------------------------------------------------------------

    async def run_opener(self, timeout: float = 5.0) -> None:
        """Send ``POST /swarm`` and pump the response body (returns once it is accepted)."""
        try:
            response = await self.link.request(
                "POST", SWARM_PATH, body=self._outgoing(), timeout=timeout
            )
        except LinkError as exc:
            self._finish(f"pipe refused: {exc}")
            raise
        if response.status != 200:
            response.cancel()
            self._finish(f"pipe refused with status {response.status}")
            raise LinkError("bad_status", f"POST {SWARM_PATH} answered {response.status}")
        self._tasks.spawn(self._read(response), "read")
        self._tasks.spawn(self._watch_link(), "watch")

    async def serve(self, request: IncomingRequest) -> None:
        """The acceptor's side: answer ``POST /swarm`` and pump both ways until the end."""
        await request.respond(200, [("content-type", "application/octet-stream")])
        self._tasks.spawn(self._read(request.body()), "read")
        self._tasks.spawn(self._write(request), "write")
        self._tasks.spawn(self._watch_link(), "watch")
        await self._done.wait()

    async def _outgoing(self) -> AsyncIterator[bytes]:
        while True:
            data = await self._out.get()
            if data is None:
                return
            parts = [data]
            # Batch what else is queued: one write (and one QUIC frame run) per wake-up.
            while not self._out.empty() and len(parts) < 64:
                more = self._out.get_nowait()
                if more is None:
                    self._out.put_nowait(None)
                    break
                parts.append(more)
            blob = b"".join(parts)
            self.queued -= len(blob)
            self.sent += len(blob)
            yield blob

    async def _write(self, request: IncomingRequest) -> None:
        try:
            async for blob in self._outgoing():
                await request.write(blob)
            await request.write(b"", end=True)
        except (StreamClosed, LinkError):
            self._finish("neighbour stopped reading")

    async def _read(self, body: AsyncIterable[bytes]) -> None:
        reader = proto.MessageReader()
        reason = "neighbour closed the pipe"
        try:
            async for data in body:
                self.received += len(data)
                for message in reader.feed(data):
                    if self.closed:
                        return
                    if isinstance(message, proto.ChunkData):
                        self.chunk_bytes += len(message.data)
                    self._on_message(self, message)
        except proto.ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except (LinkError, StreamClosed) as exc:
            reason = f"link lost: {exc}"
        self._finish(reason)

    async def _watch_link(self) -> None:
        await self.link.wait_closed()
        self._finish(f"link closed: {self.link.close_reason}")

    # ---- using ----------------------------------------------------------------------

    @property
    def control_received(self) -> int:
        """Bytes from the neighbour that were not chunks: announcements, requests, framing."""
        return self.received - self.chunk_bytes

    def note_have(self, seq: int) -> None:
        self.haves.add(seq)
        if len(self.haves) > 2 * proto.MAX_WINDOW:
            floor = max(self.haves) - proto.MAX_WINDOW
            self.haves = {s for s in self.haves if s > floor}

    def send(self, message: proto.Message) -> bool:
        """Queue a message; False if the pipe is closed or (for chunk data) too backed up."""
        if self.closed:
            return False
        data = proto.frame(message)
        if isinstance(message, proto.ChunkData) and self.queued + len(data) > MAX_QUEUED:
            return False
        self.queued += len(data)
        self._out.put_nowait(data)
        return True

    def halt(self, reason: str) -> None:
        """Take nothing more from this neighbour, at once (messages already read in the same
        batch included); the link itself is closed by ``close``."""
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._out.put_nowait(None)
        self._done.set()
        try:
            self._on_closed(self, reason)
        except Exception:
            logger.exception("on_closed failed for %r", self)

    async def close(self, reason: str) -> None:
        """End the pipe and its link (one link per neighbour pair)."""
        self._finish(reason)
        await self.link.close(reason)
        await self._tasks.cancel_all()
