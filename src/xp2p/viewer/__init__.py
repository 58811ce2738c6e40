"""The viewer side: ``P2PModule`` and what its calls take and return.

The names below load on first use: ``xp2p.viewer.command_codec`` and ``xp2p.viewer.types``
import with the standard library alone, and importing them must not pull in aiohttp, aioice
and aioquic through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xp2p.lazy import lazy_names

if TYPE_CHECKING:
    from xp2p.viewer.command_codec import CommandResult
    from xp2p.viewer.download import LocalDownloadResult
    from xp2p.viewer.file_download import SavedFile
    from xp2p.viewer.module import AppParams, P2PModule
    from xp2p.viewer.types import FlvParams, StreamInfo

#: name -> the module that defines it
_LAZY = {
    "AppParams": "module",
    "CommandResult": "command_codec",
    "FlvParams": "types",
    "LocalDownloadResult": "download",
    "P2PModule": "module",
    "SavedFile": "file_download",
    "StreamInfo": "types",
}

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "AppParams",
    "CommandResult",
    "FlvParams",
    "LocalDownloadResult",
    "P2PModule",
    "SavedFile",
    "StreamInfo",
]
