"""The requests a device serves on a link (SPEC §3): parameter rules, status codes, dispatch.

Each kind of request has its own module (``live``, ``playback``, ``files``, ``voice``,
``commands``) with one ``serve(ctx)`` coroutine; this module checks what every request shares
and picks the handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from xp2p.auth import AccessGrant
from xp2p.device.channel import LiveChannel
from xp2p.device.config import DeviceConfig
from xp2p.link import IncomingRequest, StreamClosed

logger = logging.getLogger("xp2p.device")

QUALITIES = ("standard", "high", "super")


class BadRequest(Exception):
    """Answer the request with ``status`` and ``reason`` as a text body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Channel:
    """One camera channel: a LiveChannel per quality (often the same one for all)."""

    number: int
    live: dict[str, LiveChannel]
    #: per-channel state other modules keep (recorder, playback sessions...), by module name
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestContext:
    """Everything a handler needs about one request."""

    routes: DeviceRoutes
    request: IncomingRequest
    params: dict[str, str]
    grant: AccessGrant

    def require(self, permission: str) -> None:
        if permission not in self.grant.permissions:
            raise BadRequest(403, f"the access grant does not allow {permission}")

    def channel(self) -> Channel:
        raw = self.params.get("channel", "0")
        if not raw.isdigit() or len(raw) > 4:
            raise BadRequest(400, f"channel must be a small non-negative integer, got {raw!r}")
        channel = self.routes.channels.get(int(raw))
        if channel is None:
            raise BadRequest(404, f"no channel {int(raw)}")
        return channel


Handler = Callable[[RequestContext], Awaitable[None]]


def check_params(params: dict[str, str]) -> None:
    """Rules every request shares: internal keys are ours, user keys never start with ``_``."""
    for key in params:
        if key.startswith("_") and key not in ("_crypto", "_token"):
            raise BadRequest(400, f"unknown internal parameter {key!r}")


class DeviceRoutes:
    def __init__(self, config: DeviceConfig, channels: dict[int, Channel]) -> None:
        from xp2p.device import commands, files, live, playback, voice

        self.config = config
        self.channels = channels
        #: state shared across links (talk session, viewer slots...), by module name
        self.extras: dict[str, Any] = {}
        self.requests_served = 0
        # (method, path, action) -> handler; action None = any
        self._table: dict[tuple[str, str, str | None], Handler] = {
            ("GET", "/ipc.flv", "live"): live.serve,
            ("GET", "/ipc.flv", "playback"): playback.serve,
            ("GET", "/ipc.flv", "download"): files.serve,
            ("POST", "/voice", None): voice.serve,
            ("GET", "/command", None): commands.serve,
        }
        #: paths whose query has its own rules (a command may be 16 KiB, SPEC §3)
        self._query_parsers: dict[str, Callable[[str], dict[str, str]]] = {
            "/command": commands.parse_query
        }

    async def start(self) -> None:
        """Start what runs beside the links (recorders); the agent calls this once."""
        from xp2p.device import recordings

        await recordings.start(self)

    async def close(self) -> None:
        from xp2p.device import recordings, voice

        await voice.close(self)
        await recordings.close(self)

    def _handler(self, method: str, path: str, action: str) -> Handler:
        handler = self._table.get((method, path, action)) or self._table.get((method, path, None))
        if handler is not None:
            return handler
        if any(p == path for _m, p, _a in self._table):
            if path == "/ipc.flv" and method == "GET":
                raise BadRequest(400, "action must be live, playback or download")
            raise BadRequest(404, f"{method} is not served on {path}")
        raise BadRequest(404, f"no such path: {path}")

    async def handle(self, request: IncomingRequest, grant: AccessGrant) -> None:
        started = time.monotonic()
        status = 200
        try:
            try:
                parse = self._query_parsers.get(request.path)
                params = request.params() if parse is None else parse(request.query)
            except ValueError as exc:
                raise BadRequest(400, f"bad query: {exc}") from exc
            check_params(params)
            handler = self._handler(request.method, request.path, params.get("action", ""))
            await handler(RequestContext(self, request, params, grant))
        except BadRequest as exc:
            status = exc.status
            logger.info(
                "link %d: %s %s -> %d %s",
                request.link.id,
                request.method,
                request.path,
                exc.status,
                exc.reason,
            )
            await respond_text(request, exc.status, exc.reason)
        finally:
            self.requests_served += 1
            logger.debug(
                "link %d: %s %s -> %d in %.3f s",
                request.link.id,
                request.method,
                request.path,
                status,
                time.monotonic() - started,
            )


async def respond_text(request: IncomingRequest, status: int, text: str) -> None:
    """A short text answer (errors, command replies); silently dropped if the viewer left."""
    if request.responded or request.closed:
        return
    try:
        await request.respond(
            status, [("content-type", "text/plain; charset=utf-8")], body=text.encode()
        )
    except StreamClosed:
        pass
