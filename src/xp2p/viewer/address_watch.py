"""Noticing that this machine's own addresses changed, so that the module re-probes its NAT
and reports natChanged without the app calling ``reset_p2p`` or a link being lost first.

A phone that moves from Wi-Fi to another network loses one interface and gains another; a
laptop on a new network gets a new DHCP lease. Neither tells the process, so the watch looks:
the host addresses ICE would gather (aioice's own list), every ``poll`` seconds. Between two
networks the old address has gone and the new one (or its route) is not there yet: a probe
then would only fail, so the watch waits for an address and a route to the STUN server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

import aioice.ice

from xp2p.link.handover_io import routable

logger = logging.getLogger("xp2p.viewer")

#: Seconds between two looks; each look is one getifaddrs, so this is cheap.
POLL = 1.0


def host_addresses(use_ipv6: bool) -> frozenset[str]:
    """This machine's addresses that ICE gathers, loopback left out (it never changes)."""
    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=use_ipv6)
    return frozenset(a for a in found if not ipaddress.ip_address(a).is_loopback)


async def watch_addresses(
    on_change: Callable[[frozenset[str], frozenset[str]], bool],
    *,
    stun: tuple[str, int],
    use_ipv6: bool,
    poll: float = POLL,
) -> None:
    """Calls ``on_change(before, now)`` when the addresses changed and the new network is
    usable; runs until cancelled. ``on_change`` returns False when it could not act (a probe
    was already running): the same change is then offered again at the next look."""
    known = host_addresses(use_ipv6)
    while True:
        await asyncio.sleep(poll)
        present = host_addresses(use_ipv6)
        if present == known or not present or not routable(stun):
            continue
        if on_change(known, present):
            known = present
