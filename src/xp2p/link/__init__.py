"""One authenticated, encrypted P2P link: ICE (aioice) + QUIC (aioquic) + HTTP/3.

The names below load on first use: ``xp2p.link.errors`` and ``xp2p.link.nat_behaviour``
(the pure half of NAT discovery) import with the standard library alone, and importing
them must not pull in aioice, aioquic and cryptography through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xp2p.lazy import lazy_names
from xp2p.link.errors import LinkError, StreamClosed

if TYPE_CHECKING:
    from xp2p.link.config import Conditions, IceServer, LinkConfig
    from xp2p.link.connect import PendingLink, accept_link, open_link, parse_offer
    from xp2p.link.ice import IceParameters
    from xp2p.link.identity import LinkIdentity, certificate_fingerprint
    from xp2p.link.link import Link
    from xp2p.link.requests import IncomingRequest, ResponseStream
    from xp2p.link.xp2pinfo import Xp2pInfo

#: name -> the module that defines it
_LAZY = {
    "Conditions": "config",
    "IceServer": "config",
    "LinkConfig": "config",
    "PendingLink": "connect",
    "accept_link": "connect",
    "open_link": "connect",
    "parse_offer": "connect",
    "IceParameters": "ice",
    "LinkIdentity": "identity",
    "certificate_fingerprint": "identity",
    "Link": "link",
    "IncomingRequest": "requests",
    "ResponseStream": "requests",
    "Xp2pInfo": "xp2pinfo",
}

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "Conditions",
    "IceParameters",
    "IceServer",
    "IncomingRequest",
    "Link",
    "LinkConfig",
    "LinkError",
    "LinkIdentity",
    "PendingLink",
    "ResponseStream",
    "StreamClosed",
    "Xp2pInfo",
    "accept_link",
    "certificate_fingerprint",
    "open_link",
    "parse_offer",
]
