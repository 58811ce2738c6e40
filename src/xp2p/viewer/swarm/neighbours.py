"""Links to a viewer's neighbours: dialled from the edge's neighbour list, or accepted from
their offers, with offers and answers relayed by the edge's control WebSocket.

Both ends of a pair may dial each other at once. The rule that breaks the tie: the smaller
peer id's dial wins; the larger one accepts the smaller's offer and drops its own dial, the
smaller rejects the larger's offer with ``collision``. An offer from a neighbour that already
has a pipe replaces it (that neighbour lost the old link and knows it first).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xp2p.link import (
    IncomingRequest,
    LinkConfig,
    LinkError,
    LinkIdentity,
    accept_link,
    open_link,
    parse_offer,
)
from xp2p.swarm import protocol as proto
from xp2p.swarm.edge_messages import NeedNeighbours, Neighbour, Signal
from xp2p.swarm.peer_token import TokenError, verify_peer_token
from xp2p.tasks import TaskSet

from .pipe import SWARM_PATH, PeerPipe

logger = logging.getLogger("xp2p.viewer.swarm")

#: Neighbours this viewer dials at most; the edge's list is normally 4-8 long.
MAX_DIALS = 8
#: Pipes at most, dialled and accepted (the protocol's neighbour lists stop at 16 too).
MAX_PIPES = proto.MAX_PEERS
#: Below this many pipes (and dials under way) the viewer asks the edge for more.
MIN_NEIGHBOURS = 4
NEED_INTERVAL = 2.0

SendWs = Callable[[dict[str, Any]], Awaitable[None]]
PipeHandler = Callable[[PeerPipe], None]


class Neighbourhood:
    def __init__(
        self,
        *,
        peer_id: str,
        room: str,
        token: str,
        edge_key: Ed25519PublicKey,
        identity: LinkIdentity,
        link_config: LinkConfig,
        send_ws: SendWs,
        on_up: PipeHandler,
        on_message: Callable[[PeerPipe, proto.Message], None],
        on_down: Callable[[PeerPipe, str], None],
        pipes: dict[str, PeerPipe],
    ) -> None:
        self.peer_id = peer_id
        self.room = room
        self.token = token
        self.edge_key = edge_key
        self.identity = identity
        self.link_config = link_config
        self._send_ws = send_ws
        self._on_up = on_up
        self._on_message = on_message
        self._on_down = on_down
        self.pipes = pipes  #: shared with the service and its pull
        self.listed: dict[str, Neighbour] = {}
        self.banned: set[str] = set()
        self.failed: set[str] = set()  #: dials that failed, and peers abandoned as silent
        self._dials: dict[str, asyncio.Task[None]] = {}
        self._accepting: set[str] = set()
        self._waiting: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._tasks = TaskSet(f"swarm-{peer_id}")
        self._last_need = float("-inf")
        self.closed = False

    @property
    def count(self) -> int:
        return sum(1 for p in self.pipes.values() if not p.closed)

    # ---- from the edge ----------------------------------------------------------------

    def on_neighbours(self, neighbours: tuple[Neighbour, ...]) -> None:
        self.listed = {n.peer_id: n for n in neighbours if n.peer_id != self.peer_id}
        for n in self.listed.values():
            if len(self._dials) >= MAX_DIALS or len(self.pipes) >= MAX_PIPES:
                break
            busy = n.peer_id in self.pipes or n.peer_id in self._dials
            if busy or n.peer_id in self._accepting or n.peer_id in self.banned:
                continue
            if n.peer_id in self.failed:
                continue
            self._dials[n.peer_id] = self._tasks.spawn(self._dial(n), f"dial-{n.peer_id}")

    async def on_signal(self, signal: Signal) -> None:
        if signal.type == "offer":
            await self._on_offer(signal)
            return
        waiting = self._waiting.get(str(signal.request_id))
        if waiting is None or waiting[0] != signal.peer or waiting[1].done():
            return  # late, or not ours
        if signal.type == "answer" and signal.body is not None:
            waiting[1].set_result(signal.body)
        else:
            waiting[1].set_exception(LinkError("rejected", f"neighbour refused: {signal.reason}"))

    # ---- dialling ---------------------------------------------------------------------

    async def _dial(self, neighbour: Neighbour) -> None:
        peer = neighbour.peer_id

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            rid = f"{self.peer_id[:16]}-{next(self._ids)}"
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[rid] = (peer, future)
            try:
                await self._send_ws(Signal("offer", peer, rid, offer).to_json(outgoing=False))
                return await future
            finally:
                self._waiting.pop(rid, None)

        try:
            link = await open_link(
                self.link_config,
                signal,
                fingerprint=neighbour.fingerprint,
                grant=self.token,
                peer_label=f"neighbour {peer}",
            )
        except (LinkError, ConnectionError, OSError) as exc:
            if "collision" not in str(exc):
                logger.info("viewer %s: dialling %s failed: %s", self.peer_id, peer, exc)
                self.failed.add(peer)
            self._dials.pop(peer, None)
            self.check_needs()
            return
        if self._dials.get(peer) is not asyncio.current_task() or self.closed:
            await link.close("superseded")  # the neighbour's own dial won meanwhile
            return
        pipe = self._register(peer, link, opener=True)
        self._dials.pop(peer, None)
        try:
            await pipe.run_opener()
        except LinkError as exc:
            logger.info("viewer %s: pipe to %s failed: %s", self.peer_id, peer, exc)
            await pipe.close(str(exc))

    # ---- accepting --------------------------------------------------------------------

    async def _on_offer(self, signal: Signal) -> None:
        peer = signal.peer

        async def reject(reason: str) -> None:
            await self._send_ws(
                Signal("reject", peer, signal.request_id, reason=reason).to_json(outgoing=False)
            )

        if self.closed:
            return
        try:
            remote, grant = parse_offer(signal.body)
            token = verify_peer_token(
                grant, self.edge_key, now=time.time(), room=self.room, not_peer=self.peer_id
            )
        except (LinkError, TokenError) as exc:
            logger.warning("viewer %s: refused an offer from %s: %s", self.peer_id, peer, exc)
            await reject(f"bad offer: {exc}")
            return
        if token.peer_id != peer:
            await reject("the token names another peer")
            return
        if peer in self.banned:
            await reject("banned")
            return
        if peer in self._dials and self.peer_id < peer:
            await reject("collision")  # our own dial to it wins
            return
        if peer not in self.pipes and len(self.pipes) >= MAX_PIPES:
            await reject("full")
            return
        dial = self._dials.pop(peer, None)
        if dial is not None:
            dial.cancel()
        self._accepting.add(peer)

        async def handler(request: IncomingRequest) -> None:
            if request.method != "POST" or request.path != SWARM_PATH:
                await request.respond(404, body=b"only POST /swarm here")
                return
            pipe = self._register(peer, request.link, opener=False)
            self._accepting.discard(peer)
            await pipe.serve(request)

        try:
            pending = await accept_link(
                self.link_config,
                self.identity,
                remote,
                handler=handler,
                peer_label=f"neighbour {peer}",
            )
        except LinkError as exc:
            self._accepting.discard(peer)
            await reject(f"cannot open a link: {exc}")
            return
        await self._send_ws(
            Signal("answer", peer, signal.request_id, pending.answer).to_json(outgoing=False)
        )
        self._tasks.spawn(self._adopt(peer, pending.link), f"adopt-{peer}")

    async def _adopt(self, peer: str, future: asyncio.Future[Any]) -> None:
        try:
            link = await future
        except LinkError as exc:
            logger.info("viewer %s: link from %s failed: %s", self.peer_id, peer, exc)
            self._accepting.discard(peer)
            return
        if self.closed:
            await link.close("viewer left the room")
            return
        # The opener sends POST /swarm at once; a link that never carries one is useless.
        await asyncio.sleep(self.link_config.connect_timeout)
        if peer in self._accepting and (
            peer not in self.pipes or self.pipes[peer].link is not link
        ):
            self._accepting.discard(peer)
            await link.close("no swarm pipe")

    # ---- pipes ------------------------------------------------------------------------

    def _register(self, peer: str, link: Any, *, opener: bool) -> PeerPipe:
        old = self.pipes.get(peer)
        pipe = PeerPipe(
            peer, link, on_message=self._on_message, on_closed=self._closed, opener=opener
        )
        self.pipes[peer] = pipe
        self.failed.discard(peer)
        if old is not None and old.link is not link:
            self._tasks.spawn(old.close("replaced by a new link"), f"replace-{peer}")
        self._on_up(pipe)
        return pipe

    def _closed(self, pipe: PeerPipe, reason: str) -> None:
        if self.pipes.get(pipe.peer_id) is pipe:
            del self.pipes[pipe.peer_id]
            self._on_down(pipe, reason)
            self._tasks.spawn(pipe.link.close(reason), f"close-{pipe.peer_id}")
            self.check_needs()

    async def drop(self, peer: str, reason: str, *, ban: bool = False) -> None:
        """Close the pipe to ``peer``; a banned peer is never dialled or accepted again."""
        if ban:
            self.banned.add(peer)
        else:
            self.failed.add(peer)
        pipe = self.pipes.get(peer)
        if pipe is not None:
            await pipe.close(reason)
        self.check_needs()

    def check_needs(self) -> None:
        """Ask the edge for more neighbours when few are left (at most every 2 s)."""
        if self.closed:
            return
        active = len(self.pipes) + len(self._dials) + len(self._accepting)
        if active >= MIN_NEIGHBOURS:
            return
        now = time.monotonic()
        if now - self._last_need < NEED_INTERVAL:
            return
        self._last_need = now
        candidates = [
            n
            for p, n in self.listed.items()
            if p not in self.pipes and p not in self.banned and p not in self.failed
        ]
        if candidates:
            self.on_neighbours(tuple(self.listed.values()))
            return
        exclude = sorted(self.banned | self.failed | set(self.pipes))[-64:]
        message = NeedNeighbours(tuple(exclude)).to_json()
        self._tasks.spawn(self._send_need(message), "need")

    async def _send_need(self, message: dict[str, Any]) -> None:
        # send_ws is any awaitable-returning callable; a task needs a coroutine.
        await self._send_ws(message)

    async def close(self) -> None:
        self.closed = True
        for _, future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkError("closed", "viewer left the room"))
                future.exception()
        # Each close reports the pipe down (the pull forgets the neighbour) and unlists it.
        await asyncio.gather(*(p.close("viewer left the room") for p in list(self.pipes.values())))
        await self._tasks.cancel_all()
