"""A request as the link hands it to the device: raw HTTP/3 header pairs in, an
``IncomingRequest`` (or None: answered 400) out, then its query as the device reads it
(``DeviceRoutes.handle``: the query parser of its path, the rules every request shares,
the channel every handler looks up first).

``from_headers`` never raises; ``params()``, ``parse_query`` and ``check_target`` raise
ValueError only; the device's checks raise ``BadRequest`` with a 4xx status only.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.link.requests", "xp2p.device"]):
    from xp2p.auth import AccessGrant
    from xp2p.device.commands import parse_query
    from xp2p.device.config import DeviceConfig
    from xp2p.device.request import BadRequest, Channel, DeviceState, RequestContext, check_params
    from xp2p.link.requests import MAX_QUERY_BYTES, IncomingRequest, ResponseStream, check_target
    from xp2p.link.transport import StreamState

_DEVICE = DeviceState(
    DeviceConfig("http://cloud.example", "DEMO", "cam1", "s"), {0: Channel(0, {})}
)
_GRANT = AccessGrant("app", "DEMO", "cam1", frozenset({"live"}), 0, 300, "g1")


class StandInLink:
    """A RequestTransport that carries nothing: parsing a request must not touch it."""

    id = 1
    close_reason = ""
    closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        timeout: float = 10.0,
    ) -> ResponseStream:
        raise AssertionError("parsing opened a request")

    def send_response(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]]
    ) -> None:
        raise AssertionError("parsing answered")

    async def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        raise AssertionError("parsing wrote")

    def backlog(self, stream_id: int) -> int:
        return 0

    def consumed(self, stream: StreamState, size: int) -> None:
        raise AssertionError("parsing read the body")

    def cancel(self, stream_id: int) -> None:
        raise AssertionError("parsing cancelled")

    def release(self, stream: StreamState) -> None:
        raise AssertionError("parsing released the stream")

    async def close(self, reason: str = "closed") -> None:
        raise AssertionError("parsing closed the link")


_LINK = StandInLink()


def _headers(data: bytes) -> list[tuple[bytes, bytes]]:
    """One ``name=value`` header a line: the fuzzer mutates names, values and how many."""
    return [
        (name, value) for name, _, value in (line.partition(b"=") for line in data.split(b"\n"))
    ]


def TestOneInput(data: bytes) -> None:
    raw = _headers(data)
    request = IncomingRequest.from_headers(_LINK, StreamState(stream_id=0), raw)
    if request is None:
        return
    assert request.target.startswith("/") and request.method, request.target
    assert request.path + ("?" + request.query if "?" in request.target else "") == request.target
    try:
        check_target(request.target)
    except ValueError:
        pass
    try:
        if request.path == "/command":
            params = parse_query(request.query)
        else:
            params = request.params()
            assert len(request.query.encode()) <= MAX_QUERY_BYTES
    except (ValueError, BadRequest):
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    try:
        check_params(params)
        RequestContext(_DEVICE, request, params, _GRANT).channel()
    except BadRequest as exc:
        assert 400 <= exc.status < 500, exc


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="query.dict")
