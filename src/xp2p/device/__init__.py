"""The camera side: ``DeviceAgent`` (also the SDK for camera makers) and its configuration.

The names below load on first use: ``xp2p.device.playback_session`` and
``xp2p.device.record_index`` (pure cores) import with the standard library alone, and
importing them must not pull in aiohttp, aioice and aioquic through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xp2p.lazy import lazy_names

if TYPE_CHECKING:
    from xp2p.device.agent import DeviceAgent
    from xp2p.device.config import ChannelConfig, DeviceConfig

#: name -> the module that defines it
_LAZY = {
    "DeviceAgent": "agent",
    "ChannelConfig": "config",
    "DeviceConfig": "config",
}

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["ChannelConfig", "DeviceAgent", "DeviceConfig"]
