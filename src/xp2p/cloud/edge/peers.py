"""One viewer's control channel: its WebSocket with a bounded outgoing queue.

The edge never blocks on a viewer: messages for it go into a queue of `MAX_QUEUE` that one
task drains into the socket. A viewer that does not read fills it and is disconnected
(closing its WebSocket means leaving the room), instead of making the edge buffer for it.

Signals relayed from other peers are different: they are what another peer chose to send,
so they never count against the receiver. One goes into the queue only while it is less than
half full (`send` with ``drop``), and each sender has a token bucket (`may_signal`,
`SIGNAL_BURST` then `SIGNAL_RATE` a second): the sender's excess is refused and held against
the sender's own channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, web

from xp2p.swarm.edge_routes import SIGNAL_BURST, SIGNAL_RATE
from xp2p.tasks import TaskSet

logger = logging.getLogger("xp2p.edge")

MAX_QUEUE = 64
#: Bad frames forgiven per second (one a minute).
ERROR_DECAY = 1 / 60
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
        #: malformed or refused frames from this peer, less `ERROR_DECAY` a second: a
        #: burst closes the channel, the odd race (a signal to a neighbour that just left)
        #: over a long session does not
        self.errors = 0.0
        self._errors_at: float | None = None
        self.closed = False
        self._tokens = float(SIGNAL_BURST)
        self._tokens_at: float | None = None

    def penalise(self, now: float) -> float:
        """Count one bad frame at ``now``; the decayed count."""
        if self._errors_at is not None:
            self.errors = max(self.errors - max(now - self._errors_at, 0.0) * ERROR_DECAY, 0.0)
        self._errors_at = now
        self.errors += 1.0
        return self.errors

    def may_signal(self, now: float) -> bool:
        """Take a token for one signal this peer sends; False when it has none left."""
        if self._tokens_at is not None:
            elapsed = max(now - self._tokens_at, 0.0)
            self._tokens = min(float(SIGNAL_BURST), self._tokens + elapsed * SIGNAL_RATE)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def send(self, message: dict[str, Any], *, drop: bool = False) -> bool:
        """Queue ``message``; False (and the socket closes) when the peer is not reading.
        With ``drop`` (a relayed signal), False and nothing else when the queue is half
        full: the relay must not make the receiver look like a peer that does not read."""
        if self.closed:
            return False
        if drop and self._queue.qsize() >= MAX_QUEUE // 2:
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
