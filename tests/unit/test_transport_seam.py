"""Requests over the transport seam alone (xp2p.link.transport), with an in-memory transport:
what a second transport (WebRTC data channels for browsers) must provide, and what
``IncomingRequest``/``ResponseStream`` do with it. The QUIC transport is tested for the same
behaviours in tests/integration/test_link.py."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from tests.support.memory_transport import memory_pair
from xp2p.link import IncomingRequest, Link
from xp2p.link.errors import LinkError, StreamClosed
from xp2p.link.transport import RequestTransport

pytestmark = pytest.mark.timeout(30)


def test_the_double_offers_every_member_of_the_seam() -> None:
    # (mypy checks the QUIC Link against the protocol: it passes itself to IncomingRequest.)
    seam = {name for name in vars(RequestTransport) if not name.startswith("_")}
    seam |= set(RequestTransport.__annotations__)
    requester, _server = memory_pair(_not_found)
    assert {"request", "send_response", "write", "consumed", "cancel", "close"} <= seam
    assert [name for name in sorted(seam) if not hasattr(requester, name)] == []
    assert [name for name in sorted(seam - {"id", "close_reason"}) if not hasattr(Link, name)] == []


async def _not_found(request: IncomingRequest) -> None:
    await request.respond(404, [("content-type", "text/plain")], body=b"no such path")


async def test_a_streamed_body_arrives_whole_and_the_writer_waits_for_the_reader() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    window = 64 * 1024
    backlog_seen: list[int] = []

    async def serve(request: IncomingRequest) -> None:
        assert (request.method, request.path, request.params()) == ("GET", "/bulk", {"n": "1"})
        await request.respond(200, [("x-content-sha256", hashlib.sha256(payload).hexdigest())])
        for offset in range(0, len(payload), 16 * 1024):
            await request.write(payload[offset : offset + 16 * 1024])
            backlog_seen.append(request.backlog())

    requester, _server = memory_pair(serve, window=window)
    response = await requester.request("GET", "/bulk?n=1")
    assert response.status == 200
    received = bytearray()
    async for chunk in response:
        received += chunk
        await asyncio.sleep(0)  # a slow reader: the writer must wait, not pile up bytes
    assert hashlib.sha256(received).hexdigest() == response.headers["x-content-sha256"]
    assert max(backlog_seen) <= window + 16 * 1024


async def test_an_upload_is_read_by_the_handler() -> None:
    async def echo_digest(request: IncomingRequest) -> None:
        digest = hashlib.sha256()
        async for chunk in request.body():
            digest.update(chunk)
        await request.respond(200, body=digest.hexdigest().encode())

    async def pieces() -> object:
        for n in range(50):
            yield bytes([n]) * 1000

    requester, _server = memory_pair(echo_digest)
    response = await requester.request("POST", "/voice", body=pieces())  # type: ignore[arg-type]
    expected = hashlib.sha256(b"".join(bytes([n]) * 1000 for n in range(50))).hexdigest()
    assert (await response.read()).decode() == expected


async def test_an_error_status_carries_its_reason() -> None:
    requester, _server = memory_pair(_not_found)
    response = await requester.request("GET", "/nope")
    assert response.status == 404
    assert await response.read() == b"no such path"


async def test_a_cancelled_request_stops_the_handlers_writes() -> None:
    stopped = asyncio.Event()

    async def endless(request: IncomingRequest) -> None:
        await request.respond(200)
        try:
            while True:
                await request.write(b"x" * 1024)
        except StreamClosed:
            assert request.closed
            stopped.set()
            raise

    requester, _server = memory_pair(endless, window=8 * 1024)
    response = await requester.request("GET", "/live")
    async for _chunk in response:
        break
    response.cancel()
    await asyncio.wait_for(stopped.wait(), 5)
    # Cancelled by us: what had arrived drains, then the body ends without an error.
    rest = b"".join([chunk async for chunk in response])
    assert len(rest) <= 8 * 1024 + 1024


async def test_a_closed_link_fails_a_read_in_progress_by_reason() -> None:
    async def endless(request: IncomingRequest) -> None:
        await request.respond(200)
        with pytest.raises(StreamClosed):
            while True:
                await request.write(b"x" * 1024)

    requester, _server = memory_pair(endless, window=8 * 1024)
    response = await requester.request("GET", "/live")
    await requester.close("device went away")
    with pytest.raises(LinkError, match="device went away"):
        async for _chunk in response:
            pass
    with pytest.raises(LinkError, match="closed"):
        await requester.request("GET", "/again")


async def test_a_bad_target_is_refused_before_it_is_sent() -> None:
    requester, _server = memory_pair(_not_found)
    with pytest.raises(LinkError, match="percent-encode"):
        await requester.request("GET", "/a b")
