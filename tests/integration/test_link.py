"""The link layer end to end: real aioice + aioquic in one event loop, no mocks.

Every test builds a viewer and a device link over 127.0.0.1 (``host_addresses`` forces the
loopback interface, so the tests do not depend on the machine's other addresses) unless it
says otherwise. Timing assertions are only upper bounds on timeouts, never speed targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from tests.support.links import GRANT, LOOPBACK, Device, link_pair, no_handler
from xp2p.link import (
    Conditions,
    IncomingRequest,
    LinkConfig,
    LinkError,
    LinkIdentity,
    StreamClosed,
    accept_link,
    open_link,
    parse_offer,
)
from xp2p.link import conditioner as link_conditioner


async def read_all(stream: AsyncIterator[bytes] | Any) -> bytes:
    out = bytearray()
    async for chunk in stream:
        out += chunk
    return bytes(out)


# ---- connect and request/response --------------------------------------------------------


@pytest.mark.timeout(60)
async def test_response_body_5mb_is_byte_exact() -> None:
    payload = random.Random(1).randbytes(5 * 1024 * 1024)
    seen: list[tuple[str, str, dict[str, str], str | None]] = []

    async def handler(request: IncomingRequest) -> None:
        seen.append((request.method, request.path, request.params(), request.headers.get("x-test")))
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        await request.respond(200, [("Content-Type", "application/octet-stream")])
        for i in range(0, len(payload), 65536):
            await request.write(payload[i : i + 65536])

    async with link_pair(handler) as (viewer, device):
        assert viewer.link_mode == "direct"
        assert "127.0.0.1" in viewer.path
        response = await viewer.request("GET", "/bulk?size=5m&x=", [("X-Test", "yes")])
        assert response.status == 200
        assert response.headers["content-type"] == "application/octet-stream"
        body = await read_all(response)
        assert seen == [("GET", "/bulk", {"size": "5m", "x": ""}, "yes")]
        assert len(body) == len(payload)
        assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
        # A handler that raises costs its request a 500, not the link.
        failed = await viewer.request("GET", "/boom")
        assert failed.status == 500
        assert await failed.read() == b"internal error"
        assert not viewer.closed and not device.closed
        again = await viewer.request("GET", "/bulk")
        assert len(await read_all(again)) == len(payload)


@pytest.mark.timeout(60)
async def test_streamed_request_body_upload_is_byte_exact() -> None:
    rng = random.Random(2)
    payload = rng.randbytes(3 * 1024 * 1024 + 17)

    async def body() -> AsyncIterator[bytes]:
        i = 0
        while i < len(payload):
            n = rng.choice((1, 100, 1200, 4096, 65536, 300_000))
            yield payload[i : i + n]
            i += n
            if rng.random() < 0.1:
                await asyncio.sleep(0)

    async def handler(request: IncomingRequest) -> None:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.body():
            digest.update(chunk)
            size += len(chunk)
        await request.respond(200, body=f"{size} {digest.hexdigest()}".encode())

    async with link_pair(handler) as (viewer, _device):
        response = await viewer.request("POST", "/voice", body=body())
        assert response.status == 200
        answer = (await response.read()).decode()
        assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        # A bytes body goes the same way.
        response = await viewer.request("POST", "/command", body=b"hello")
        assert (await response.read()).decode() == f"5 {hashlib.sha256(b'hello').hexdigest()}"


@pytest.mark.timeout(30)
async def test_default_host_addresses_connect() -> None:
    """No ``host_addresses``: aioice's own interface list (or the 127.0.0.1 fallback)."""

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200, body=b"pong")

    async with link_pair(handler, LinkConfig(connect_timeout=5.0)) as (viewer, _device):
        response = await viewer.request("GET", "/ping")
        assert await response.read() == b"pong"


# ---- identity ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_fingerprint_mismatch_is_refused_before_ice() -> None:
    device = Device(LinkIdentity.generate(), replace(LOOPBACK, connect_timeout=2.0), no_handler)
    other = LinkIdentity.generate()
    with pytest.raises(LinkError) as info:
        await open_link(
            LOOPBACK, device.signal, fingerprint=other.fingerprint, grant=GRANT, peer_label="device"
        )
    assert info.value.reason == "bad_identity"
    # The device answered but no link ever forms: its half gives up at connect_timeout.
    with pytest.raises(LinkError):
        await asyncio.wait_for(device.pending[0].link, 5)


