"""xp2p: open IoT-video P2P — cloud, device agent, viewer module and player."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import XP2PEventEnum, XP2PNotify_SubType
from xp2p.lazy import lazy_names

__version__ = "0.1.0"
#: The SDK version a device publishes at the end of its xp2pInfo (``XP2P...%<version>``).
SDK_VERSION = "2.4.0"

if TYPE_CHECKING:
    from xp2p.viewer import AppParams, FlvParams, P2PModule, StreamInfo

# The viewer pulls in aiohttp, aioice and aioquic: load it on first use, so that
# `import xp2p.flv` (or the errors) stays cheap.
__getattr__ = lazy_names(
    __name__, {name: "viewer" for name in ("AppParams", "FlvParams", "P2PModule", "StreamInfo")}
)


__all__ = [
    "SDK_VERSION",
    "AppParams",
    "ErrorCode",
    "FlvParams",
    "P2PModule",
    "StreamInfo",
    "XP2PError",
    "XP2PEventEnum",
    "XP2PNotify_SubType",
    "__version__",
]
