"""``GET /ipc.flv?action=live``: a viewer subscribes to a LiveChannel."""

from __future__ import annotations

import logging

from xp2p.device.capacity import viewer_slot
from xp2p.device.channel import LiveChannel
from xp2p.device.request import QUALITIES, BadRequest, RequestContext
from xp2p.link import StreamClosed

logger = logging.getLogger("xp2p.device")

#: A new viewer waits at most this long for a channel whose source is still starting.
CHANNEL_START_TIMEOUT = 5.0


async def serve(ctx: RequestContext) -> None:
    ctx.require("live")
    quality = ctx.params.get("quality", "high")
    if quality not in QUALITIES:
        raise BadRequest(400, f"quality must be one of {', '.join(QUALITIES)}")
    live = ctx.channel().live[quality]
    with viewer_slot(ctx):  # 503 when full; freed however the pull ends
        await _pull(ctx, live)


async def _pull(ctx: RequestContext, live: LiveChannel) -> None:
    request = ctx.request
    if not await live.wait_ready(CHANNEL_START_TIMEOUT):
        raise BadRequest(503, f"channel {live.name} has no video ({live.failed or 'starting'})")
    start, subscription = live.subscribe()
    logger.info("link %d: live %s starts (%d viewers)", request.link.id, live.name, live.viewers)
    try:
        await request.respond(200, [("content-type", "video/x-flv"), ("cache-control", "no-store")])
        await request.write(start)
        while not request.closed:
            batch = await subscription.next_batch()
            if not batch:
                break  # the channel stopped
            await request.write(b"".join(tag.encode() for tag in batch))
    except StreamClosed:
        pass
    finally:
        subscription.close()
        logger.info(
            "link %d: live %s ends (skipped to keyframe %d times)",
            request.link.id,
            live.name,
            subscription.skips,
        )
