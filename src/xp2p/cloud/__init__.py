"""The cloud service: app API, device sessions, signalling hub and STUN.

See docs/architecture.md for its place and docs/protocol.md for what it speaks.
"""

from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import AppConfig, CloudConfig, ConfigError, DeviceConfig, TurnServerConfig
from xp2p.cloud.registry import DevicePresence, DeviceRegistry, MemoryRegistry
from xp2p.cloud.stun import StunServer, start_stun_server

__all__ = [
    "AppConfig",
    "CloudConfig",
    "CloudServer",
    "ConfigError",
    "DeviceConfig",
    "DevicePresence",
    "DeviceRegistry",
    "MemoryRegistry",
    "StunServer",
    "TurnServerConfig",
    "start_stun_server",
]
