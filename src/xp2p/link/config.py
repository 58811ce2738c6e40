"""Configuration of the link layer, as dataclasses (aioquic style)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of the cloud's ``ice_servers`` list (WebRTC shape)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


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
    #: Bound on ICE checks plus the QUIC handshake; aioice alone gives up after about a minute.
    connect_timeout: float = 8.0
    #: Interval of QUIC PINGs; also keeps NAT bindings open (must stay under 15 s).
    keepalive_interval: float = 2.5
    #: A link with no packet from the peer for this long is dead.
    idle_timeout: float = 8.0
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
    #: ``xp2p-cubic`` (link.congestion): cubic with a first-frame-sized initial window.
    congestion_control: str = "xp2p-cubic"
    conditions: Conditions = Conditions()
