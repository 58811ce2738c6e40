"""Which sources the edge may pull (against SSRF): public addresses, and the allowed origins.

A join names any URL, so without a rule the edge would fetch for whoever joins: the cloud's
own ``/healthz``, a metadata service at 169.254.169.254, a database on the private network.
By default the edge pulls only from public unicast addresses: the host is resolved (every
spelling getaddrinfo takes, ``0x7f000001`` and ``2130706433`` included) and the source is
refused when ANY address is loopback, private, link-local, multicast, unspecified, reserved,
CGNAT (100.64/10), or an IPv4-mapped/NAT64 form of one. `allowed_sources` opens exactly the
origins it lists (``scheme://host:port`` after `xp2p.swarm.edge_routes.url_origin`).

The same rule holds where the connection is made: `PolicyResolver` is the aiohttp
resolver of the edge's client session and drops the addresses the rule refuses, so a DNS
name that answers a public address to the check and 127.0.0.1 to the connect (rebinding)
reaches nothing. (aiohttp does not resolve IP literals: those are judged by the check alone,
and cannot change.) Redirects are followed by `xp2p.cloud.edge.source`, checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from xp2p.swarm.edge_routes import url_origin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SourceRefused(Exception):
    """The policy refuses this source; the message is for the edge's log only."""


class SourceUnresolved(Exception):
    """The source's host does not resolve (now): unavailable, not refused."""


def is_public_address(address: str | IPAddress) -> bool:
    """A public unicast address (IPv4-mapped, 6to4-free NAT64 forms judged by their IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # is_global is False for private, loopback, link-local, reserved, unspecified, CGNAT and
    # the documentation ranges; multicast is "global" to it, and not a source either.
    return ip.is_global and not ip.is_multicast


def parse_allowed(entries: tuple[str, ...]) -> frozenset[str]:
    """The `url_origin` form of each entry; ValueError naming a bad one."""
    origins = set()
    for entry in entries:
        origin = url_origin(entry) if isinstance(entry, str) else ""
        if not origin:
            raise ValueError(f"{entry!r} is not an http(s)://host[:port] origin")
        origins.add(origin)
    return frozenset(origins)


class SourcePolicy:
    def __init__(self, allowed: frozenset[str] = frozenset()) -> None:
        self.allowed = allowed
        #: (host, port) of the allowed origins, as the resolver is asked for them
        self._allowed_hosts = {_host_port(o) for o in allowed}

    def allow(self, url: str) -> None:
        """Open ``url``'s origin too (an embedding program's or a test's dynamic source)."""
        (origin,) = parse_allowed((url,))
        self.allowed = self.allowed | {origin}
        self._allowed_hosts.add(_host_port(origin))

    def is_allowed_origin(self, url: str) -> bool:
        return url_origin(url) in self.allowed

    def host_is_allowed(self, host: str, port: int) -> bool:
        return (host.lower().rstrip("."), port) in self._allowed_hosts

    async def check(self, url: str) -> None:
        """Return when ``url`` may be pulled now; SourceRefused (with the reason) if not."""
        origin = url_origin(url)
        if not origin:
            raise SourceRefused("not an http(s) URL with a host")
        if origin in self.allowed:
            return
        host, port = _host_port(origin)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except (OSError, UnicodeError) as exc:
                raise SourceUnresolved(f"the host does not resolve ({describe(exc)})") from None
            addresses = [str(info[4][0]) for info in infos]
        bad = [a for a in addresses if not is_public_address(a)]
        if bad or not addresses:
            raise SourceRefused(f"{host} is not a public address ({bad[0] if bad else 'none'})")


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver, less the addresses `SourcePolicy` refuses (for hosts that are not
    an allowed origin's): the connect itself cannot reach them."""

    def __init__(self, policy: SourcePolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.host_is_allowed(host, port):
            return results
        kept = [r for r in results if is_public_address(r["host"])]
        if not kept:
            raise OSError(f"no public address for {host}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _host_port(origin: str) -> tuple[str, int]:
    rest = origin.partition("://")[2]
    host, _, port = rest.rpartition(":")
    return host.strip("[]").lower(), int(port)


def describe(value: Any) -> str:
    """A short, repr-free description of an exception for the log."""
    if isinstance(value, OSError) and value.errno is not None:
        return f"{type(value).__name__} errno {value.errno}"
    return type(value).__name__
