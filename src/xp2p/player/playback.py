"""The local player's recordings: ``/playback/PRODUCT/DEVICE.flv?start_time=S&end_time=E
[&channel=N]`` (unix seconds) plays what the device recorded in ``[S, E)``.

Unlike live pulls, playbacks are never shared: each player request gets its own service (its
own link and pull, ``playback:PRODUCT/DEVICE:n``), because each player has its own position,
pause and seeks. Closing the player stops the pull and the service; the device's end of the
span ends the HTTP response. The device's refusals keep their status (400 bad times or a span
under 5 s, 403 not allowed, 404 nothing recorded); anything else is 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from aiohttp import web

from xp2p.errors import ErrorCode, XP2PError
from xp2p.viewer import FlvParams, P2PModule, StreamInfo

logger = logging.getLogger("xp2p.player")

#: A player that lets this much pile up (it reads slower than real time) is disconnected.
MAX_BACKLOG = 8 * 1024 * 1024
_ids = itertools.count(1)
_DEVICE_STATUS = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound}


def _digits(query: Any, key: str, default: str | None = None) -> str:
    value = query.get(key, default)
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 10:
        raise web.HTTPBadRequest(text=f"{key} must be unix seconds (digits)\n")
    return str(value)


async def serve_playback(module: P2PModule, request: web.Request) -> web.StreamResponse:
    product, device = request.match_info["product"], request.match_info["device"]
    start = _digits(request.query, "start_time")
    end = _digits(request.query, "end_time")
    channel = _digits(request.query, "channel", "0")
    service_id = f"playback:{product}/{device}:{next(_ids)}"
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    backlog = 0
    device_status: list[int] = []

    def on_msg(event: str, subtype: str, detail: Any) -> None:
        if subtype == "parsed":
            device_status.append(int(detail["status"]))
        elif subtype in ("eof", "disconnect", "fail"):
            queue.put_nowait(None)

    def on_data(data: bytes) -> None:
        nonlocal backlog
        backlog += len(data)
        queue.put_nowait(data if backlog <= MAX_BACKLOG else None)

    flv = FlvParams(params=f"action=playback&channel={channel}&start_time={start}&end_time={end}")
    try:
        await module.start_p2p_service(
            service_id, StreamInfo(product_id=product, device_name=device), msg_callback=on_msg
        )
        await module.start_stream(service_id, on_data, flv)
    except XP2PError as exc:
        await module.stop_p2p_service(service_id)
        logger.warning("cannot play back %s/%s: %s", product, device, exc)
        if exc.code == ErrorCode.BAD_PARAM:
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc
        status = _DEVICE_STATUS.get(device_status[-1] if device_status else 0, web.HTTPBadGateway)
        raise status(text=f"{exc}\n") from exc
    logger.info("playback %s of %s/%s from %s to %s", service_id, product, device, start, end)
    response = web.StreamResponse(
        headers={"Content-Type": "video/x-flv", "Cache-Control": "no-store"}
    )
    try:
        await response.prepare(request)
        while (data := await queue.get()) is not None:
            backlog -= len(data)
            await response.write(data)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the player went away
    finally:
        with contextlib.suppress(XP2PError):
            await module.stop_p2p_service(service_id)
        logger.info("playback %s ended", service_id)
    return response
