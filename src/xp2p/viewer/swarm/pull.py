"""One 1vN pull: the asyncio shell around `ChunkScheduler`, `Playout` and `UploadQueue`.

It carries out the scheduler's decisions (requests to neighbours, fetches from the edge,
cancels, abandoning silent neighbours), verifies every chunk against the edge's key before
it is played, stored or announced, bans a neighbour at its first bad chunk, serves
neighbours' requests under the upload cap, and hands the app one continuous FLV stream.
A seed also follows the live edge with long-polling chunk requests (``?wait``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xp2p.swarm import Chunk, InitChunk, decode_item, verify
from xp2p.swarm import protocol as proto
from xp2p.swarm.scheduler import (
    EDGE,
    AbandonPeer,
    CancelRequest,
    ChunkScheduler,
    EdgeRequest,
    PeerRequest,
    SchedulerConfig,
    UploadQueue,
)
from xp2p.swarm.wire import ChunkFormatError
from xp2p.tasks import TaskSet
from xp2p.viewer.cloud_client import CloudError

from .edge_client import EdgeClient
from .pipe import PeerPipe
from .playout import Playout
from .stats import Counters

logger = logging.getLogger("xp2p.viewer.swarm")

#: How long an edge fallback request may wait at the edge for a chunk not cut yet.
EDGE_WAIT = 1.0
#: A seed's long poll for the next chunk (the contract allows up to 3 s).
FOLLOW_WAIT = 3.0
#: Non-seeds re-read the edge's live state this often (edge_latest, stream restarts).
LIVE_POLL = 1.0
#: The scheduler is consulted at least this often (the modelled player moves on).
MAX_IDLE = 0.25
#: Pause after an edge request failed on the way (edge unreachable), before it is re-placed.
EDGE_RETRY = 0.5
#: A neighbour's announcement moves this viewer's idea of the edge's newest chunk at most
#: this far past what the edge itself confirmed: a liar announcing chunk 10**12 must not
#: send this viewer asking the edge for chunks that do not exist.
HAVE_AHEAD = 6
#: `UploadQueue.max_backlog`: a request that would wait longer than this behind the upload
#: cap is refused at once, so the asker tries another holder while the chunk is young. At
#: the queue's default (0.6 s, about 3 chunks at 1.5x the bitrate) the first holders of a
#: chunk sat on queues of requests they served late; the simulator runs 0.15 s.
UPLOAD_BACKLOG = 0.15
#: A seed's `UploadQueue.fresh_chunks`: it serves only its newest chunk and the one before.
#: A seed is the swarm's only first hop; without this rule every neighbour rescued old chunks
#: from it (it holds everything, so it is always a holder), its upload went to those, new
#: chunks spread late, the next ones needed rescuing too: at 20 viewers with upload capped at
#: 1.5x, offload 0.35-0.49 and ~11 edge copies, 5-6 viewers pulling nearly all from the edge.
#: 1 rather than the simulator's 3: at that size and cap 3 ran 0.85 in the simulator and
#: 0.54 here, 1 ran 0.94 in both.
SEED_FRESH_CHUNKS = 1


@dataclass(frozen=True)
class PullSettings:
    room: str
    stream_id: int
    edge_key: Ed25519PublicKey
    peer_id: str
    lag: float
    upload: bool
    upload_rate_cap: float | None
    scheduler: SchedulerConfig


Ban = Callable[[str, str], None]
Abandon = Callable[[str], None]
Deliver = Callable[[bytes], None]


class SwarmPull:
    def __init__(
        self,
        settings: PullSettings,
        edge: EdgeClient,
        pipes: dict[str, PeerPipe],
        counters: Counters,
        *,
        deliver: Deliver,
        ban: Ban,
        abandon: Abandon,
        on_gone: Callable[[], None],
        skip_header: bool = False,
    ) -> None:
        self.settings = settings
        self.edge = edge
        self.pipes = pipes
        self.counters = counters
        self._deliver = deliver
        self._ban = ban
        self._abandon = abandon
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self.scheduler = ChunkScheduler(settings.scheduler, random.Random())
        self.playout = Playout(settings.stream_id, skip_header=skip_header)
        self.queue = UploadQueue(
            upload=settings.upload,
            rate_cap=settings.upload_rate_cap,
            max_backlog=UPLOAD_BACKLOG,
            fresh_chunks=SEED_FRESH_CHUNKS if settings.scheduler.seed else None,
        )
        self.edge_latest = -1
        self._edge_confirmed = -1  # the newest seq the edge itself showed to exist
        self._poke = asyncio.Event()
        self._upload_wake = asyncio.Event()
        self._edge_inflight: set[int] = set()
        self._init_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet(f"swarm-{settings.peer_id}")
        self.stopped = False

    @property
    def seed(self) -> bool:
        return self.scheduler.config.seed

    def set_seed(self, seed: bool) -> None:
        if seed != self.seed:
            logger.info("%s: seed %s", self.settings.peer_id, seed)
            self.scheduler.config = replace(self.scheduler.config, seed=seed)
            self.queue.fresh_chunks = SEED_FRESH_CHUNKS if seed else None
            if seed:
                self._tasks.spawn(self._follow(), "follow")
            self._poke.set()

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self, start_seq: int, live_seq: int, init: InitChunk) -> None:
        now = self._loop.time()
        self.edge_latest = self._edge_confirmed = live_seq
        cd = self.settings.scheduler.chunk_duration
        # The player runs `lag` behind the live edge; a start keyframe already older than
        # that plays after a short buffer instead (some of the lag is already behind us).
        start_at = now + max(0.3, self.settings.lag - (live_seq + 1 - start_seq) * cd)
        self.playout.add_init(init)
        self.playout.begin(start_seq, start_at)
        for pipe in self.pipes.values():
            self.add_pipe(pipe)
        self._tasks.spawn(self._run(), "schedule")
        self._tasks.spawn(self._upload(), "upload")
        self._tasks.spawn(self._follow() if self.seed else self._poll_live(), "live")

    async def stop(self) -> None:
        self.stopped = True
        self.counters.stalls += self.playout.stalls
        await self._tasks.cancel_all()

    # ---- neighbours -------------------------------------------------------------------

    def add_pipe(self, pipe: PeerPipe) -> None:
        """A neighbour said hello: ask it for chunks if it uploads, tell it what we hold."""
        hello = pipe.hello
        if hello is None or hello.stream_id != self.settings.stream_id:
            return
        if hello.uploads:
            self.scheduler.add_peer(pipe.peer_id, self._loop.time())
            self.scheduler.on_bitfield(pipe.peer_id, sorted(pipe.haves))
        if self.settings.upload:
            base = max(self.playout.seqs(), default=0) - proto.MAX_WINDOW + 1
            base = max(base, 0)
            pipe.send(proto.Bitfield.of(base, self.playout.seqs()))
        self._poke.set()

    def remove_pipe(self, peer: str) -> None:
        self.scheduler.remove_peer(peer)
        self.queue.drop_peer(peer)
        self._poke.set()

    def on_message(self, pipe: PeerPipe, message: proto.Message) -> None:
        now = self._loop.time()
        peer = pipe.peer_id
        if isinstance(message, proto.Have | proto.Bitfield):
            seqs = [message.seq] if isinstance(message, proto.Have) else message.seqs()
            for seq in seqs:
                # Every chunk starts at the edge, so a neighbour's announcement says the edge
                # has it too (within reason).
                ahead = min(seq, self._edge_confirmed + HAVE_AHEAD)
                self.edge_latest = max(self.edge_latest, ahead)
                if self.scheduler.on_have(peer, seq):
                    self._poke.set()
        elif isinstance(message, proto.Request):
            self._serve(pipe, message.seq, now)
        elif isinstance(message, proto.Cancel):
            self.queue.cancel(peer, message.seq)
        elif isinstance(message, proto.ChunkData):
            self._on_peer_chunk(pipe, message)
        elif isinstance(message, proto.Busy):
            self.counters.refused += 1
            self.scheduler.on_refused(message.seq, peer, now, message.retry_after_ms / 1000)
            self._poke.set()

    def _on_peer_chunk(self, pipe: PeerPipe, message: proto.ChunkData) -> None:
        try:
            item, proof = decode_item(message.data)
        except ChunkFormatError as exc:
            self._bad(pipe.peer_id, f"malformed chunk {message.seq}: {exc}")
            return
        if not isinstance(item, Chunk) or item.seq != message.seq:
            self._bad(pipe.peer_id, f"sent another item for chunk {message.seq}")
            return
        if not verify(item, proof, self.settings.edge_key):
            self._bad(pipe.peer_id, f"chunk {message.seq} fails the edge's signature")
            return
        if item.stream_id != self.settings.stream_id:
            # Genuine, of the edge's previous session: a neighbour behind a restart, not an
            # attacker. Refused, so the request goes elsewhere.
            self.scheduler.on_refused(item.seq, pipe.peer_id, self._loop.time())
            return
        self._on_chunk(item, message.data, pipe.peer_id)

    def _bad(self, peer: str, why: str) -> None:
        self.counters.bad_chunks += 1
        self.scheduler.ban_peer(peer)
        self.queue.drop_peer(peer)
        self._ban(peer, why)
        self._poke.set()

    # ---- chunks in --------------------------------------------------------------------

    def _on_chunk(self, chunk: Chunk, wire: bytes, source: str) -> None:
        """A verified chunk of this stream, from the edge or a neighbour."""
        if self.stopped:
            return
        now = self._loop.time()
        self.edge_latest = max(self.edge_latest, chunk.seq)
        self._edge_confirmed = max(self._edge_confirmed, chunk.seq)
        fresh = self.scheduler.on_chunk(chunk.seq, source, len(wire), now)
        if not fresh or self.playout.has(chunk.seq):
            self.counters.wasted_bytes += len(wire)
            return
        if source == EDGE:
            self.counters.cdn_bytes += len(wire)
        else:
            self.counters.p2p_bytes += len(wire)
        self.playout.add(chunk, wire)
        self.queue.hold(chunk.seq)
        if self.settings.upload:
            have = proto.Have(chunk.seq)
            for name, pipe in self.pipes.items():
                if name != source and pipe.hello is not None:
                    pipe.send(have)
        self._pump(now)
        self._poke.set()

    def _pump(self, now: float) -> None:
        data = self.playout.take(now)
        if self.playout.missing_init is not None and self._init_task is None:
            self._init_task = self._tasks.spawn(self._fetch_init(self.playout.missing_init), "init")
        if data:
            self._deliver(data)

    async def _fetch_init(self, init_id: int) -> None:
        try:
            while not self.stopped:
                try:
                    init, proof, _ = await self.edge.init(self.settings.room)
                except CloudError as exc:
                    logger.info("init %d from the edge failed: %s", init_id, exc)
                    await asyncio.sleep(EDGE_RETRY)
                    continue
                if not verify(init, proof, self.settings.edge_key):
                    logger.warning("the edge's init %d fails its signature", init.init_id)
                    await asyncio.sleep(EDGE_RETRY)
                    continue
                if init.stream_id == self.settings.stream_id:
                    self.playout.add_init(init)
                    if init.init_id > init_id:
                        # The one needed is gone: the assembler skips to a chunk of the new.
                        self.playout.abandon_init(init_id)
                if init.init_id >= init_id or init.stream_id != self.settings.stream_id:
                    break
                await asyncio.sleep(EDGE_RETRY)
        finally:
            self._init_task = None
        self._pump(self._loop.time())

    # ---- the scheduler loop -----------------------------------------------------------

    async def _run(self) -> None:
        while not self.stopped:
            now = self._loop.time()
            self._pump(now)
            playback = self.playout.playback(now)
            decisions = self.scheduler.decide(now, playback, self.edge_latest)
            for decision in decisions:
                if isinstance(decision, PeerRequest):
                    pipe = self.pipes.get(decision.peer)
                    if pipe is None or not pipe.send(proto.Request(decision.seq)):
                        self.scheduler.on_refused(decision.seq, decision.peer, now)
                elif isinstance(decision, EdgeRequest):
                    if decision.seq not in self._edge_inflight:
                        self._count_edge_request(decision.seq, decisions)
                        self._edge_inflight.add(decision.seq)
                        self._tasks.spawn(self._fetch_edge(decision.seq), f"edge-{decision.seq}")
                elif isinstance(decision, CancelRequest):
                    pipe = self.pipes.get(decision.peer)
                    if pipe is not None:
                        pipe.send(proto.Cancel(decision.seq))
                elif isinstance(decision, AbandonPeer):
                    self.queue.drop_peer(decision.peer)
                    self._abandon(decision.peer)
            wake = min(self.scheduler.wake_at, now + MAX_IDLE)
            if not self.playout.released:
                wake = min(wake, self.playout.start_at)
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), max(wake - now, 0.002))

    def _count_edge_request(self, seq: int, decisions: list[Any]) -> None:
        """Why a chunk goes to the edge (`Counters.edge_requests`): what tells a swarm that
        works (seed, start) from one that does not (the rest)."""
        if self.seed:
            why = "seed"
        elif not self.playout.released:
            why = "start"
        elif any(isinstance(d, CancelRequest) and d.seq == seq for d in decisions):
            why = "peer_late"  # a neighbour's transfer was overdue
        elif any(seq in p.haves for p in self.pipes.values()):
            why = "peers_busy"  # holders, none free to ask (refused, or slots full)
        else:
            why = "no_holder"
        self.counters.edge_requests[why] += 1

    async def _fetch_edge(self, seq: int) -> None:
        try:
            chunk, proof, wire = await self.edge.chunk(self.settings.room, seq, wait=EDGE_WAIT)
        except CloudError as exc:
            if exc.code == "gone":
                self._skip_gone(seq)
            elif exc.code != "not_yet":
                logger.info("chunk %d from the edge failed: %s", seq, exc)
                await asyncio.sleep(EDGE_RETRY)
            self.scheduler.on_refused(seq, EDGE, self._loop.time())
            self._poke.set()
            return
        finally:
            self._edge_inflight.discard(seq)
        if chunk.seq != seq or not verify(chunk, proof, self.settings.edge_key):
            # Not a neighbour to ban: the edge's key changed (it restarted) or a proxy broke
            # the bytes. The service re-joins when the edge's live state says so.
            logger.warning("chunk %d from the edge fails its signature", seq)
            self._on_gone()
            self.scheduler.on_refused(seq, EDGE, self._loop.time())
            return
        if chunk.stream_id != self.settings.stream_id:
            self._on_gone()
            return
        self._on_chunk(chunk, wire, EDGE)

    def _skip_gone(self, seq: int) -> None:
        """The edge no longer keeps ``seq``: if playback waits for it, move past it."""
        cursor = self.playout.cursor
        if cursor is not None and seq >= cursor:
            later = sorted(s for s in self.playout.seqs() if s > seq)
            self.playout.skip_to(later[0] if later else seq + 1)
            self._pump(self._loop.time())

    async def _follow(self) -> None:
        """A seed takes each chunk the moment the edge cuts it."""
        while not self.stopped and self.seed:
            seq = max(self.edge_latest + 1, self.playout.cursor or 0)
            try:
                chunk, proof, wire = await self.edge.chunk(
                    self.settings.room, seq, wait=FOLLOW_WAIT
                )
            except CloudError as exc:
                if exc.code == "gone":
                    await self._read_live()
                elif exc.code == "not_yet":
                    await self._read_live()  # a stalled source or a new session
                else:
                    await asyncio.sleep(EDGE_RETRY)
                continue
            if chunk.seq != seq or not verify(chunk, proof, self.settings.edge_key):
                self._on_gone()
                await asyncio.sleep(EDGE_RETRY)
                continue
            if chunk.stream_id != self.settings.stream_id:
                self._on_gone()
                return
            self.counters.edge_requests["seed"] += 1
            self._on_chunk(chunk, wire, EDGE)
        if not self.stopped:
            self._tasks.spawn(self._poll_live(), "live")

    async def _poll_live(self) -> None:
        while not self.stopped and not self.seed:
            await self._read_live()
            await asyncio.sleep(LIVE_POLL)

    async def _read_live(self) -> None:
        try:
            live = await self.edge.live(self.settings.room)
        except CloudError as exc:
            logger.info("live state from the edge failed: %s", exc)
            await asyncio.sleep(EDGE_RETRY)
            return
        if live.stream_id != self.settings.stream_id:
            self._on_gone()
            return
        if live.live_seq is not None:
            self._edge_confirmed = max(self._edge_confirmed, live.live_seq)
            if live.live_seq > self.edge_latest:
                self.edge_latest = live.live_seq
                self._poke.set()

    # ---- serving ----------------------------------------------------------------------

    def _serve(self, pipe: PeerPipe, seq: int, now: float) -> None:
        wire = self.playout.wire(seq) if self.settings.upload else None
        if not self.settings.upload:
            pipe.send(proto.Busy(seq, 60_000))
            return
        if wire is None:
            pipe.send(proto.Busy(seq, 0))
            return
        busy = self.queue.offer(pipe.peer_id, seq, len(wire), now)
        if busy is not None:
            self.counters.refusing += 1
            pipe.send(proto.Busy(seq, min(int(busy.retry_after * 1000), 0xFFFF)))
        else:
            self._upload_wake.set()

    async def _upload(self) -> None:
        while not self.stopped:
            tx = self.queue.next_transmission(self._loop.time())
            if tx is None:
                self._upload_wake.clear()
                await self._upload_wake.wait()
                continue
            delay = tx.start_at - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pipe = self.pipes.get(tx.peer)
            wire = self.playout.wire(tx.seq)
            if pipe is None or wire is None:
                continue
            if pipe.send(proto.ChunkData(tx.seq, wire)):
                self.counters.uploaded_bytes += len(wire)
            else:
                pipe.send(proto.Busy(tx.seq, 200))
