"""A STUN Binding responder (RFC 5389, with RFC 5780's attributes for NAT-behaviour probing).

Message encoding and parsing come from ``aioice.stun``; this module only decides what to
answer (:func:`binding_response`, pure) and runs the UDP sockets (:class:`StunServer`).

The responder has up to four sockets: the primary IP and, optionally, an alternate IP, each
on the primary port and, optionally, an alternate port. A request carrying CHANGE-REQUEST is
answered from the socket that differs from the one it arrived on in the IP, the port or both,
as asked: that is what lets a client tell the filtering behaviours of its NAT apart
(RFC 5780 §4.4). A change that this responder cannot make (no alternate IP or port) gets a
420 error, as RFC 5780 §7.2 asks. OTHER-ADDRESS, the address that differs in both IP and port,
is advertised only when it exists: a standard client that saw an OTHER-ADDRESS on the same IP
would run its mapping test against the primary address again and call every NAT
endpoint-independent. Our own client learns a lone alternate port from the session's
``stun.alt_port`` instead.

Anything that is not a well-formed Binding request is dropped silently: a UDP port facing
the internet receives garbage, and an error reply to a spoofed source would reflect traffic.
"Well-formed" is checked here before aioice parses (:func:`well_formed`), since aioice
accepts a missing magic cookie and truncated attributes: the header's two zero bits, the magic
cookie, a message length that is the datagram's less 20 and a multiple of 4, and attributes
that tile the body exactly (each padded to 4 bytes, none overlong, FINGERPRINT last).

Answers are rate-limited per source IP (:class:`StunServer` ``rate``/``burst``, a bounded
token-bucket table): a flood from one address, or with spoofed sources aimed at one victim,
gets at most that many answers a second; the rest are dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aioice import stun

from xp2p.cloud.limits import RateLimiter

logger = logging.getLogger("xp2p.cloud")

#: CHANGE-REQUEST flags (RFC 5780 §7.2).
CHANGE_IP = 0x4
CHANGE_PORT = 0x2
_SOFTWARE = "xp2p"
_MAGIC_COOKIE = 0x2112A442
_HEADER = 20
#: Attributes whose value has one fixed length (RFC 5389 §15, RFC 5780 §7.2).
_FIXED_LENGTHS = {
    0x0003: 4,
    0x0008: 20,
    0x8028: 4,
}  # CHANGE-REQUEST, MESSAGE-INTEGRITY, FINGERPRINT
_FINGERPRINT = 0x8028
#: Answers per second per source IP, and how many at once, unless configured.
DEFAULT_RATE = 50.0
DEFAULT_BURST = 200
#: Source IPs the rate limiter remembers at most: spoofed sources cannot grow memory.
MAX_SOURCES = 10_000

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ResponderSocket:
    """One of the responder's sockets: which of its IPs and which of its ports."""

    alt_ip: bool = False
    alt_port: bool = False

    def changed(self, change_ip: bool, change_port: bool) -> ResponderSocket:
        return ResponderSocket(self.alt_ip != change_ip, self.alt_port != change_port)


PRIMARY = ResponderSocket()
ALL_SOCKETS = (
    PRIMARY,
    ResponderSocket(alt_port=True),
    ResponderSocket(alt_ip=True),
    ResponderSocket(alt_ip=True, alt_port=True),
)


@dataclass(frozen=True, slots=True)
class ResponderAddresses:
    """The responder's addresses as clients reach them; None = that alternate does not exist."""

    host: str
    port: int
    alt_host: str | None = None
    alt_port: int | None = None

    def address(self, sock: ResponderSocket) -> Address | None:
        """The address of ``sock``, or None when the responder has no such socket."""
        host = self.alt_host if sock.alt_ip else self.host
        port = self.alt_port if sock.alt_port else self.port
        if host is None or port is None:
            return None
        return host, port


