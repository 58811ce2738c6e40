"""Recording live channels into segment files, and their index. Not implemented yet (issue 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xp2p.device.routes import DeviceRoutes


async def start(routes: DeviceRoutes) -> None:
    """Start one recorder per channel when ``routes.config.recordings_dir`` is set."""


async def close(routes: DeviceRoutes) -> None:
    """Stop the recorders, finishing the current segments."""
