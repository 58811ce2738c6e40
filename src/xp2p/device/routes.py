"""The requests a device serves on a link (SPEC §3): parameter rules, status codes, live video."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from xp2p.auth import AccessGrant
from xp2p.device.channel import LiveChannel
from xp2p.link import IncomingRequest, StreamClosed

logger = logging.getLogger("xp2p.device")

QUALITIES = ("standard", "high", "super")
#: A new viewer waits at most this long for a channel whose source is still starting.
CHANNEL_START_TIMEOUT = 5.0


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Channel:
    """One camera channel: a LiveChannel per quality (often the same one for all)."""

    number: int
    live: dict[str, LiveChannel]


def check_params(params: dict[str, str]) -> None:
    """Rules every request shares: internal keys are ours, user keys never start with ``_``."""
    for key in params:
        if key.startswith("_") and key not in ("_crypto", "_token"):
            raise BadRequest(400, f"unknown internal parameter {key!r}")


def channel_number(params: dict[str, str]) -> int:
    raw = params.get("channel", "0")
    if not raw.isdigit() or len(raw) > 4:
        raise BadRequest(400, f"channel must be a small non-negative integer, got {raw!r}")
    return int(raw)


class DeviceRoutes:
    def __init__(self, channels: dict[int, Channel]) -> None:
        self.channels = channels
        self.requests_served = 0

    async def handle(self, request: IncomingRequest, grant: AccessGrant) -> None:
        started = time.monotonic()
        try:
            params = request.params()
        except ValueError as exc:
            await _plain(request, 400, f"bad query: {exc}")
            return
        try:
            check_params(params)
            if request.path == "/ipc.flv" and request.method == "GET":
                await self._ipc_flv(request, params, grant)
            else:
                raise BadRequest(404, f"no such path: {request.method} {request.path}")
        except BadRequest as exc:
            logger.info(
                "link %d: %s %s -> %d %s",
                request.link.id,
                request.method,
                request.path,
                exc.status,
                exc.reason,
            )
            await _plain(request, exc.status, exc.reason)
        finally:
            self.requests_served += 1
            logger.debug(
                "link %d: %s %s done in %.3f s",
                request.link.id,
                request.method,
                request.path,
                time.monotonic() - started,
            )

    async def _ipc_flv(
        self, request: IncomingRequest, params: dict[str, str], grant: AccessGrant
    ) -> None:
        action = params.get("action", "")
        if action != "live":
            if action in ("playback", "download"):
                raise BadRequest(400, f"action={action} is not supported by this device")
            raise BadRequest(400, "action must be live, playback or download")
        if "live" not in grant.permissions:
            raise BadRequest(403, "the access grant does not allow live video")
        quality = params.get("quality", "high")
        if quality not in QUALITIES:
            raise BadRequest(400, f"quality must be one of {', '.join(QUALITIES)}")
        number = channel_number(params)
        channel = self.channels.get(number)
        if channel is None:
            raise BadRequest(404, f"no channel {number}")
        await self._serve_live(request, channel.live[quality])

    async def _serve_live(self, request: IncomingRequest, live: LiveChannel) -> None:
        if not await live.wait_ready(CHANNEL_START_TIMEOUT):
            raise BadRequest(503, f"channel {live.name} has no video ({live.failed or 'starting'})")
        start, subscription = live.subscribe()
        logger.info(
            "link %d: live %s starts (%d viewers)", request.link.id, live.name, live.viewers
        )
        try:
            await request.respond(
                200, [("content-type", "video/x-flv"), ("cache-control", "no-store")]
            )
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


async def _plain(request: IncomingRequest, status: int, text: str) -> None:
    if request.responded or request.closed:
        return
    try:
        await request.respond(
            status, [("content-type", "text/plain; charset=utf-8")], body=text.encode()
        )
    except StreamClosed:
        pass
