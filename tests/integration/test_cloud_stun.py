"""The cloud's STUN responder, driven with aioice's STUN messages over real UDP sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from xp2p.cloud import CloudConfig, CloudServer, StunServer, start_stun_server
from xp2p.cloud.config import ConfigError
from xp2p.cloud.stun import (
    ALL_SOCKETS,
    PRIMARY,
    ResponderAddresses,
    ResponderSocket,
    binding_response,
    well_formed,
)
from xp2p.link.config import StunInfo


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def ask(
        self, server: tuple[str, int], request: stun.Message | bytes
    ) -> tuple[stun.Message, tuple[str, int]]:
        self.transport.sendto(bytes(request), server)
        data, addr = await asyncio.wait_for(self.replies.get(), 2)
        return stun.parse_message(data), addr


@pytest.fixture
async def client() -> AsyncIterator[_Client]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    yield proto
    proto.transport.close()


@pytest.fixture
async def responder() -> AsyncIterator[StunServer]:
    server = await start_stun_server("127.0.0.1", 0, alt_port=0)
    yield server
    server.close()


def _binding(**attributes: Any) -> stun.Message:
    return stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes=attributes)


async def test_binding_returns_the_client_address(responder: StunServer, client: _Client) -> None:
    request = _binding()
    reply, origin = await client.ask(responder.address, request)
    assert reply.message_class == stun.Class.RESPONSE
    assert reply.transaction_id == request.transaction_id
    assert reply.attributes["XOR-MAPPED-ADDRESS"] == client.address
    assert reply.attributes["MAPPED-ADDRESS"] == client.address
    assert reply.attributes["RESPONSE-ORIGIN"] == responder.address == origin
    # One IP: no address differs in both IP and port, so there is no OTHER-ADDRESS (a
    # standard RFC 5780 client would take one on the same IP for a second IP).
    assert "OTHER-ADDRESS" not in reply.attributes
    assert "FINGERPRINT" in reply.attributes  # parse_message checked it


async def test_change_port_answers_from_the_other_socket(
    responder: StunServer, client: _Client
) -> None:
    assert responder.alt_address is not None
    reply, origin = await client.ask(responder.address, _binding(**{"CHANGE-REQUEST": 0x2}))
    assert origin == responder.alt_address
    assert reply.attributes["RESPONSE-ORIGIN"] == responder.alt_address
    assert reply.attributes["XOR-MAPPED-ADDRESS"] == client.address
    reply, origin = await client.ask(responder.alt_address, _binding(**{"CHANGE-REQUEST": 0x2}))
    assert origin == responder.address
    reply, origin = await client.ask(responder.alt_address, _binding())
    assert origin == responder.alt_address
    assert reply.attributes["RESPONSE-ORIGIN"] == responder.alt_address
    # One IP only: "change IP" cannot be honoured, with or without "change port".
    for change in (0x4, 0x6):
        reply, origin = await client.ask(responder.address, _binding(**{"CHANGE-REQUEST": change}))
        assert reply.message_class == stun.Class.ERROR and reply.error_code == 420
        assert origin == responder.address


async def test_change_port_without_alternate_socket(client: _Client) -> None:
    server = await start_stun_server("127.0.0.1", 0)
    try:
        assert server.alt_address is None and server.other_address is None
        for change in (0x2, 0x4, 0x6):
            reply, _ = await client.ask(server.address, _binding(**{"CHANGE-REQUEST": change}))
            assert reply.error_code == 420
        reply, _ = await client.ask(server.address, _binding(**{"CHANGE-REQUEST": 0}))
        assert reply.message_class == stun.Class.RESPONSE
        assert "OTHER-ADDRESS" not in reply.attributes
    finally:
        server.close()


@pytest.fixture
async def full_responder() -> AsyncIterator[StunServer]:
    """RFC 5780's four sockets, on two loopback IPs (all of 127.0.0.0/8 is local on Linux)."""
    server = await start_stun_server("127.0.0.1", 0, alt_port=0, alt_host=ALT_IP)
    yield server
    server.close()


