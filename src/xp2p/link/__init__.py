"""One authenticated, encrypted P2P link: ICE (aioice) + QUIC (aioquic) + HTTP/3."""

from xp2p.link.config import Conditions, IceServer, LinkConfig
from xp2p.link.connect import PendingLink, accept_link, open_link, parse_offer
from xp2p.link.ice import IceParameters, LinkError
from xp2p.link.identity import LinkIdentity, certificate_fingerprint
from xp2p.link.link import Link
from xp2p.link.requests import IncomingRequest, ResponseStream, StreamClosed
from xp2p.link.xp2pinfo import Xp2pInfo

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
