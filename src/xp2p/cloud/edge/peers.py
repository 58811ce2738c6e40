"""One viewer's control channel: its WebSocket with a bounded outgoing queue.

The edge never blocks on a viewer: messages for it go into a queue of `MAX_QUEUE` that one
task drains into the socket. A viewer that does not read fills it and is disconnected
(closing its WebSocket means leaving the room), instead of making the edge buffer for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, web

from xp2p.tasks import TaskSet

logger = logging.getLogger("xp2p.edge")

MAX_QUEUE = 64
#: WebSocket close codes (RFC 6455 §7.4): policy violation, and "try again later".
CLOSE_POLICY = int(WSCloseCode.POLICY_VIOLATION)
CLOSE_GOING_AWAY = int(WSCloseCode.GOING_AWAY)
CLOSE_TRY_AGAIN = int(WSCloseCode.TRY_AGAIN_LATER)


class PeerSession:
    def __init__(self, peer_id: str, ws: web.WebSocketResponse) -> None:
        self.peer_id = peer_id
        self.ws = ws
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MAX_QUEUE)
        # Held here: asyncio keeps only a weak reference, and the close below is spawned
        # from code that does not wait for it.
        self._tasks = TaskSet(f"edge-ws-{peer_id}")
        self._sender = self._tasks.spawn(self._drain(), "send")
        self.errors = 0  #: malformed or refused frames from this peer
        self.closed = False

    def send(self, message: dict[str, Any]) -> bool:
        """Queue ``message``; False (and the socket closes) when the peer is not reading."""
        if self.closed:
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("peer %s does not read its control channel: closing", self.peer_id)
            self.close(CLOSE_TRY_AGAIN, "control channel queue full")
            return False
        return True

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Close soon, from any task; the handler's ``async for`` then ends."""
        if self.closed:
            return
        self.closed = True
        self._sender.cancel()
        self._tasks.spawn(self.ws.close(code=code, message=reason.encode()[:120]), "close")

    async def aclose(self) -> None:
        self.closed = True
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender

    async def _drain(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            try:
                await self.ws.send_str(json.dumps(message, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                return  # the socket is closing; the handler notices on its own
