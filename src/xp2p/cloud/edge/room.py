"""One room: one source URL pulled once, cut, signed and kept, and the viewers watching it.

The room pulls while anyone watches: a joined viewer counts from its join (for the
config's ``join_grace`` s, until its WebSocket opens) and for as long as its WebSocket stays open;
``linger`` s after the last one is gone the room stops and the service forgets it. A source
that sends nothing for ``stall_timeout`` s, drops, ends or breaks its FLV is reported as
``stalled`` and pulled again with exponential backoff (0.5 s to 10 s, jittered); the chunk
numbers and the stream id go on, and after ``give_up`` s of failures the room ``ended``.

A room belongs to the app that made it (``owner``) and, when its source's origin is given a
product (``source_products``), to every app allowed that product; it is ``activated`` once
a viewer's WebSocket opened in it, and only then counts against ``max_rooms``. Logs name the
source by `redact_url` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp

from xp2p.flv import FlvError
from xp2p.swarm import Chunk, Chunker, ChunkSigner, InitChunk, encode_item
from xp2p.swarm.device_url import is_device_url, parse_device_url
from xp2p.swarm.edge_messages import (
    NeighboursUpdate,
    RoomState,
    RoomStats,
    SeedUpdate,
    StateUpdate,
)
from xp2p.swarm.edge_routes import redact_url
from xp2p.swarm.tracker import SEED_INTERVAL, Tracker, TrackerUpdate

from .config import EdgeConfig
from .device_source import DeviceSource
from .peers import PeerSession
from .policy import SourcePolicy
from .source import SourceError, pull_flv
from .store import BufferBudget, ChunkStore, Lookup

logger = logging.getLogger("xp2p.edge")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0


class Room:
    def __init__(
        self,
        url: str,
        room_id: str,
        config: EdgeConfig,
        signer: ChunkSigner,
        http: aiohttp.ClientSession,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_closed: Callable[[Room], None] = lambda room: None,
        clock: Callable[[], float] = time.monotonic,
        owner: str = "",
        product: str | None = None,
        policy: SourcePolicy | None = None,
        budget: BufferBudget | None = None,
        device_source: DeviceSource | None = None,
    ) -> None:
        self.url = url
        #: a camera's stream (the 1v1→1vN switch): pulled over the edge's 1v1 link to it
        self.device = parse_device_url(url) if is_device_url(url) else None
        self._device_source = device_source
        self.room_id = room_id
        self.config = config
        self.owner = owner
        self.product = product
        self.activated = False  #: a viewer's WebSocket has opened in it
        self.stream_id = secrets.randbits(64)
        self.store = ChunkStore(
            keep_seconds=config.keep_seconds, max_bytes=config.max_room_bytes, budget=budget
        )
        self._policy = policy
        self.tracker = Tracker()
        self.state: RoomState = "starting"
        self.failure: SourceError | None = None
        self.sessions: dict[str, PeerSession] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._signer = signer
        self._http = http
        self._ssl = ssl_context
        self._on_closed = on_closed
        self._clock = clock
        self._settled = asyncio.Event()  # the first FLV header arrived, or the first try failed
        self._new_chunk = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._last_seed_check = 0.0
        self._next_init_id = 0
        self._init_base = 0
        self._joining = 0
        self.closed = False
        #: connections made to the source (1 unless it stalled or dropped)
        self.source_connects = 0
        self.cdn_bytes = 0
        self.requests_ok = 0
        self.requests_failed = 0

    def __repr__(self) -> str:
        return f"<Room {self.room_id} {self.state} viewers={self.viewers}>"

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def allows(self, app_key: str, app_allows: Callable[[str, str], bool] | None) -> bool:
        """May ``app_key`` join and read this room? Its maker, and apps allowed its product."""
        if app_key == self.owner:
            return True
        return (
            self.product is not None
            and app_allows is not None
            and app_allows(app_key, self.product)
        )

    # --- the source -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._pull(), name=f"edge-room-{self.room_id}")

    async def wait_ready(self) -> None:
        """Return once the source has sent its FLV header; SourceError if it did not within
        ``connect_timeout`` (or answered something that is not FLV)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.connect_timeout + 1.0):
                await self._settled.wait()
        if self.failure is not None and self.source_connects == 0:
            raise self.failure
        if self.source_connects == 0:
            msg = f"no FLV header from the source within {self.config.connect_timeout:g} s"
            raise SourceError(msg)

    async def _pull(self) -> None:
        backoff = BACKOFF_MIN
        failing_since: float | None = None
        while not self.closed:
            chunker: Chunker | None = None
            try:
                async for data in self._source():
                    if chunker is None:
                        chunker = self._connected()
                    self._publish(chunker.feed(data), chunker)
                    if self.state != "live" and self.store.live_seq is not None:
                        failing_since, backoff = None, BACKOFF_MIN
                        self._set_state("live")
                raise SourceError("the source ended the stream")
            except FlvError as exc:
                error = SourceError(f"the source sent broken FLV: {exc}")
            except SourceError as exc:
                error = exc
            if chunker is not None:
                with contextlib.suppress(FlvError):
                    self._publish(chunker.flush(), chunker)
            if self.source_connects == 0:
                self.failure = error
                logger.info("room %s: source %s failed: %s", self.room_id, self.safe_url, error)
                self._settled.set()
                self._set_state("ended")
                return
            now = self._clock()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since > self.config.give_up:
                logger.warning("room %s: giving up on the source: %s", self.room_id, error)
                self._set_state("ended")
                return
            logger.warning("room %s: %s; reconnecting in %.1f s", self.room_id, error, backoff)
            self._set_state("stalled")
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _source(self) -> AsyncIterator[bytes]:
        """The source's FLV: an http(s) server's (under the SSRF policy), or a camera's."""
        connect, stall = self.config.connect_timeout, self.config.stall_timeout
        if self.device is not None:
            if self._device_source is None:
                raise SourceError("this edge pulls no cameras (it runs apart from the cloud)")
            return self._device_source.pull(
                self.owner, self.device, connect_timeout=connect, stall_timeout=stall
            )
        return pull_flv(
            self._http,
            self.url,
            connect_timeout=connect,
            stall_timeout=stall,
            ssl_context=self._ssl,
            policy=self._policy,
        )

    def _connected(self) -> Chunker:
        self.source_connects += 1
        self._settled.set()
        live = self.store.live_seq
        chunker = Chunker(
            self.stream_id,
            target_ms=self.config.chunk_ms,
            first_seq=0 if live is None else live + 1,
        )
        # Init ids go on across reconnects, so a viewer never mixes up two sources' headers.
        self._init_base = self._next_init_id
        return chunker

    def _publish(self, items: list[InitChunk | Chunk], chunker: Chunker) -> None:
        for item in items:
            item = dataclasses.replace(item, init_id=item.init_id + self._init_base)
            data = encode_item(item, self._signer.sign(item))
            if isinstance(item, InitChunk):
                self._next_init_id = item.init_id + 1
                self.store.add_init(item, data)
            else:
                self.store.add(item, data, self._clock())
        if items:
            self._new_chunk.set()
            self._new_chunk = asyncio.Event()

    # --- serving chunks ---------------------------------------------------------------------

    async def chunk(self, seq: int, wait: float) -> tuple[Lookup, bytes | None]:
        status, data = self.store.lookup(seq)
        live = self.store.live_seq
        # Only a chunk that can be cut within the wait is worth waiting for.
        reachable = (live if live is not None else -1) + 2 + int(wait * 1000 / self.config.chunk_ms)
        if status is Lookup.NOT_YET and wait > 0 and seq <= reachable:
            deadline = asyncio.get_running_loop().time() + wait
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while status is Lookup.NOT_YET and not self.closed:
                        await self._new_chunk.wait()
                        status, data = self.store.lookup(seq)
        if status is Lookup.FOUND and data is not None:
            self.cdn_bytes += len(data)
            self.requests_ok += 1
        else:
            self.requests_failed += 1
        return status, data

    def init_data(self) -> bytes | None:
        data = self.store.init_data
        if data is not None:
            self.cdn_bytes += len(data)
            self.requests_ok += 1
        else:
            self.requests_failed += 1
        return data

    # --- viewers ----------------------------------------------------------------------------

    @property
    def viewers(self) -> int:
        return len(self.sessions) + len(self._pending) + self._joining

    @contextlib.contextmanager
    def joining(self) -> Iterator[None]:
        """A join in progress keeps the room (waiting for the source counts as watching)."""
        self._joining += 1
        self._update_linger()
        try:
            yield
        finally:
            self._joining -= 1
            self._update_linger()

    def add_peer(
        self, peer_id: str, fingerprint: str, nat_type: str, upload: bool
    ) -> TrackerUpdate:
        update = self.tracker.join(peer_id, fingerprint, nat_type, upload, self._clock())
        loop = asyncio.get_running_loop()
        self._pending[peer_id] = loop.call_later(self.config.join_grace, self._expire_join, peer_id)
        self._update_linger()
        self.apply(update, skip=peer_id)
        return update

    def _expire_join(self, peer_id: str) -> None:
        if self._pending.pop(peer_id, None) is not None:
            logger.info("room %s: peer %s never opened its WebSocket", self.room_id, peer_id)
            self.apply(self.tracker.leave(peer_id, self._clock()))
            self._update_linger()

    def attach(self, session: PeerSession) -> None:
        """The peer's WebSocket is open: it replaces an older one of the same peer."""
        handle = self._pending.pop(session.peer_id, None)
        if handle is not None:
            handle.cancel()
        old = self.sessions.get(session.peer_id)
        if old is not None:
            old.close(reason="replaced by a newer connection")
        self.sessions[session.peer_id] = session
        self.activated = True
        peer = self.tracker.peers[session.peer_id]
        session.send(NeighboursUpdate(self.tracker.neighbours_of(peer.peer_id)).to_json())
        session.send(SeedUpdate(peer.seed).to_json())
        session.send(StateUpdate(self.state).to_json())
        self._update_linger()

    def detach(self, session: PeerSession) -> None:
        """The peer's WebSocket closed: it has left the room."""
        if self.sessions.get(session.peer_id) is not session:
            return  # replaced by a newer connection, which keeps the peer in the room
        del self.sessions[session.peer_id]
        self.apply(self.tracker.leave(session.peer_id, self._clock()))
        self._update_linger()

    def knows(self, peer_id: str) -> bool:
        return peer_id in self.tracker.peers

    def apply(self, update: TrackerUpdate, *, skip: str | None = None) -> None:
        """Tell every affected peer what changed (``skip``: told in its join response)."""
        for peer_id, neighbours in update.neighbours.items():
            session = self.sessions.get(peer_id)
            if session is not None and peer_id != skip:
                session.send(NeighboursUpdate(neighbours).to_json())
        for peer_id, seed in update.seeds.items():
            session = self.sessions.get(peer_id)
            if session is not None and peer_id != skip:
                session.send(SeedUpdate(seed).to_json())

    def maybe_reselect_seeds(self) -> None:
        now = self._clock()
        if now - self._last_seed_check >= SEED_INTERVAL:
            self._last_seed_check = now
            self.apply(self.tracker.select_seeds(now))

    def _set_state(self, state: RoomState) -> None:
        if state == self.state:
            return
        self.state = state
        logger.info("room %s (%s): %s", self.room_id, self.safe_url, state)
        for session in list(self.sessions.values()):
            session.send(StateUpdate(state).to_json())
        if state == "ended":
            # Nothing more will come: let viewers go now rather than after the linger.
            for session in list(self.sessions.values()):
                session.close(reason="the source ended")
            asyncio.get_running_loop().call_soon(self._close_now)

    def _update_linger(self) -> None:
        if self.viewers == 0 and self._linger is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self.config.linger, self._close_now)
        elif self.viewers > 0 and self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _close_now(self) -> None:
        if self.closed:
            return
        if self.state != "ended" and self.viewers > 0:
            return
        logger.info("room %s: stops pulling %s", self.room_id, self.safe_url)
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        self.store.clear()  # the memory goes now, not when the last reference does
        self._on_closed(self)

    async def aclose(self) -> None:
        self.closed = True
        for handle in self._pending.values():
            handle.cancel()
        if self._linger is not None:
            self._linger.cancel()
        for session in list(self.sessions.values()):
            session.close(reason="the edge is shutting down")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.store.clear()

    def stats(self) -> RoomStats:
        totals = self.tracker.totals()
        cut = self.store.cut_bytes
        return RoomStats(
            room=self.room_id,
            url=self.safe_url,
            online=len(self.sessions),
            cdn_bytes=self.cdn_bytes,
            p2p_bytes=totals.p2p_bytes,
            stalls=totals.stalls,
            requests_ok=self.requests_ok,
            requests_failed=self.requests_failed,
            edge_egress_copies=self.cdn_bytes / cut if cut else 0.0,
        )