@dataclass(frozen=True)
class StunReply:
    data: bytes
    #: The socket to send the reply from.
    send_from: ResponderSocket = PRIMARY


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _advertisable(address: Address | None) -> Address | None:
    # STUN address attributes carry IPs only: a host name cannot be advertised.
    return address if address is not None and _ip_literal(address[0]) else None


def well_formed(data: bytes) -> bool:
    """Whether ``data`` is framed as a STUN message (RFC 5389 §6, §15): see the module
    docstring. Pure and total: it never raises."""
    if len(data) < _HEADER or len(data) % 4:
        return False
    msg_type, length, cookie = struct.unpack_from("!HHI", data)
    if msg_type & 0xC000 or cookie != _MAGIC_COOKIE or length != len(data) - _HEADER:
        return False
    pos = _HEADER
    while pos < len(data):
        if pos + 4 > len(data):
            return False
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        fixed = _FIXED_LENGTHS.get(attr_type)
        if fixed is not None and attr_len != fixed:
            return False
        pos += 4 + attr_len + (-attr_len % 4)
        if pos > len(data):
            return False  # truncated, or an attribute longer than the message
        if attr_type == _FINGERPRINT and pos != len(data):
            return False  # FINGERPRINT comes last
    return True


def binding_response(
    data: bytes,
    source: Address,
    addresses: ResponderAddresses,
    received_on: ResponderSocket = PRIMARY,
) -> StunReply | None:
    """The reply to one datagram that arrived on ``received_on`` from ``source``, or None to
    drop it."""
    if not well_formed(data):
        return None
    try:
        request = stun.parse_message(data)
    except Exception:  # aioice raises ValueError, struct.error, UnicodeDecodeError...
        return None
    if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
        return None
    change = request.attributes.get("CHANGE-REQUEST", 0)
    send_from = received_on.changed(bool(change & CHANGE_IP), bool(change & CHANGE_PORT))
    if addresses.address(send_from) is None:
        reply = stun.Message(
            stun.Method.BINDING,
            stun.Class.ERROR,
            transaction_id=request.transaction_id,
            attributes={"ERROR-CODE": (420, "Unknown Attribute"), "SOFTWARE": _SOFTWARE},
        )
        reply.add_fingerprint()
        return StunReply(bytes(reply), received_on)
    attributes: dict[str, object] = {"XOR-MAPPED-ADDRESS": source, "MAPPED-ADDRESS": source}
    origin = _advertisable(addresses.address(send_from))
    if origin is not None:
        attributes["RESPONSE-ORIGIN"] = origin
    # OTHER-ADDRESS is relative to where the request arrived (RFC 5780 §7.3): it is the
    # source a "change IP and port" request sent there would be answered from.
    other = _advertisable(addresses.address(received_on.changed(True, True)))
    if other is not None:
        attributes["OTHER-ADDRESS"] = other
    attributes["SOFTWARE"] = _SOFTWARE
    reply = stun.Message(
        stun.Method.BINDING,
        stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
        attributes=attributes,
    )
    reply.add_fingerprint()
    return StunReply(bytes(reply), send_from)


class _StunProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, sock: ResponderSocket) -> None:
        self._server = server
        self._sock = sock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's datagram transport does not subclass DatagramTransport: cast, not assert.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # IPv6 sources carry (host, port, flowinfo, scope_id); STUN wants host and port.
        source = (str(addr[0]).split("%")[0], int(addr[1]))
        try:
            self._server._received(data, source, self._sock)
        except Exception:  # a responder must never die on one datagram
            logger.debug("STUN datagram from %s dropped", addr[0], exc_info=True)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable of a departed client) are normal on UDP.
        logger.debug("STUN socket error: %s", exc)


