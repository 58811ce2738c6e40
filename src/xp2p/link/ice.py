"""ICE through aioice: candidate gathering, the offer/answer halves, and a bounded connect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aioice
from aioice import Candidate
from aioice.mdns import is_mdns_hostname

from xp2p.link.config import IceServer, LinkConfig

logger = logging.getLogger("xp2p.link")

MAX_CANDIDATES = 32
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


class LinkError(Exception):
    """The link could not be set up or was lost; ``reason`` is a short machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IceParameters:
    """What one side tells the other through signalling."""

    ufrag: str
    pwd: str
    candidates: tuple[str, ...]  #: SDP candidate lines, without the "candidate:" prefix

    def to_json(self) -> dict[str, Any]:
        return {"ufrag": self.ufrag, "pwd": self.pwd, "candidates": list(self.candidates)}

    @classmethod
    def from_json(cls, data: Any) -> IceParameters:
        if not isinstance(data, dict):
            raise LinkError("bad_signal", "ICE parameters are not an object")
        ufrag, pwd, cands = data.get("ufrag"), data.get("pwd"), data.get("candidates")
        if not isinstance(ufrag, str) or not isinstance(pwd, str) or not isinstance(cands, list):
            raise LinkError("bad_signal", "ICE parameters lack ufrag, pwd or candidates")
        if len(cands) > MAX_CANDIDATES or not all(isinstance(c, str) for c in cands):
            raise LinkError("bad_signal", "ICE candidate list is malformed or too long")
        return cls(ufrag, pwd, tuple(cands))


def _parse_server(url: str) -> tuple[str, tuple[str, int], str]:
    """``stun:host:port`` / ``turn:host:port?transport=tcp`` → (scheme, (host, port), transport)."""
    scheme, _, rest = url.partition(":")
    rest, _, query = rest.partition("?")
    parts = urlsplit("//" + rest)
    if parts.hostname is None:
        raise ValueError(f"ICE server URL without host: {url}")
    default_port = 5349 if scheme in ("turns", "stuns") else 3478
    transport = "tcp" if "transport=tcp" in query or scheme == "turns" else "udp"
    return scheme, (parts.hostname, parts.port or default_port), transport


class IceConnection(aioice.Connection):
    """aioice's connection with a choice of host addresses.

    aioice discovers interfaces itself and always leaves out loopback, so a machine with only
    127.0.0.1 (or a test that wants one interface) could never pair. The override mirrors
    ``aioice.Connection.gather_candidates`` but takes the addresses from the caller.
    """

    def __init__(self, *, host_addresses: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._xp2p_host_addresses = host_addresses
        #: Set by the link once QUIC runs: each datagram then goes straight to it from the
        #: socket's callback, instead of through aioice's queue and a task switch each.
        self.datagram_handler: Callable[[bytes], None] | None = None

    def data_received(self, data: bytes, component: int) -> None:
        if self.datagram_handler is not None:
            self.datagram_handler(data)
        else:
            super().data_received(data, component)

    def send_now(self, data: bytes) -> None:
        """``send()`` without a coroutine per datagram.

        aioice's ``send`` only looks up the nominated pair and calls its transport's
        ``sendto`` (a TURN relay's transport queues the send itself), so doing the same here
        sends exactly the same way. Raises ConnectionError when there is no pair (closed).
        """
        pair = self._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        pair.protocol.transport.sendto(data, pair.remote_addr)

    async def gather_candidates(self) -> None:
        if not self._local_candidates_start:
            self._local_candidates_start = True
            for component in self._components:
                self._local_candidates += await self.get_component_candidates(
                    component=component, addresses=self._xp2p_host_addresses, timeout=3
                )
            self._local_candidates_end = True
            self._grow_receive_buffers()

    def _grow_receive_buffers(self) -> None:
        # aioice asks for 256 KiB; a download burst at 100 ms RTT overflowed it and the drops
        # shrank the congestion window (bench/download.py: 38 -> 61 Mbit/s with 4 MiB). The
        # kernel caps the request at net.core.rmem_max.
        for protocol in self._protocols:
            transport = getattr(protocol, "transport", None)
            sock = None if transport is None else transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


def host_addresses(config: LinkConfig) -> list[str]:
    if config.host_addresses is not None:
        return list(config.host_addresses)
    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=config.use_ipv6)
    return list(found) or ["127.0.0.1"]


def create_ice(config: LinkConfig, *, controlling: bool) -> IceConnection:
    kwargs: dict[str, Any] = {}
    for server in config.ice_servers:
        kwargs.update(_server_kwargs(server, kwargs))
    return IceConnection(
        host_addresses=host_addresses(config),
        ice_controlling=controlling,
        components=1,
        use_ipv6=config.use_ipv6,
        **kwargs,
    )


def _server_kwargs(server: IceServer, current: dict[str, Any]) -> dict[str, Any]:
    """aioice takes one STUN and one TURN server: use the first of each kind."""
    out: dict[str, Any] = {}
    for url in server.urls:
        try:
            scheme, addr, transport = _parse_server(url)
        except ValueError:
            logger.warning("ignoring malformed ICE server URL %r", url)
            continue
        if scheme in ("stun", "stuns") and "stun_server" not in current:
            out["stun_server"] = addr
        elif scheme in ("turn", "turns") and "turn_server" not in current:
            out.update(
                turn_server=addr,
                turn_username=server.username,
                turn_password=server.credential,
                turn_transport=transport,
                turn_ssl=scheme == "turns",
            )
    return out


def local_parameters(ice: aioice.Connection) -> IceParameters:
    return IceParameters(
        ufrag=ice.local_username,
        pwd=ice.local_password,
        candidates=tuple(c.to_sdp() for c in ice.local_candidates),
    )


async def set_remote_parameters(ice: aioice.Connection, remote: IceParameters) -> None:
    ice.remote_username = remote.ufrag
    ice.remote_password = remote.pwd
    added = 0
    for line in remote.candidates:
        try:
            candidate = Candidate.from_sdp(line)
        except (ValueError, IndexError):
            logger.debug("skipping malformed remote candidate %r", line)
            continue
        if not 0 < candidate.port < 65536:
            # asyncio treats the OverflowError of such a sendto as fatal and closes our socket,
            # which would take the good pairs on that socket down with it.
            logger.debug("skipping remote candidate with a bad port %r", line)
            continue
        if is_mdns_hostname(candidate.host):
            # aioice peers never offer mDNS names, and resolving one costs a second of
            # multicast queries each, which a hostile offer would turn into a 32 s stall.
            logger.debug("skipping mDNS remote candidate %r", line)
            continue
        await ice.add_remote_candidate(candidate)
        added += 1
    await ice.add_remote_candidate(None)
    if not added:
        raise LinkError("no_candidates", "the peer offered no usable ICE candidates")


def selected_pair(ice: aioice.Connection) -> tuple[Candidate, Candidate] | None:
    """(local, remote) candidates of the nominated pair, for logs and ``link_mode``."""
    pair = getattr(ice, "_nominated", {}).get(1)
    if pair is None:
        return None
    return pair.local_candidate, pair.remote_candidate


async def connect_ice(ice: aioice.Connection, timeout: float) -> None:
    try:
        await asyncio.wait_for(ice.connect(), timeout)
    except TimeoutError as exc:
        raise LinkError("ice_timeout", f"no ICE path to the peer within {timeout:.0f} s") from exc
    except ConnectionError as exc:
        raise LinkError("ice_failed", f"ICE negotiation failed: {exc}") from exc
