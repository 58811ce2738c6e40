"""The viewer side: ``P2PModule`` and what its calls take and return."""

from xp2p.viewer.command import CommandResult
from xp2p.viewer.download import LocalDownloadResult
from xp2p.viewer.module import AppParams, P2PModule
from xp2p.viewer.service import FlvParams, StreamInfo

__all__ = [
    "AppParams",
    "CommandResult",
    "FlvParams",
    "LocalDownloadResult",
    "P2PModule",
    "StreamInfo",
]
