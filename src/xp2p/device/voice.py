"""Not implemented yet (issue 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xp2p.device.routes import BadRequest, RequestContext

if TYPE_CHECKING:
    from xp2p.device.routes import DeviceRoutes


async def serve(ctx: RequestContext) -> None:
    raise BadRequest(400, "this device does not support that request yet")


async def close(routes: DeviceRoutes) -> None:
    """End an open talk session (device shutdown)."""
