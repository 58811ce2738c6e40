"""One P2P link: QUIC (aioquic, sans-IO) over the selected ICE pair, HTTP/3 on top.

The QUIC connection never sees an address: ICE picked the path, so every datagram goes to and
comes from ``PEER``, a fixed placeholder, and this shell moves bytes between
``QuicConnection`` and the aioice connection. Each HTTP/3 request is a stream with a
streamed body in each direction; writers wait while their stream has too much
unacknowledged data, because aioquic's stream buffers grow without bound otherwise.

The fixed address also lets a handover (``xp2p.link.handover``) put a new ICE connection
under a running QUIC connection (``swap_ice``): QUIC sees some loss, and every request on
the link carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StopSendingReceived,
    StreamReset,
)

from xp2p.link import handover
from xp2p.link.config import LinkConfig
from xp2p.link.errors import LinkError, StreamClosed
from xp2p.link.ice import IceConnection, selected_pair
from xp2p.link.quic_internals import (
    ReceiveWindowQuic,
    application_secrets,
    receive_window_due,
    restart_probes,
    smoothed_rtt,
    unacked_bytes,
)
from xp2p.link.requests import IncomingRequest, ResponseStream, check_target
from xp2p.link.transport import StreamState
from xp2p.tasks import TaskSet

if TYPE_CHECKING:
    from xp2p.link.handover_io import ViewerMover

logger = logging.getLogger("xp2p.link")

#: ICE does the routing; QUIC only needs a stable address to tag its network path with.
PEER = ("192.0.2.1", 4433)
H3_REQUEST_CANCELLED = 0x010C

RequestHandler = Callable[[IncomingRequest], Awaitable[None]]


class Link:
    """Both ends use this class; ``role`` only says who opened the QUIC connection."""

    _ids = itertools.count(1)

    def __init__(
        self,
        ice: IceConnection,
        quic: QuicConnection,
        config: LinkConfig,
        *,
        peer_label: str,
        handler: RequestHandler | None = None,
    ) -> None:
        self.id = next(self._ids)
        self.peer_label = peer_label
        self.config = config
        self._ice = ice
        self._quic = quic
        self._h3: H3Connection | None = None
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._streams: dict[int, StreamState] = {}
        self._progress = asyncio.Event()
        self._blocked: set[int] = set()  #: streams whose writer waits for send buffer
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        self.close_reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ping_ids = itertools.count()
        self.bytes_received = 0
        self.bytes_sent = 0
        #: When the last datagram from the peer arrived (loop time): a dead path shows here.
        self.last_received = self._loop.time()
        #: The key re-offers for this link are MAC'd with (``link.handover``), once QUIC is up.
        self.handover_key: bytes | None = None
        #: Paths this link moved to (``swap_ice``); the viewer's ``handover_io`` counts on it.
        self.handovers = 0
        #: ICE connections not (or no longer) under QUIC that close with the link: a
        #: handover's new one until it works, the old one for a moment after.
        self._spare_ice: set[IceConnection] = set()
        #: Set by ``handover_io``: how the viewer's end moves the link (None on a device).
        self.mover: ViewerMover | None = None
        self._tasks = TaskSet(f"link{self.id}")
        if isinstance(quic, ReceiveWindowQuic):
            quic.tracked = self._streams

    # ---- lifecycle ------------------------------------------------------------------

    def start(self, first_datagram: bytes | None = None) -> None:
        """Begin moving datagrams; a server passes the datagram that created its QUIC side."""
        if self._quic.configuration.is_client:
            self._quic.connect(PEER, now=self._loop.time())
        elif first_datagram is not None:
            self._receive(first_datagram)
        self._ice.datagram_handler = self._receive
        self._tasks.spawn(self._recv_loop(self._ice), "recv")
        self._tasks.spawn(self._keepalive_loop(), "keepalive")
        self._transmit()

    async def wait_handshake(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except TimeoutError as exc:
            await self.close("handshake timeout")
            raise LinkError(
                "quic_timeout", f"QUIC handshake not done within {timeout:.1f} s"
            ) from exc

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def link_mode(self) -> str:
        """``direct`` or ``relay`` (the seed's getStreamLinkMode 62/63)."""
        pair = selected_pair(self._ice)
        if pair is not None and "relay" in (pair[0].type, pair[1].type):
            return "relay"
        return "direct"

    @property
    def path(self) -> str:
        pair = selected_pair(self._ice)
        if pair is None:
            return "?"
        local, remote = pair
        return (
            f"{local.type} {local.host}:{local.port} <-> {remote.type} {remote.host}:{remote.port}"
        )

    @property
    def rtt(self) -> float:
        """Smoothed RTT in seconds as QUIC's loss recovery measures it."""
        return smoothed_rtt(self._quic)

    @property
    def ice(self) -> IceConnection:
        """The ICE connection QUIC runs over now."""
        return self._ice

    def keep_spare(self, ice: IceConnection) -> None:
        """Close ``ice`` with the link unless it is swapped in or closed before."""
        if self._closed.is_set():
            self._tasks.spawn(ice.close(), "ice-close")
        else:
            self._spare_ice.add(ice)

    def forget_spare(self, ice: IceConnection) -> None:
        self._spare_ice.discard(ice)

    async def move(self, reason: str = "asked") -> bool:
        """Move the link to a new network path now, the same request streams carrying on
        (the viewer's end only; a device's link returns False). True once it moved."""
        if self.mover is None:
            return False
        return await self.mover.handover(reason)

    def swap_ice(self, new: IceConnection, *, old_grace: float = 1.0) -> None:
        """Run QUIC over ``new`` from now on (a handover: docs/protocol.md §8c).

        The old connection still delivers what arrives on it for ``old_grace`` seconds (a
        path that was slow, not dead, has packets in flight), then closes. The probe timeout
        forgets its back-off and a PING goes out at once, so losses on the old path are
        found and resent within a round trip of the new one instead of after a doubled PTO.
        """
        if self._closed.is_set() or new is self._ice:
            return
        old = self._ice
        self._spare_ice.discard(new)
        self._ice = new
        new.datagram_handler = self._receive
        self._tasks.spawn(self._recv_loop(new), "recv")  # what came before the swap, then EOF
        self._spare_ice.add(old)
        self._loop.call_later(old_grace, self._retire, old)
        self.handovers += 1
        restart_probes(self._quic)
        self.probe()
        logger.info("link %d to %s moved to %s", self.id, self.peer_label, self.path)

    def _retire(self, ice: IceConnection) -> None:
        if ice in self._spare_ice and ice is not self._ice:
            self._spare_ice.discard(ice)
            ice.datagram_handler = None
            self._tasks.spawn(ice.close(), "ice-close")

    def probe(self) -> None:
        """Send a PING now: its ACK shows whether the path still works."""
        if self._closed.is_set():
            return
        self._quic.send_ping(next(self._ping_ids))
        self._transmit()

    async def close(self, reason: str = "closed") -> None:
        if self._closed.is_set():
            return
        self._quic.close(error_code=0, reason_phrase=reason)
        self._transmit()  # sends the CONNECTION_CLOSE now: _transmit writes to the socket
        self._shutdown(reason)
        await self._ice.close()
        await self._tasks.cancel_all()

    def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        logger.info("link %d to %s closed: %s", self.id, self.peer_label, reason)
        self._closed.set()
        if not self._handshake.done():
            self._handshake.set_exception(LinkError("quic_failed", reason))
            self._handshake.exception()  # retrieved here so an unawaited link logs nothing
        for stream in self._streams.values():
            self._close_stream(stream)
        if self._timer is not None:
            self._timer.cancel()
        self._wake_writers()
        self._ice.datagram_handler = None
        # The ICE side is closed asynchronously; a dead peer must not keep sockets open.
        self._tasks.spawn(self._ice.close(), "ice-close")
        for spare in self._spare_ice:
            spare.datagram_handler = None
            self._tasks.spawn(spare.close(), "ice-close")
        self._spare_ice.clear()

    # ---- client side ----------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        timeout: float = 10.0,
    ) -> ResponseStream:
        """Send a request and return once the response headers arrived (bounded by timeout)."""
        if self._closed.is_set() or self._h3 is None:
            raise LinkError("closed", f"link is closed ({self.close_reason or 'not connected'})")
        try:
            check_target(target)
        except ValueError as exc:
            raise LinkError("bad_request", str(exc)) from exc
        stream_id = self._quic.get_next_available_stream_id()
        stream = StreamState(stream_id, headers=self._loop.create_future())
        self._streams[stream_id] = stream
        h3_headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"device.xp2p"),
            (b":path", target.encode()),
        ] + [(k.lower().encode(), v.encode()) for k, v in headers]
        self._h3.send_headers(stream_id, h3_headers, end_stream=body is None)
        stream.finished = body is None
        self._transmit()
        if isinstance(body, bytes):
            await self.write(stream_id, body, end=True)
        elif body is not None:
            self._tasks.spawn(self._upload(stream_id, body), f"upload-{stream_id}")
        assert stream.headers is not None
        try:
            raw = await asyncio.wait_for(asyncio.shield(stream.headers), timeout)
        except TimeoutError as exc:
            self.cancel(stream_id)
            raise LinkError("request_timeout", f"no response within {timeout:.1f} s") from exc
        return ResponseStream(self, stream, raw)

    async def _upload(self, stream_id: int, body: AsyncIterable[bytes]) -> None:
        try:
            async for chunk in body:
                await self.write(stream_id, chunk)
            await self.write(stream_id, b"", end=True)
        except StreamClosed:
            pass

    # ---- both sides -----------------------------------------------------------------

    async def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Queue body bytes; waits while the stream has too much unacknowledged data."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.closed or stream.finished:
            raise StreamClosed(f"stream {stream_id} is closed")
        while self.backlog(stream_id) > self.config.send_buffer:
            self._blocked.add(stream_id)
            try:
                await self._wait_progress()
            finally:
                self._blocked.discard(stream_id)
            if stream.closed:
                raise StreamClosed(f"stream {stream_id} was closed by the peer")
        assert self._h3 is not None
        self._h3.send_data(stream_id, data, end_stream=end)
        stream.finished = end
        self.bytes_sent += len(data)
        self._transmit()

    def backlog(self, stream_id: int) -> int:
        """Bytes written to the stream and not yet acknowledged by the peer."""
        return unacked_bytes(self._quic, stream_id)

    def consumed(self, stream: StreamState, size: int) -> None:
        """The application took ``size`` body bytes: reopen the peer's window when due."""
        stream.unread -= size
        stream.taken += size
        window = self.config.max_stream_data
        if stream.taken < window // 8:  # look now and then, not per chunk
            return
        stream.taken = 0
        if receive_window_due(self._quic, stream.stream_id, stream.unread, window):
            self._transmit()  # ReceiveWindowQuic puts the raise in the next packet

    def send_response(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]]
    ) -> None:
        if self._h3 is None:
            raise StreamClosed("link is not connected")
        h3_headers = [(b":status", str(status).encode())]
        h3_headers += [(k.lower().encode(), v.encode()) for k, v in headers]
        self._h3.send_headers(stream_id, h3_headers)
        self._transmit()

    def release(self, stream: StreamState) -> None:
        self._streams.pop(stream.stream_id, None)

    def cancel(self, stream_id: int) -> None:
        """Abandon a request: stop the peer sending, and reset our side."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.cancelled = True
        if self._closed.is_set():
            return
        with contextlib.suppress(ValueError, AssertionError):
            self._quic.stop_stream(stream_id, H3_REQUEST_CANCELLED)
        if not stream.finished:
            with contextlib.suppress(ValueError, AssertionError):
                self._quic.reset_stream(stream_id, H3_REQUEST_CANCELLED)
        self._close_stream(stream)
        self._transmit()

    def _close_stream(self, stream: StreamState) -> None:
        if stream.closed:
            return
        stream.closed = True
        stream.body.put_nowait(None)
        if stream.headers is not None and not stream.headers.done():
            stream.headers.set_exception(LinkError("closed", "stream closed before a response"))
            stream.headers.exception()
        self._wake_writers()

    async def _wait_progress(self) -> None:
        await self._progress.wait()

    def _wake_writers(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    # ---- datagram plumbing ----------------------------------------------------------

    async def _recv_loop(self, ice: IceConnection) -> None:
        # With an IceConnection datagrams arrive through datagram_handler; aioice's queue
        # then only holds what came before start() (or swap_ice) and its "connection lost"
        # marker. Only the connection QUIC runs over can lose the link: an old one that a
        # handover replaced just ends.
        while not self._closed.is_set():
            try:
                data = await ice.recv()
            except ConnectionError:
                if ice is self._ice:
                    self._shutdown("ICE connection lost")
                return
            self._receive(data)

    def _receive(self, data: bytes) -> None:
        now = self.last_received = self._loop.time()
        self._quic.receive_datagram(data, PEER, now=now)
        self._process_events()
        self._transmit()
        # An ACK may have freed send buffer: wake writers whose stream drained enough (not
        # on every ACK, which would cost a task switch per datagram).
        if any(self.backlog(sid) <= self.config.send_buffer for sid in self._blocked):
            self._wake_writers()

    def _transmit(self) -> None:
        if self._closed.is_set():
            return
        # Straight to the socket: a send task woken per transmit costs more than QUIC does.
        try:
            for data, _addr in self._quic.datagrams_to_send(now=self._loop.time()):
                self._ice.send_now(data)
        except ConnectionError:
            self._shutdown("ICE connection lost")
            return
        timer_at = self._quic.get_timer()
        if timer_at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = timer_at
            self._timer = None if timer_at is None else self._loop.call_at(timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._quic.handle_timer(now=self._loop.time())
        self._process_events()
        self._transmit()

    async def _keepalive_loop(self) -> None:
        # PINGs keep NAT bindings open and let idle_timeout notice a dead peer.
        while not self._closed.is_set():
            await asyncio.sleep(self.config.keepalive_interval)
            self.probe()

    # ---- events ---------------------------------------------------------------------

    def _process_events(self) -> None:
        while (event := self._quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self._h3 = H3Connection(self._quic)
                self.handover_key = handover.derive_key(*application_secrets(self._quic))
                if not self._handshake.done():
                    self._handshake.set_result(None)
            elif isinstance(event, ConnectionTerminated):
                reason = event.reason_phrase or f"QUIC error 0x{event.error_code:x}"
                if not self._handshake.done():
                    self._handshake.set_exception(_handshake_error(event))
                self._shutdown(reason)
                return
            elif isinstance(event, StopSendingReceived | StreamReset):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    self._close_stream(stream)
            if self._h3 is not None:
                for h3_event in self._h3.handle_event(event):
                    self._on_h3_event(h3_event)

    def _on_h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                if self._quic.configuration.is_client:
                    return
                stream = StreamState(event.stream_id)
                self._streams[event.stream_id] = stream
                self._tasks.spawn(self._serve(stream, event.headers), f"serve-{event.stream_id}")
            elif stream.headers is not None and not stream.headers.done():
                stream.headers.set_result(list(event.headers))
            if event.stream_ended:
                stream.body.put_nowait(None)
        elif isinstance(event, DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                return
            if event.data:
                self.bytes_received += len(event.data)
                stream.unread += len(event.data)
                stream.body.put_nowait(event.data)
            if event.stream_ended:
                stream.body.put_nowait(None)

    async def _serve(self, stream: StreamState, raw_headers: list[tuple[bytes, bytes]]) -> None:
        request = IncomingRequest.from_headers(self, stream, raw_headers)
        try:
            if request is None:
                await _respond_plain(self, stream.stream_id, 400, "malformed request headers")
            elif self._handler is None:
                await _respond_plain(self, stream.stream_id, 404, "this end serves no requests")
            else:
                await self._handler(request)
                if not stream.finished and not stream.closed:
                    await self.write(stream.stream_id, b"", end=True)
        except StreamClosed:
            pass
        except Exception:
            logger.exception("request handler failed on link %d", self.id)
            if not stream.closed and not stream.finished:
                with contextlib.suppress(StreamClosed):
                    await _respond_plain(self, stream.stream_id, 500, "internal error")
        finally:
            self._streams.pop(stream.stream_id, None)


def _handshake_error(event: ConnectionTerminated) -> LinkError:
    # TLS alerts arrive as QUIC CRYPTO_ERROR 0x100 + alert; 42/48/51 are certificate problems.
    if 0x100 <= event.error_code <= 0x1FF:
        return LinkError("bad_identity", f"TLS handshake refused: {event.reason_phrase}")
    return LinkError("quic_failed", f"QUIC handshake failed: {event.reason_phrase}")


async def _respond_plain(link: Link, stream_id: int, status: int, text: str) -> None:
    link.send_response(stream_id, status, [("content-type", "text/plain")])
    await link.write(stream_id, text.encode(), end=True)