@pytest.mark.timeout(30)
async def test_swapped_certificate_is_refused_by_tls() -> None:
    """A cloud in the middle rewrites the answer's certificate to the one xp2pInfo names,
    while the peer really holds another key: the QUIC handshake must fail, not connect."""
    expected = LinkIdentity.generate()
    impostor = Device(LinkIdentity.generate(), replace(LOOPBACK, connect_timeout=3.0), no_handler)

    async def mitm(offer: dict[str, Any]) -> dict[str, Any]:
        answer = await impostor.signal(offer)
        return {**answer, "certificate": expected.certificate_pem}

    with pytest.raises(LinkError) as info:
        await open_link(
            replace(LOOPBACK, connect_timeout=3.0),
            mitm,
            fingerprint=expected.fingerprint,
            grant=GRANT,
            peer_label="device",
        )
    assert info.value.reason == "bad_identity"
    with pytest.raises(LinkError):
        await asyncio.wait_for(impostor.pending[0].link, 6)


# ---- malformed signalling -----------------------------------------------------------------

_IDENTITY = LinkIdentity.generate()
_ICE = {"ufrag": "abcd", "pwd": "p" * 22, "candidates": ["1 1 udp 2130706431 127.0.0.1 9 typ host"]}
_GOOD_ANSWER = {"v": 1, "ice": _ICE, "certificate": _IDENTITY.certificate_pem}


def _with_candidates(*lines: Any) -> dict[str, Any]:
    return {**_GOOD_ANSWER, "ice": {**_ICE, "candidates": list(lines)}}


