"""Configuration of the link layer, as dataclasses (aioquic style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeGuard


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of the cloud's ``ice_servers`` list (WebRTC shape)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    @property
    def expires_at(self) -> int | None:
        """When TURN REST API credentials (``"<expiry>:<user>"``) stop working, if they are."""
        expiry, sep, _ = (self.username or "").partition(":")
        # ASCII digits: str.isdigit() also takes "²", which int() refuses with a ValueError.
        digits = expiry.isascii() and expiry.isdigit()
        return int(expiry) if sep and digits and len(expiry) <= 20 else None


@dataclass(frozen=True, slots=True)
class Conditions:
    """Impairments the user-space conditioner adds at this end, in both directions.

    ``rtt_ms`` is split evenly between the two directions, so a conditioner at one end alone
    adds the whole round trip. ``loss`` is the drop probability per datagram and direction.
    ``rate_bps`` caps each direction (0 = no cap).
    """

    rtt_ms: float = 0.0
    loss: float = 0.0
    rate_bps: int = 0
    seed: int | None = None

    @property
    def active(self) -> bool:
        return self.rtt_ms > 0 or self.loss > 0 or self.rate_bps > 0


@dataclass(frozen=True, slots=True)
class LinkConfig:
    ice_servers: tuple[IceServer, ...] = ()
    #: Addresses to gather host candidates on; None = every non-loopback interface, falling
    #: back to 127.0.0.1 on a machine that has nothing else (aioice never offers loopback).
    host_addresses: tuple[str, ...] | None = None
    use_ipv6: bool = False
    #: Offer and use relay candidates only (hides this end's addresses from the peer; tests).
    relay_only: bool = False
    #: This end's NAT as its last probe found it (``link.nat.NatType`` values). Both ends
    #: tell each other in the offer and answer, so the viewer knows whether a direct path can
    #: exist: if not, it takes the relay at once instead of waiting for direct checks.
    nat_type: str = "unknown"
    #: PEM text of the CA that signed the ``turns:`` (TURN over TLS) servers' certificates,
    #: for operators who run coturn with a certificate of their own CA. It replaces the
    #: system trust store for those servers; hostnames are checked either way.
    turn_tls_ca: str | None = None
    #: Bound on ICE checks plus the QUIC handshake; aioice alone gives up after about a minute.
    connect_timeout: float = 8.0
    #: Interval of QUIC PINGs; also keeps NAT bindings open (must stay under 15 s).
    keepalive_interval: float = 2.5
    #: A link with no packet from the peer for this long is dead.
    #: QUIC restarts its idle timer on the first PING sent after the peer went silent, so
    #: a dead peer is noticed after up to idle_timeout + keepalive_interval: 9.5 s, under
    #: the 10 s the seed's FAQ asks for (8 s gave 10.4 s in the NAT lab).
    idle_timeout: float = 7.0
    #: QUIC flow-control windows. A reader re-offers ``max_stream_data`` in half-window steps,
    #: so a stream always has >= 2 MiB of credit: ~168 Mbit/s at 100 ms RTT, more than the
    #: link's CPU allows on a small machine (bench/download.py never saw credit bind).
    max_stream_data: int = 4 * 1024 * 1024
    max_data: int = 16 * 1024 * 1024
    #: Unacknowledged bytes one response may have queued before its writer waits. It caps one
    #: response at send_buffer / RTT (512 KiB: 42 Mbit/s at 100 ms; 1 MiB: 84), and on a path
    #: slower than a live stream it is also video queued where the channel's lag skipping
    #: cannot see it (1 MiB = 10 s of 800 kbit/s): keep it near one BDP (bench/README.md).
    send_buffer: int = 1024 * 1024
    #: ``xp2p-bbr`` (link.bbr): model-based, holds its rate under random loss, with a
    #: first-frame-sized initial window; ``xp2p-cubic`` (link.congestion) is loss-based cubic
    #: with the same initial window.
    congestion_control: str = "xp2p-bbr"
    conditions: Conditions = Conditions()


def parse_ice_servers(doc: Any) -> tuple[IceServer, ...]:
    """The cloud's ``ice_servers`` list (WebRTC ``RTCIceServer`` shape); raises ValueError on
    a malformed one."""
    if not isinstance(doc, list):
        raise ValueError("ice_servers is not a list")
    out: list[IceServer] = []
    for entry in doc:
        if not isinstance(entry, dict):
            raise ValueError("ICE server entry is not an object")
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ValueError("ICE server entry needs a list of urls")
        username, credential = entry.get("username"), entry.get("credential")
        if not (username is None or isinstance(username, str)) or not (
            credential is None or isinstance(credential, str)
        ):
            raise ValueError("ICE server username and credential must be strings")
        out.append(IceServer(tuple(urls), username, credential))
    return tuple(out)


@dataclass(frozen=True)
class StunInfo:
    """Where the cloud's STUN responder listens. ``alt_port`` and ``alt_host`` are its
    alternate port and IP, for NAT-behaviour probing (RFC 5780); either may be absent."""

    host: str
    port: int
    alt_port: int | None = None
    alt_host: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Older clients read host, port and alt_port and ignore the rest.
        return {
            "host": self.host,
            "port": self.port,
            "alt_port": self.alt_port,
            "alt_host": self.alt_host,
        }

    @classmethod
    def from_json(cls, doc: Any) -> StunInfo:
        """Raises ValueError on a malformed entry."""
        if not isinstance(doc, dict):
            raise ValueError("stun is not an object")
        host, port, alt = doc.get("host"), doc.get("port"), doc.get("alt_port")
        alt_host = doc.get("alt_host")  # absent from older clouds
        if not isinstance(host, str) or not host or not _is_port(port):
            raise ValueError("stun needs host and port")
        if alt is not None and not _is_port(alt):
            raise ValueError("stun alt_port is not a port")
        if alt_host is not None and not (isinstance(alt_host, str) and alt_host):
            raise ValueError("stun alt_host is not a host")
        return cls(host, port, alt, alt_host)


def _is_port(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
