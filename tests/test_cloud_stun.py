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
from xp2p.cloud.stun import binding_response


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
    assert reply.attributes["OTHER-ADDRESS"] == responder.alt_address
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
    assert reply.attributes["OTHER-ADDRESS"] == responder.address
    # One IP only: "change IP" cannot be honoured.
    reply, _ = await client.ask(responder.address, _binding(**{"CHANGE-REQUEST": 0x4}))
    assert reply.message_class == stun.Class.ERROR and reply.error_code == 420


async def test_change_port_without_alternate_socket(client: _Client) -> None:
    server = await start_stun_server("127.0.0.1", 0)
    try:
        reply, _ = await client.ask(server.address, _binding(**{"CHANGE-REQUEST": 0x2}))
        assert reply.error_code == 420
        reply, _ = await client.ask(server.address, _binding())
        assert "OTHER-ADDRESS" not in reply.attributes
    finally:
        server.close()


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


@given(st.binary(max_size=200))
def test_binding_response_never_raises(data: bytes) -> None:
    result = binding_response(data, ("127.0.0.1", 1), origin=("127.0.0.1", 2))
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