ALT_IP = "127.0.0.2"
CHANGES = {0: (False, False), 0x2: (False, True), 0x4: (True, False), 0x6: (True, True)}


async def test_four_sockets_on_two_ips_and_two_ports(full_responder: StunServer) -> None:
    addresses = full_responder.addresses
    assert addresses.alt_host == ALT_IP and addresses.alt_port is not None
    bound = {sock: full_responder.socket_address(sock) for sock in ALL_SOCKETS}
    assert bound == {
        PRIMARY: ("127.0.0.1", addresses.port),
        ResponderSocket(alt_port=True): ("127.0.0.1", addresses.alt_port),
        ResponderSocket(alt_ip=True): (ALT_IP, addresses.port),
        ResponderSocket(alt_ip=True, alt_port=True): (ALT_IP, addresses.alt_port),
    }
    assert full_responder.other_address == (ALT_IP, addresses.alt_port)


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("received_on", ALL_SOCKETS, ids=str)
async def test_every_change_request_on_every_socket(
    full_responder: StunServer, client: _Client, received_on: ResponderSocket, change: int
) -> None:
    destination = full_responder.socket_address(received_on)
    assert destination is not None
    request = _binding(**{"CHANGE-REQUEST": change})
    reply, origin = await client.ask(destination, request)
    assert reply.message_class == stun.Class.RESPONSE
    assert reply.transaction_id == request.transaction_id
    expected = full_responder.socket_address(received_on.changed(*CHANGES[change]))
    assert origin == expected
    assert reply.attributes["RESPONSE-ORIGIN"] == expected
    # OTHER-ADDRESS: where a change-both request sent *here* would be answered from.
    assert reply.attributes["OTHER-ADDRESS"] == full_responder.socket_address(
        received_on.changed(True, True)
    )
    assert reply.attributes["XOR-MAPPED-ADDRESS"] == client.address


def test_binding_response_refuses_changes_it_cannot_make() -> None:
    source = ("192.0.2.7", 4000)
    layouts = {
        "one socket": ResponderAddresses("203.0.113.1", 3478),
        "two ports": ResponderAddresses("203.0.113.1", 3478, alt_port=3479),
        "two IPs": ResponderAddresses("203.0.113.1", 3478, alt_host="203.0.113.2"),
        "four": ResponderAddresses("203.0.113.1", 3478, "203.0.113.2", 3479),
    }
    for name, layout in layouts.items():
        for change, (change_ip, change_port) in CHANGES.items():
            reply = binding_response(bytes(_binding(**{"CHANGE-REQUEST": change})), source, layout)
            assert reply is not None
            message = stun.parse_message(reply.data)
            possible = (not change_ip or layout.alt_host is not None) and (
                not change_port or layout.alt_port is not None
            )
            if possible:
                assert message.message_class == stun.Class.RESPONSE, (name, change)
                assert reply.send_from == PRIMARY.changed(change_ip, change_port)
                assert message.attributes["RESPONSE-ORIGIN"] == layout.address(reply.send_from)
            else:
                assert message.error_code == 420, (name, change)
                assert reply.send_from == PRIMARY  # an error leaves from where it was asked
            if name == "four" and possible:
                assert message.attributes["OTHER-ADDRESS"] == ("203.0.113.2", 3479)
            else:
                assert "OTHER-ADDRESS" not in message.attributes, (name, change)