BAD_ANSWERS: dict[str, tuple[Any, set[str]]] = {
    "none": (None, {"bad_signal"}),
    "list": ([1, 2], {"bad_signal"}),
    "string": ("answer", {"bad_signal"}),
    "wrong-version": ({**_GOOD_ANSWER, "v": 2}, {"bad_signal"}),
    "version-as-string": ({**_GOOD_ANSWER, "v": "1"}, {"bad_signal"}),
    "no-certificate": ({"v": 1, "ice": _ICE}, {"bad_signal"}),
    "certificate-not-str": ({**_GOOD_ANSWER, "certificate": 42}, {"bad_signal"}),
    "certificate-not-pem": ({**_GOOD_ANSWER, "certificate": "hello"}, {"bad_signal"}),
    "certificate-bad-base64": (
        {
            **_GOOD_ANSWER,
            "certificate": "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        },
        # ssl's PEM decoder skips non-base64 characters: this is an empty DER, whose
        # fingerprint cannot match.
        {"bad_signal", "bad_identity"},
    ),
    "certificate-huge": ({**_GOOD_ANSWER, "certificate": "A" * 100_000}, {"bad_signal"}),
    "no-ice": ({"v": 1, "certificate": _IDENTITY.certificate_pem}, {"bad_signal"}),
    "ice-not-object": ({**_GOOD_ANSWER, "ice": "ice"}, {"bad_signal"}),
    "ice-no-ufrag": ({**_GOOD_ANSWER, "ice": {**_ICE, "ufrag": None}}, {"bad_signal"}),
    "candidates-not-list": ({**_GOOD_ANSWER, "ice": {**_ICE, "candidates": "x"}}, {"bad_signal"}),
    "candidates-oversize": (
        _with_candidates(*[f"{i} 1 udp 1 127.0.0.1 {1000 + i} typ host" for i in range(33)]),
        {"bad_signal"},
    ),
    "candidates-not-str": (_with_candidates(1, None, {}), {"bad_signal"}),
    "candidates-empty": (_with_candidates(), {"no_candidates"}),
    "candidates-garbage": (
        _with_candidates(
            "",
            "garbage",
            "1 1 udp x 127.0.0.1 9 typ host",
            "1 1 udp 1 127.0.0.1 port typ host",
            "\x00" * 50,
        ),
        {"no_candidates"},
    ),
    # These parse as SDP but aioice refuses them, so ICE has nothing to check.
    "candidates-unusable": (
        _with_candidates(
            "1 1 udp 1 not-an-ip 9 typ host",
            "1 1 udp 1 127.0.0.1 9 typ bogus",
            "1 1 tcp 1 127.0.0.1 9 typ host",
            "1 1 udp 1 ::1 9 typ host",
            "1 2 udp 1 127.0.0.1 9 typ host",
        ),
        {"no_candidates", "ice_failed", "ice_timeout"},
    ),
    "candidates-bad-port": (
        _with_candidates("1 1 udp 1 127.0.0.1 70000 typ host", "2 1 udp 1 127.0.0.1 -1 typ host"),
        {"no_candidates", "ice_failed", "ice_timeout"},
    ),
    "candidates-mdns": (
        _with_candidates(
            *[
                f"{i} 1 udp 1 {i:08x}-0000-4000-8000-000000000000.local 9 typ host"
                for i in range(32)
            ]
        ),
        {"no_candidates", "ice_failed", "ice_timeout"},
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(BAD_ANSWERS))
async def test_malformed_answer_raises_link_error(case: str) -> None:
    answer, reasons = BAD_ANSWERS[case]
    config = replace(LOOPBACK, connect_timeout=2.0)

    async def signal(offer: dict[str, Any]) -> Any:
        return answer

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LinkError) as info:
        await open_link(
            config, signal, fingerprint=_IDENTITY.fingerprint, grant=GRANT, peer_label="device"
        )
    assert info.value.reason in reasons, info.value
    assert loop.time() - started < config.connect_timeout + 3


@pytest.mark.timeout(30)
async def test_bad_candidates_beside_good_ones_do_not_break_the_link() -> None:
    """Junk in the peer's list is skipped; it must not cost the usable pair (an out-of-range
    port once made asyncio close the local socket that the good pair needed)."""
    device = Device(LinkIdentity.generate(), LOOPBACK, no_handler)
    junk = [
        "1 1 udp 2130706432 127.0.0.1 70000 typ host",
        "garbage",
        "2 1 udp 9 0a0b0c0d-0000-4000-8000-000000000000.local 9 typ host",
        "3 1 udp 9 not-an-ip 9 typ host",
    ]

    async def signal(offer: dict[str, Any]) -> dict[str, Any]:
        answer = await device.signal(offer)
        ice = answer["ice"]
        return {**answer, "ice": {**ice, "candidates": junk + ice["candidates"]}}

    viewer = await open_link(
        replace(LOOPBACK, connect_timeout=3.0),
        signal,
        fingerprint=device.identity.fingerprint,
        grant=GRANT,
        peer_label="device",
    )
    try:
        response = await viewer.request("GET", "/x")
        assert response.status == 404
        assert await response.read() == b"no route"
    finally:
        await viewer.close()
        with contextlib.suppress(LinkError):
            await (await device.pending[0].link).close()


@pytest.mark.timeout(30)
async def test_signal_timeout_raises_link_error() -> None:
    config = replace(LOOPBACK, connect_timeout=1.0)

    async def never(offer: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    with pytest.raises(LinkError):
        await open_link(
            config, never, fingerprint=_IDENTITY.fingerprint, grant=GRANT, peer_label="device"
        )


BAD_OFFERS: dict[str, Any] = {
    "none": None,
    "list": [],
    "wrong-version": {"v": 0, "ice": _ICE, "grant": GRANT},
    "no-grant": {"v": 1, "ice": _ICE},
    "empty-grant": {"v": 1, "ice": _ICE, "grant": ""},
    "grant-not-str": {"v": 1, "ice": _ICE, "grant": ["x"]},
    "no-ice": {"v": 1, "grant": GRANT},
    "ice-no-pwd": {"v": 1, "ice": {**_ICE, "pwd": 5}, "grant": GRANT},
    "candidates-oversize": {
        "v": 1,
        "grant": GRANT,
        "ice": {**_ICE, "candidates": ["1 1 udp 1 127.0.0.1 9 typ host"] * 33},
    },
    "candidates-not-str": {"v": 1, "grant": GRANT, "ice": {**_ICE, "candidates": [b"x"]}},
}


@pytest.mark.parametrize("case", list(BAD_OFFERS))
def test_malformed_offer_raises_bad_signal(case: str) -> None:
    with pytest.raises(LinkError) as info:
        parse_offer(BAD_OFFERS[case])
    assert info.value.reason == "bad_signal"


@pytest.mark.timeout(30)
async def test_offer_with_garbage_candidates_is_refused_by_accept_link() -> None:
    remote, _grant = parse_offer(
        {"v": 1, "grant": GRANT, "ice": {**_ICE, "candidates": ["garbage", "1 1 udp"]}}
    )
    with pytest.raises(LinkError) as info:
        await accept_link(LOOPBACK, _IDENTITY, remote, handler=no_handler, peer_label="viewer")
    assert info.value.reason == "no_candidates"


@pytest.mark.timeout(30)
async def test_unreachable_candidates_fail_within_connect_timeout() -> None:
    """The answer is genuine in form but points at a local UDP port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    answer = _with_candidates(f"1 1 udp 2130706431 127.0.0.1 {closed_port} typ host")
    config = replace(LOOPBACK, connect_timeout=2.0)

    async def signal(offer: dict[str, Any]) -> dict[str, Any]:
        return answer

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LinkError) as info:
        await open_link(
            config, signal, fingerprint=_IDENTITY.fingerprint, grant=GRANT, peer_label="device"
        )
    elapsed = loop.time() - started
    assert info.value.reason in {"ice_timeout", "ice_failed"}
    assert elapsed < config.connect_timeout + 3


# ---- a dead peer ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["ice_closed", "blackholed"])
async def test_dead_peer_is_noticed_within_idle_timeout(how: str) -> None:
    config = replace(LOOPBACK, idle_timeout=3.0, keepalive_interval=1.0)

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200, body=b"ok")

    async with link_pair(handler, config) as (viewer, device):
        assert await (await viewer.request("GET", "/x")).read() == b"ok"
        loop = asyncio.get_running_loop()
        killed = loop.time()
        if how == "ice_closed":
            # The device's process is gone: its sockets close, no QUIC CONNECTION_CLOSE is sent.
            await device._ice.close()
        else:
            # The path dies (NAT binding lost, radio gone): every datagram at the device is
            # dropped from now on, both ways, by the same conditioner the tests use for loss.
            core = link_conditioner.attach(device._ice, Conditions(loss=1.0, seed=0))
            assert core is not None
        await asyncio.wait_for(viewer.wait_closed(), config.idle_timeout + 2)
        assert loop.time() - killed < config.idle_timeout + 2
        assert viewer.closed
        with pytest.raises(LinkError):
            await viewer.request("GET", "/x")
        if how == "blackholed":
            # The device cannot hear the viewer either, and finds out the same way.
            await asyncio.wait_for(device.wait_closed(), 3)


@pytest.mark.timeout(30)
async def test_response_in_flight_fails_when_peer_dies() -> None:
    config = replace(LOOPBACK, idle_timeout=2.0, keepalive_interval=0.5)
    started = asyncio.Event()

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200)
        await request.write(b"first")
        started.set()
        await asyncio.sleep(60)

    async with link_pair(handler, config) as (viewer, device):
        response = await viewer.request("GET", "/live")
        await started.wait()
        await device._ice.close()
        with pytest.raises(LinkError):
            await asyncio.wait_for(read_all(response), config.idle_timeout + 2)


# ---- cancel ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_cancel_stops_the_server_writer() -> None:
    seen: dict[str, Any] = {}
    stopped = asyncio.Event()

    async def handler(request: IncomingRequest) -> None:
        if request.path != "/live":
            await request.respond(200, body=b"still here")
            return
        await request.respond(200)
        chunk = b"\x42" * 16384
        try:
            while True:
                await request.write(chunk)
                await asyncio.sleep(0)
        except StreamClosed as exc:
            seen["error"] = exc
            seen["closed"] = request.closed
            stopped.set()
            raise

    async with link_pair(handler) as (viewer, _device):
        response = await viewer.request("GET", "/live")
        received = 0
        async for chunk in response:
            received += len(chunk)
            if received > 256 * 1024:
                break
        response.cancel()
        await asyncio.wait_for(stopped.wait(), 5)
        assert isinstance(seen["error"], StreamClosed)
        assert seen["closed"] is True
        # Iterating a cancelled response ends quietly, and the link is still fine.
        async for _ in response:
            pass
        again = await viewer.request("GET", "/other")
        assert await again.read() == b"still here"


# ---- back-pressure ------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_reader_that_stops_reading_blocks_the_writer() -> None:
    total = 50 * 1024 * 1024
    write_size = 65536
    config = replace(LOOPBACK, send_buffer=256 * 1024, max_stream_data=1024 * 1024)
    state = {"written": 0, "max_backlog": 0, "done": False}

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200)
        chunk = b"\x17" * write_size
        while state["written"] < total:
            await request.write(chunk)
            state["written"] += write_size
            state["max_backlog"] = max(state["max_backlog"], request.backlog())
        state["done"] = True

    async with link_pair(handler, config) as (viewer, _device):
        response = await viewer.request("GET", "/bulk")
        # Wait until the writer has made no progress for a whole second.
        last = -1
        for _ in range(30):
            await asyncio.sleep(1.0)
            if state["written"] == last:
                break
            last = state["written"]
        assert not state["done"]
        assert state["written"] < total
        # What can be in flight: the reader's window, the writer's buffer and one write
        # (plus HTTP/3 DATA frame headers, a few bytes per write).
        assert state["written"] <= config.max_stream_data + config.send_buffer + 2 * write_size
        # The reader resumes: everything arrives and the writer finishes.
        received = len(await read_all(response))
        assert received == total
        assert state["done"]
        frame_slack = 16  # a DATA frame header per write
        assert state["max_backlog"] <= config.send_buffer + write_size + frame_slack


@pytest.mark.timeout(60)
async def test_bursty_reader_with_small_window_never_stalls() -> None:
    """The reader pauses often with a small window and small writes (so HTTP/3 framing is a
    visible share of the stream). Keep-alives are far apart, so a window update that was due
    but never sent would stall the transfer for the whole interval instead of hiding."""
    total = 4 * 1024 * 1024
    config = replace(
        LOOPBACK,
        max_stream_data=256 * 1024,
        send_buffer=64 * 1024,
        keepalive_interval=60.0,
        idle_timeout=120.0,
    )
    payload = random.Random(6).randbytes(total)

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200)
        for i in range(0, total, 1000):
            await request.write(payload[i : i + 1000])

    async with link_pair(handler, config) as (viewer, _device):
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await viewer.request("GET", "/bulk")
        out = bytearray()
        next_pause = 64 * 1024
        async for chunk in response:
            out += chunk
            if len(out) >= next_pause:
                next_pause += 64 * 1024
                await asyncio.sleep(0.01)
        assert bytes(out) == payload
        # 64 pauses of 10 ms plus the transfer; one missed window update alone costs 60 s.
        assert loop.time() - started < 30


# ---- the conditioner on real links ---------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_conditioner_rtt_is_seen_by_quic() -> None:
    viewer_config = replace(LOOPBACK, conditions=Conditions(rtt_ms=100, seed=3))

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200, body=os.urandom(20_000))

    async with link_pair(handler, viewer_config, LOOPBACK) as (viewer, device):
        for _ in range(5):
            await (await viewer.request("GET", "/x")).read()
        assert viewer.rtt >= 0.08
        assert device.rtt >= 0.08


@pytest.mark.timeout(90)
async def test_conditioner_loss_still_delivers_byte_exact() -> None:
    payload = random.Random(4).randbytes(2 * 1024 * 1024)
    viewer_config = replace(
        LOOPBACK, connect_timeout=15.0, conditions=Conditions(loss=0.05, seed=5)
    )

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200)
        for i in range(0, len(payload), 32768):
            await request.write(payload[i : i + 32768])

    async with link_pair(handler, viewer_config, replace(LOOPBACK, connect_timeout=15.0)) as (
        viewer,
        _device,
    ):
        response = await viewer.request("GET", "/bulk", timeout=20)
        body = await asyncio.wait_for(read_all(response), 60)
        assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()


@pytest.mark.timeout(30)
async def test_close_reaches_the_peer_through_a_delayed_path() -> None:
    """The conditioner holds datagrams back; closing must still deliver the last ones (the
    CONNECTION_CLOSE), or the peer would only notice after its idle timeout."""
    viewer_config = replace(LOOPBACK, conditions=Conditions(rtt_ms=100))
    async with link_pair(no_handler, viewer_config, LOOPBACK) as (viewer, device_link):
        await viewer.close()
        await asyncio.wait_for(device_link.wait_closed(), 2.0)
        assert device_link.close_reason == "closed"
