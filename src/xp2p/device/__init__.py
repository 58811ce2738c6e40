"""The camera side: ``DeviceAgent`` (also the SDK for camera makers) and its configuration."""

from xp2p.device.agent import DeviceAgent
from xp2p.device.config import ChannelConfig, DeviceConfig

__all__ = ["ChannelConfig", "DeviceAgent", "DeviceConfig"]