def test_host_names_are_not_advertised() -> None:
    layout = ResponderAddresses("stun.example.com", 3478, "203.0.113.2", 3479)
    reply = binding_response(bytes(_binding()), ("192.0.2.7", 4000), layout)
    assert reply is not None
    message = stun.parse_message(reply.data)
    assert "RESPONSE-ORIGIN" not in message.attributes  # STUN addresses carry IPs only
    assert message.attributes["OTHER-ADDRESS"] == ("203.0.113.2", 3479)
    reply = binding_response(
        bytes(_binding()), ("192.0.2.7", 4000), layout, ResponderSocket(alt_ip=True)
    )
    assert reply is not None
    message = stun.parse_message(reply.data)
    assert message.attributes["RESPONSE-ORIGIN"] == ("203.0.113.2", 3478)
    assert "OTHER-ADDRESS" not in message.attributes


async def test_malformed_requests_are_dropped_on_every_socket(
    full_responder: StunServer, client: _Client
) -> None:
    request = _binding()
    # CHANGE-REQUEST whose value is 2 bytes instead of 4: aioice cannot unpack it.
    bad_change = bytearray(bytes(request)[:20] + b"\x00\x03\x00\x02\x00\x06\x00\x00")
    bad_change[2:4] = (8).to_bytes(2, "big")
    garbage = [b"", os.urandom(20), bytes(request)[:-2], bytes(bad_change)]
    for sock in ALL_SOCKETS:
        address = full_responder.socket_address(sock)
        assert address is not None
        for data in garbage:
            client.transport.sendto(data, address)
        request = _binding(**{"CHANGE-REQUEST": 0x6})
        reply, _ = await client.ask(address, request)
        assert reply.transaction_id == request.transaction_id
    assert client.replies.empty()


def test_start_refuses_an_alternate_ip_without_an_alternate_port() -> None:
    with pytest.raises(ValueError, match="alternate port"):
        asyncio.run(start_stun_server("127.0.0.1", 0, alt_host=ALT_IP))


async def test_garbage_is_dropped_and_service_continues(
    responder: StunServer, client: _Client
) -> None:
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    garbage = [
        b"",
        b"hello",
        os.urandom(20),
        os.urandom(500),
        bytes(_binding())[:-2],  # truncated
        bytes(response),  # not a request
        bytes(stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)),
        bytes(_binding())[:20] + b"\x00\x20\x00\x08" + b"\xff" * 8,  # bad XOR-MAPPED-ADDRESS
    ]
    for data in garbage:
        client.transport.sendto(data, responder.address)
    request = _binding()
    reply, _ = await client.ask(responder.address, request)
    assert reply.transaction_id == request.transaction_id
    assert client.replies.empty()


@given(st.binary(max_size=200), st.sampled_from(ALL_SOCKETS))
def test_binding_response_never_raises(data: bytes, received_on: ResponderSocket) -> None:
    layout = ResponderAddresses("127.0.0.1", 2, "127.0.0.2", 3)
    result = binding_response(data, ("127.0.0.1", 1), layout, received_on)
    if result is not None:
        stun.parse_message(result.data)


async def test_cloud_runs_stun_on_its_advertised_address(client: _Client) -> None:
    async with CloudServer(CloudConfig.demo(port=0, stun_port=0, stun_alt_port=0)) as cloud:
        info = cloud.stun_info
        assert info.alt_port is not None and info.alt_port != info.port
        reply, _ = await client.ask(cloud.stun_address, _binding())
        assert reply.attributes["XOR-MAPPED-ADDRESS"] == client.address
        client.transport.sendto(b"\x00" * 40, cloud.stun_address)
        reply, _ = await client.ask(cloud.stun_address, _binding())
        assert reply.message_class == stun.Class.RESPONSE
        async with aiohttp.ClientSession() as http, http.get(cloud.url + "/healthz") as resp:
            assert resp.status == 200


async def test_cloud_with_an_alternate_ip_hands_it_out(client: _Client) -> None:
    config = CloudConfig.demo(port=0, stun_port=0, stun_alt_port=0, stun_alt_host=ALT_IP)
    async with CloudServer(config) as cloud:
        info = cloud.stun_info
        assert info.alt_host == ALT_IP and info.alt_port is not None
        assert StunInfo.from_json(info.to_json()) == info
        reply, origin = await client.ask(cloud.stun_address, _binding(**{"CHANGE-REQUEST": 0x6}))
        assert origin == (ALT_IP, info.alt_port)
        assert reply.attributes["OTHER-ADDRESS"] == (ALT_IP, info.alt_port)


