"""The requests a device serves on a link: parameter rules, status codes, dispatch.

The requests and their status codes are in docs/protocol.md §9.

Each kind of request has its own module (``live``, ``playback``, ``files``, ``voice``,
``commands``) with one ``serve(ctx)`` coroutine; this module parses the query, applies the
rules every request shares (``request.check_params``) and picks the handler. The types the
handlers share (``RequestContext``, ``DeviceState``, ``BadRequest``) are in ``request``, which
imports none of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from xp2p.auth import AccessGrant
from xp2p.device import commands, files, live, playback, recordings, voice
from xp2p.device.config import DeviceConfig
from xp2p.device.request import (
    BadRequest,
    Channel,
    DeviceState,
    Handler,
    RequestContext,
    check_params,
    respond_text,
)
from xp2p.link import IncomingRequest

logger = logging.getLogger("xp2p.device")


class DeviceRoutes:
    def __init__(self, config: DeviceConfig, channels: dict[int, Channel]) -> None:
        #: what every link's requests share (viewer slots, the talk session, recordings...)
        self.state = DeviceState(config, channels)
        self.requests_served = 0
        # (method, path, action) -> handler; action None = any
        self._table: dict[tuple[str, str, str | None], Handler] = {
            ("GET", "/ipc.flv", "live"): live.serve,
            ("GET", "/ipc.flv", "playback"): playback.serve,
            ("GET", "/ipc.flv", "download"): files.serve,
            ("POST", "/voice", None): voice.serve,
            ("GET", "/command", None): commands.serve,
        }
        #: paths whose query has its own rules (a command may be 16 KiB, docs/protocol.md §9)
        self._query_parsers: dict[str, Callable[[str], dict[str, str]]] = {
            "/command": commands.parse_query
        }

    @property
    def config(self) -> DeviceConfig:
        return self.state.config

    @property
    def channels(self) -> dict[int, Channel]:
        return self.state.channels

    async def start(self) -> None:
        """Start what runs beside the links (recorders); the agent calls this once."""
        await recordings.start(self.state)

    async def close(self) -> None:
        await voice.close(self.state)
        await recordings.close(self.state)

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
            await handler(RequestContext(self.state, request, params, grant))
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
