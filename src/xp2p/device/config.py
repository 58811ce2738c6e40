"""Configuration of a device agent, as dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from xp2p.link import LinkConfig
from xp2p.media import MediaSource

SourceFactory = Callable[[], MediaSource]


@dataclass(frozen=True)
class ChannelConfig:
    """Sources of one channel by quality; ``default`` serves every quality not listed."""

    default: SourceFactory
    by_quality: dict[str, SourceFactory] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceConfig:
    cloud_url: str
    product_id: str
    device_name: str
    device_secret: str = field(repr=False)
    channels: dict[int, ChannelConfig] = field(default_factory=dict)
    link: LinkConfig = field(default_factory=LinkConfig)
    #: How far behind live a viewer may fall before it skips to the next keyframe.
    max_lag: float = 3.0

    @property
    def label(self) -> str:
        return f"{self.product_id}/{self.device_name}"
