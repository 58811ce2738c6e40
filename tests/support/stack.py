"""Test helpers (not tests)."""

from __future__ import annotations

from dataclasses import dataclass

from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
from xp2p.media import TestPatternConfig, TestPatternSource
from xp2p.viewer import AppParams

PATTERN = TestPatternConfig(width=320, height=180, fps=25, bitrate=300_000, gop=25)


@dataclass
class Stack:
    cloud: CloudServer
    config: CloudConfig
    device: DeviceAgent

    @property
    def app_params(self) -> AppParams:
        app = self.config.apps[0]
        return AppParams(self.cloud.url, app.key, app.secret)

    def device_config(self, **overrides: object) -> DeviceConfig:
        account = self.config.devices[0]
        fields: dict[str, object] = {
            "cloud_url": self.cloud.url,
            "product_id": account.product_id,
            "device_name": account.device_name,
            "device_secret": account.secret,
            # Pinned, as a provisioned camera has it (never learned from the welcome).
            "grant_public_key": self.cloud.grant_public_key,
            "channels": {0: ChannelConfig(default=lambda: TestPatternSource(PATTERN))},
        }
        fields.update(overrides)
        return DeviceConfig(**fields)  # type: ignore[arg-type]
