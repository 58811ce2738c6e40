"""A STUN Binding responder (RFC 5389, with the RFC 5780 attributes for NAT probing).

Message encoding and parsing come from ``aioice.stun``; this module only decides what to
answer (:func:`binding_response`, pure) and runs one or two UDP sockets (:class:`StunServer`).
With a second socket on another port, a request carrying CHANGE-REQUEST "change port" is
answered from the other socket, which lets a client tell address-dependent filtering apart
from endpoint-independent filtering. There is one IP address only, so "change IP" cannot be
honoured and gets a 420 error, as RFC 5780 §7.2 asks.

Anything that is not a well-formed Binding request is dropped silently: a UDP port facing
the internet receives garbage, and an error reply to a spoofed source would reflect traffic.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, cast

from aioice import stun

logger = logging.getLogger("xp2p.cloud")

_CHANGE_IP = 0x4
_CHANGE_PORT = 0x2
_SOFTWARE = "xp2p"

Address = tuple[str, int]


@dataclass(frozen=True)
class StunReply:
    data: bytes
    #: Send from the alternate socket (the request asked to change port).
    from_alternate: bool = False


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def binding_response(
    data: bytes,
    source: Address,
    *,
    origin: Address | None = None,
    alternate: Address | None = None,
) -> StunReply | None:
    """The reply to one datagram, or None to drop it.

    ``origin`` is the address the request arrived on and ``alternate`` the other socket's, as
    clients should see them; each is advertised only when it is an IP literal (STUN address
    attributes cannot carry names).
    """
    try:
        request = stun.parse_message(data)
    except Exception:  # aioice raises ValueError, struct.error, UnicodeDecodeError...
        return None
    if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
        return None
    change = request.attributes.get("CHANGE-REQUEST", 0)
    from_alternate = bool(change & _CHANGE_PORT)
    if change & _CHANGE_IP or (from_alternate and alternate is None):
        reply = stun.Message(
            stun.Method.BINDING,
            stun.Class.ERROR,
            transaction_id=request.transaction_id,
            attributes={"ERROR-CODE": (420, "Unknown Attribute"), "SOFTWARE": _SOFTWARE},
        )
        reply.add_fingerprint()
        return StunReply(bytes(reply))
    attributes: dict[str, object] = {
        "XOR-MAPPED-ADDRESS": source,
        "MAPPED-ADDRESS": source,
    }
    sent_from = alternate if from_alternate else origin
    if sent_from is not None and _ip_literal(sent_from[0]):
        attributes["RESPONSE-ORIGIN"] = sent_from
    if alternate is not None and _ip_literal(alternate[0]):
        attributes["OTHER-ADDRESS"] = alternate
    attributes["SOFTWARE"] = _SOFTWARE
    reply = stun.Message(
        stun.Method.BINDING,
        stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
        attributes=attributes,
    )
    reply.add_fingerprint()
    return StunReply(bytes(reply), from_alternate)


class _StunProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, alternate: bool) -> None:
        self._server = server
        self._alternate = alternate
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's datagram transport does not subclass DatagramTransport: cast, not assert.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # IPv6 sources carry (host, port, flowinfo, scope_id); STUN wants host and port.
        source = (str(addr[0]).split("%")[0], int(addr[1]))
        try:
            self._server._received(data, source, self._alternate)
        except Exception:  # a responder must never die on one datagram
            logger.debug("STUN datagram from %s dropped", addr[0], exc_info=True)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable of a departed client) are normal on UDP.
        logger.debug("STUN socket error: %s", exc)


class StunServer:
    """One or two UDP sockets answering Binding requests. Use :func:`start_stun_server`."""

    def __init__(self, advertised_host: str | None = None) -> None:
        self._advertised_host = advertised_host
        self._primary: _StunProtocol | None = None
        self._secondary: _StunProtocol | None = None

    @property
    def address(self) -> Address:
        """The primary socket's bound (host, port)."""
        return self._bound(self._primary)

    @property
    def alt_address(self) -> Address | None:
        return self._bound(self._secondary) if self._secondary is not None else None

    @staticmethod
    def _bound(proto: _StunProtocol | None) -> Address:
        assert proto is not None and proto.transport is not None, "STUN server not started"
        host, port = proto.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def _advertised(self, bound: Address | None) -> Address | None:
        if bound is None:
            return None
        host = self._advertised_host or bound[0]
        return host, bound[1]

    def _received(self, data: bytes, source: Address, on_alternate: bool) -> None:
        primary, secondary = self._advertised(self.address), self._advertised(self.alt_address)
        origin, other = (secondary, primary) if on_alternate else (primary, secondary)
        reply = binding_response(data, source, origin=origin, alternate=other)
        if reply is None:
            return
        # "Change port" means the other socket from the one the request came in on.
        proto = self._secondary if on_alternate != reply.from_alternate else self._primary
        assert proto is not None and proto.transport is not None
        proto.transport.sendto(reply.data, source)

    async def _open(self, host: str, port: int, alternate: bool) -> _StunProtocol:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: _StunProtocol(self, alternate), local_addr=(host, port)
        )
        return proto

    def close(self) -> None:
        for proto in (self._primary, self._secondary):
            if proto is not None and proto.transport is not None:
                proto.transport.close()


async def start_stun_server(
    host: str,
    port: int,
    *,
    alt_port: int | None = None,
    advertised_host: str | None = None,
) -> StunServer:
    """Bind the responder; port 0 picks a free port. ``advertised_host`` is the address
    clients reach us at (for RESPONSE-ORIGIN/OTHER-ADDRESS), default the bound host."""
    server = StunServer(advertised_host)
    server._primary = await server._open(host, port, alternate=False)
    if alt_port is not None:
        try:
            server._secondary = await server._open(host, alt_port, alternate=True)
        except OSError:
            server.close()
            raise
    alt = server.alt_address
    logger.info(
        "STUN responder on %s:%d%s", *server.address, f", alternate port {alt[1]}" if alt else ""
    )
    return server
