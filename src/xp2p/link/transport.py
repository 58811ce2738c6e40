"""The seam between requests and the transport that carries them.

A request on a link is: open it (method, target, headers), stream a body each way with
back-pressure, close it (FIN, or cancel). ``IncomingRequest`` and ``ResponseStream``
(``xp2p.link.requests``) are written against ``RequestTransport`` alone, so the device's
routes, grants and capacity rules never learn which transport carried a request. QUIC with
HTTP/3 framing (``xp2p.link.link.Link``) implements it today; a WebRTC data-channel transport
for browsers implements the same protocol.

``StreamState`` is what a transport keeps per request and what the request objects read:
the received body as a queue ending in ``None``, and the stream's lifecycle flags.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from xp2p.link.requests import ResponseStream


@dataclass
class StreamState:
    """One request's stream, as its transport tracks it."""

    stream_id: int
    body: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    #: the response headers, on the requesting side; None on the serving side
    headers: asyncio.Future[list[tuple[bytes, bytes]]] | None = None
    closed: bool = False  #: reset/stopped by the peer, or the link is gone
    finished: bool = False  #: we have sent our FIN
    cancelled: bool = False  #: we abandoned it (``RequestTransport.cancel``)
    unread: int = 0  #: body bytes queued in ``body`` that the application has not taken yet
    taken: int = 0  #: body bytes the application took since the window was last looked at


class RequestTransport(Protocol):
    """What a request needs of the link under it."""

    #: a small number naming the link in logs (and, on a device, the viewer's slot)
    id: int
    #: why the link closed, once it has
    close_reason: str

    @property
    def closed(self) -> bool: ...

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        timeout: float = 10.0,
    ) -> ResponseStream:
        """Open a request; returns once the response headers arrived (bounded)."""
        ...

    def send_response(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]]
    ) -> None:
        """Answer a request the peer opened: the status line and headers, no body yet."""
        ...

    async def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Send body bytes (``end``: and the FIN); waits while the peer is behind."""
        ...

    def backlog(self, stream_id: int) -> int:
        """Body bytes written and not yet acknowledged by the peer."""
        ...

    def consumed(self, stream: StreamState, size: int) -> None:
        """The application took ``size`` body bytes: the peer may send more."""
        ...

    def cancel(self, stream_id: int) -> None:
        """Abandon a request: stop the peer sending, and reset our side."""
        ...

    def release(self, stream: StreamState) -> None:
        """Forget a stream that is over in both directions."""
        ...

    async def close(self, reason: str = "closed") -> None: ...
