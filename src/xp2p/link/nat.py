"""NAT probing with STUN: what address the cloud sees for a local UDP socket.

This is the basic probe ``init`` runs (mapped address, open vs behind NAT); the full RFC 5780
behaviour classification (mapping and filtering) builds on the same exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

from aioice import stun

from xp2p.link.ice import LinkError


@dataclass(frozen=True, slots=True)
class NatProbe:
    local: tuple[str, int]
    mapped: tuple[str, int]

    @property
    def nat_type(self) -> str:
        """``open`` when the cloud sees our own address, else ``nat``."""
        return "open" if self.mapped == self.local else "nat"


class _StunClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.responses.put_nowait((data, addr))


async def probe_mapping(
    server: tuple[str, int], *, local_host: str = "0.0.0.0", timeout: float = 2.0, tries: int = 3
) -> NatProbe:
    """One STUN Binding exchange (retransmitted ``tries`` times) within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _StunClient, local_addr=(local_host, 0), family=socket.AF_INET
    )
    try:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        data = bytes(request)
        deadline = loop.time() + timeout
        for attempt in range(tries):
            transport.sendto(data, server)
            wait = min((deadline - loop.time()), timeout / tries * (attempt + 1))
            with contextlib.suppress(TimeoutError):
                while True:
                    raw, _addr = await asyncio.wait_for(protocol.responses.get(), max(0.01, wait))
                    try:
                        message = stun.parse_message(raw)
                    except ValueError:
                        continue
                    if message.transaction_id != request.transaction_id:
                        continue
                    mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
                    if mapped is None:
                        raise LinkError("nat_probe", "STUN response lacks XOR-MAPPED-ADDRESS")
                    local = transport.get_extra_info("sockname")[:2]
                    if local[0] == "0.0.0.0":
                        local = (_route_address(server[0]), local[1])
                    return NatProbe(local=local, mapped=(mapped[0], mapped[1]))
        raise LinkError(
            "nat_probe", f"no STUN answer from {server[0]}:{server[1]} within {timeout:.1f} s"
        )
    finally:
        transport.close()


def _route_address(remote_host: str) -> str:
    """The local address the kernel would use to reach remote_host (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((remote_host, 9))
        address: str = sock.getsockname()[0]
        return address