def test_stun_info_json_old_and_new() -> None:
    old = StunInfo.from_json({"host": "203.0.113.1", "port": 3478, "alt_port": 3479})
    assert old == StunInfo("203.0.113.1", 3478, 3479, None)
    new = StunInfo("203.0.113.1", 3478, 3479, "203.0.113.2")
    doc = new.to_json()
    assert StunInfo.from_json(doc) == new
    # An older client reads these three keys and ignores alt_host.
    assert (doc["host"], doc["port"], doc["alt_port"]) == ("203.0.113.1", 3478, 3479)
    for bad in ("", 5, ["203.0.113.2"]):
        with pytest.raises(ValueError, match="alt_host"):
            StunInfo.from_json({**doc, "alt_host": bad})


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"stun_alt_host": "127.0.0.2"}, "needs stun_alt_port"),
        ({"stun_alt_host": "stun.example.com", "stun_alt_port": 0}, "IP address"),
        ({"stun_alt_host": "0.0.0.0", "stun_alt_port": 0}, "IP address"),
        ({"stun_alt_host": "127.0.0.1", "stun_alt_port": 0}, "must differ"),
        (
            {"host": "0.0.0.0", "public_host": "cloud.example.com", "stun_alt_host": "127.0.0.2"}
            | {"stun_alt_port": 0},
            "needs host",
        ),
    ],
)
def test_alternate_ip_config_is_checked(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=f"stun_alt_host: .*{problem}"):
        CloudConfig.demo(**overrides)


def test_alternate_ip_with_a_wildcard_host_binds_the_public_address() -> None:
    config = CloudConfig.from_dict(
        {
            "host": "0.0.0.0",
            "public_host": "203.0.113.1",
            "stun_alt_port": 3479,
            "stun_alt_host": "203.0.113.2",
        }
    )
    assert config.stun_host == "203.0.113.1" and config.stun_alt_host == "203.0.113.2"
    assert CloudConfig(host="0.0.0.0").stun_host == "0.0.0.0"  # one IP: wildcard stays


def _framed(attrs: bytes, *, cookie: int = 0x2112A442, length: int | None = None) -> bytes:
    import struct

    size = len(attrs) if length is None else length
    return struct.pack("!HHI", 0x0001, size, cookie) + b"t" * 12 + attrs


def test_well_formed_checks_the_framing_aioice_lets_through() -> None:
    import struct

    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.add_fingerprint()
    assert well_formed(bytes(request))
    software = struct.pack("!HH", 0x8022, 5) + b"xp2p!\0\0\0"
    assert well_formed(_framed(software))
    assert well_formed(_framed(b""))
    refused = {
        "no magic cookie": _framed(b"", cookie=0),
        "length field too long": _framed(software, length=len(software) + 4),
        "length field too short": _framed(software, length=4),
        "length not a multiple of 4": _framed(software)[:-1],
        "truncated attribute": _framed(software[:-4], length=len(software) - 4),
        "overlong attribute": _framed(struct.pack("!HH", 0x8022, 9) + b"x" * 8),
        "bad FINGERPRINT length": _framed(struct.pack("!HH", 0x8028, 8) + b"x" * 8),
        "attribute after FINGERPRINT": _framed(struct.pack("!HHI", 0x8028, 4, 0) + software),
        "top bits set": b"\xc0" + _framed(b"")[1:],
        "short": b"\0\1\0\0",
    }
    for why, data in refused.items():
        assert not well_formed(data), why
        assert binding_response(data, ("198.51.100.7", 1), ResponderAddresses("1.2.3.4", 1)) is None
