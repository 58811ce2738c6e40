"""Test helpers (not tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from tests.support.stack import Stack
from xp2p.device import DeviceAgent
from xp2p.flv import FlvHeader, FlvTag
from xp2p.media import MediaSource


class DeviceSwap:
    """Replaces the stack's device with others, and closes every one it started (the stack
    fixture closes only the device it made itself)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.started: list[DeviceAgent] = []

    def build(self, **overrides: Any) -> DeviceAgent:
        return DeviceAgent(self.stack.device_config(**overrides))

    async def start(self, device: DeviceAgent | None = None, **overrides: Any) -> DeviceAgent:
        device = device or self.build(**overrides)
        await self.stack.device.close()
        self.started.append(device)
        self.stack.device = device
        await device.start()
        await device.wait_signed_in(10)
        return device

    async def close(self) -> None:
        for device in self.started:
            await device.close()


class IdleSource(MediaSource):
    """A channel that never produces video: downloads need a channel, not an encoder
    competing with the transfer for the machine's two cores."""

    def __init__(self) -> None:
        self.header = FlvHeader(has_audio=False, has_video=True)
        self.description = "idle"
        self._closed = asyncio.Event()

    async def _tags(self) -> AsyncIterator[FlvTag]:
        await self._closed.wait()
        return
        yield  # an async generator that ends when closed

    def tags(self) -> AsyncIterator[FlvTag]:
        return self._tags()

    async def aclose(self) -> None:
        self._closed.set()