class StunServer:
    """One to four UDP sockets answering Binding requests. Use :func:`start_stun_server`."""

    def __init__(
        self,
        advertised_host: str | None = None,
        *,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._advertised_host = advertised_host
        self._sockets: dict[ResponderSocket, _StunProtocol] = {}
        self._addresses: ResponderAddresses | None = None
        self._limiter = RateLimiter(rate, burst, max_buckets=MAX_SOURCES)
        self._clock = clock
        #: datagrams dropped as malformed or not a Binding request, and for the rate limit
        self.dropped_malformed = 0
        self.dropped_rate = 0
        self.answered = 0

    @property
    def address(self) -> Address:
        """The primary socket's bound (host, port)."""
        address = self.socket_address(PRIMARY)
        assert address is not None, "STUN server not started"
        return address

    @property
    def alt_address(self) -> Address | None:
        """The bound address of the primary IP's alternate-port socket."""
        return self.socket_address(ResponderSocket(alt_port=True))

    @property
    def other_address(self) -> Address | None:
        """The bound address of the alternate IP's alternate-port socket (RFC 5780's
        OTHER-ADDRESS), when there is an alternate IP."""
        return self.socket_address(ResponderSocket(alt_ip=True, alt_port=True))

    def socket_address(self, sock: ResponderSocket) -> Address | None:
        proto = self._sockets.get(sock)
        if proto is None or proto.transport is None:
            return None
        host, port = proto.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def addresses(self) -> ResponderAddresses:
        """The addresses clients are told about (the advertised host for the primary IP)."""
        if self._addresses is not None:
            return self._addresses
        primary, other = self.address, self.socket_address(ResponderSocket(alt_ip=True))
        alt = self.alt_address
        return ResponderAddresses(
            self._advertised_host or primary[0],
            primary[1],
            other[0] if other is not None else None,
            alt[1] if alt is not None else None,
        )

    def _received(self, data: bytes, source: Address, sock: ResponderSocket) -> None:
        reply = binding_response(data, source, self.addresses, sock)
        if reply is None:
            self.dropped_malformed += 1
            return
        # Only answers cost a token: garbage is dropped before it can, and cheaply.
        if self._limiter.take((source[0],), self._clock()) > 0:
            self.dropped_rate += 1
            return
        proto = self._sockets[reply.send_from]
        assert proto.transport is not None
        self.answered += 1
        proto.transport.sendto(reply.data, source)

    async def _open(self, sock: ResponderSocket, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: _StunProtocol(self, sock), local_addr=(host, port)
        )
        self._sockets[sock] = proto

    def close(self) -> None:
        for proto in self._sockets.values():
            if proto.transport is not None:
                proto.transport.close()


async def start_stun_server(
    host: str,
    port: int,
    *,
    alt_port: int | None = None,
    alt_host: str | None = None,
    advertised_host: str | None = None,
    rate: float = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
) -> StunServer:
    """Bind the responder; port 0 picks a free port.

    With ``alt_port`` it also listens on that port of ``host``; with ``alt_host`` too (which
    needs ``alt_port``), on both ports of that second IP: the four sockets of RFC 5780.
    ``advertised_host`` is the address clients reach the primary IP at (for RESPONSE-ORIGIN
    and OTHER-ADDRESS), default the bound host; ``alt_host`` is bound and advertised as is.
    ``rate`` and ``burst``: answers per source IP (see the module docstring).
    """
    if alt_host is not None and alt_port is None:
        raise ValueError("an alternate STUN host needs an alternate port")
    server = StunServer(advertised_host, rate=rate, burst=burst)
    try:
        await server._open(PRIMARY, host, port)
        port = server.address[1]  # the alternate IP listens on the same ports
        if alt_port is not None:
            await server._open(ResponderSocket(alt_port=True), host, alt_port)
            alt = server.alt_address
            assert alt is not None
            alt_port = alt[1]
            if alt_host is not None:
                await server._open(ResponderSocket(alt_ip=True), alt_host, port)
                await server._open(ResponderSocket(alt_ip=True, alt_port=True), alt_host, alt_port)
    except OSError:
        server.close()
        raise
    server._addresses = server.addresses  # fixed from now on: no lookups per datagram
    logger.info(
        "STUN responder on %s",
        ", ".join(
            f"{a[0]}:{a[1]}" for a in map(server.socket_address, ALL_SOCKETS) if a is not None
        ),
    )
    return server
