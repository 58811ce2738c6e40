"""The two ends of one request on a link: what a handler gets (``IncomingRequest``) and what a
requester gets back (``ResponseStream``). Both move bytes through a ``RequestTransport``
(``xp2p.link.transport``), never through a transport's internals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from urllib.parse import parse_qsl

from xp2p.link.errors import LinkError, StreamClosed
from xp2p.link.transport import RequestTransport, StreamState

MAX_QUERY_BYTES = 3000  # docs/protocol.md: the whole query is at most 3000 bytes


def check_target(target: str) -> None:
    """A request target must be a path with no spaces or control characters: aioquic's peer
    treats one as a protocol error and closes the whole link, not just the request."""
    if not target.startswith("/"):
        raise ValueError("a request target starts with '/'")
    bad = next((c for c in target if ord(c) <= 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"request target contains {bad!r}; percent-encode it")


class IncomingRequest:
    """A request the peer sent; the handler answers with ``respond`` then ``write``/``end``."""

    def __init__(
        self,
        link: RequestTransport,
        stream: StreamState,
        method: str,
        target: str,
        headers: dict[str, str],
    ) -> None:
        self.link = link
        self._stream = stream
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.responded = False

    @classmethod
    def from_headers(
        cls, link: RequestTransport, stream: StreamState, raw: list[tuple[bytes, bytes]]
    ) -> IncomingRequest | None:
        try:
            headers = {k.decode("ascii").lower(): v.decode("utf-8") for k, v in raw}
        except UnicodeDecodeError:
            return None
        method, target = headers.pop(":method", ""), headers.pop(":path", "")
        if not method or not target.startswith("/"):
            return None
        return cls(link, stream, method, target, headers)

    @property
    def stream_id(self) -> int:
        return self._stream.stream_id

    @property
    def closed(self) -> bool:
        """The viewer cancelled this request or the link died."""
        return self._stream.closed or self.link.closed

    def params(self) -> dict[str, str]:
        """The query as a dict; raises ValueError on a malformed or oversize query."""
        if len(self.query.encode()) > MAX_QUERY_BYTES:
            raise ValueError(f"query longer than {MAX_QUERY_BYTES} bytes")
        pairs = parse_qsl(self.query, keep_blank_values=True, strict_parsing=bool(self.query))
        return dict(pairs)

    async def body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._stream.body.get()) is not None:
            self.link.consumed(self._stream, len(chunk))
            yield chunk

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None
    ) -> None:
        if self.closed:
            raise StreamClosed("request was cancelled")
        self.link.send_response(self.stream_id, status, headers)
        self.responded = True
        if body is not None:
            await self.write(body, end=True)

    async def write(self, data: bytes, end: bool = False) -> None:
        await self.link.write(self.stream_id, data, end=end)

    def backlog(self) -> int:
        return self.link.backlog(self.stream_id)

    def cancel(self) -> None:
        """Abandon the request (reset our side, stop the viewer sending)."""
        self.link.cancel(self.stream_id)


class ResponseStream:
    """A response on the requesting side: status, headers, then the body as it arrives."""

    def __init__(
        self, link: RequestTransport, stream: StreamState, raw: list[tuple[bytes, bytes]]
    ) -> None:
        self._link = link
        self._stream = stream
        headers = {k.decode("ascii", "replace"): v.decode("utf-8", "replace") for k, v in raw}
        self.status = int(headers.pop(":status", "0") or 0)
        self.headers = headers
        self.stream_id = stream.stream_id

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._stream.body.get()) is not None:
            self._link.consumed(self._stream, len(chunk))
            yield chunk
        if self._stream.finished:
            self._link.release(self._stream)
        if self._stream.cancelled:
            return
        if self._stream.closed or self._link.closed:
            raise LinkError("closed", f"link lost: {self._link.close_reason}")

    async def read(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """The whole body (bounded)."""
        out = bytearray()
        async for chunk in self:
            out += chunk
            if len(out) > limit:
                self.cancel()
                raise LinkError("too_large", f"response body over {limit} bytes")
        return bytes(out)

    async def write(self, data: bytes, end: bool = False) -> None:
        """Send more request body (uploads such as talk-back)."""
        await self._link.write(self.stream_id, data, end=end)

    def cancel(self) -> None:
        self._link.cancel(self.stream_id)
