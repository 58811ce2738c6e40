"""Not implemented yet (issue 3)."""

from __future__ import annotations

from xp2p.device.routes import BadRequest, RequestContext


async def serve(ctx: RequestContext) -> None:
    raise BadRequest(400, "this device does not support that request yet")
