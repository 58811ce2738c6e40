"""One 1vN service (one id): a member of an edge's room, with links to its neighbours.

``start_p2p_service(id, StreamInfo(url=...))`` joins the room through the edge (app-signed),
opens the room's control WebSocket and links to the neighbours the edge names; a pull
(`SwarmPull`, started by ``start_stream`` or a ``data_callback``) then trades chunks with them
and delivers one FLV byte stream. When the edge's control channel drops (the edge restarted)
the service joins again with backoff and carries on; the app hears ``swarm_state`` notifies
and never has to restart the service itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel, NotifySubtype
from xp2p.link import LinkConfig, LinkIdentity
from xp2p.link.config import parse_ice_servers
from xp2p.swarm import protocol as proto
from xp2p.swarm import verify
from xp2p.swarm.edge_messages import (
    ErrorMessage,
    JoinRequest,
    JoinResponse,
    LiveInfo,
    MessageError,
    NeighboursUpdate,
    PeerStats,
    SeedUpdate,
    Signal,
    StateUpdate,
    TokenUpdate,
    parse_edge_message,
)
from xp2p.swarm.edge_routes import STATS_INTERVAL
from xp2p.swarm.peer_token import parse_edge_key
from xp2p.swarm.scheduler import SchedulerConfig
from xp2p.tasks import TaskSet
from xp2p.viewer.cloud_client import CloudError
from xp2p.viewer.service_events import ServiceEvents
from xp2p.viewer.types import DataCallback, FlvParams, MsgCallback, StreamInfo

from .edge_client import EdgeClient
from .neighbours import Neighbourhood
from .pipe import PeerPipe
from .playout import pick_start
from .pull import PullSettings, SwarmPull
from .stats import Counters, SwarmStats

logger = logging.getLogger("xp2p.viewer.swarm")

#: How far behind the live edge the player runs: the time a chunk has to spread through
#: the swarm before anyone must fetch it from the edge (scheduler ``edge_margin``, 0.9 s).
DEFAULT_LAG = 3.0
#: A room just created has no keyframe chunk yet: wait this long for one.
FIRST_KEYFRAME_WAIT = 8.0
REJOIN_BACKOFF = (0.5, 5.0)
PEER_CONNECT_TIMEOUT = 5.0


class SwarmService(ServiceEvents):
    """The 1vN sibling of `xp2p.viewer.service.Service`: same notify/log/stop behaviour."""

    unlogged = frozenset({NotifySubtype.SWARM})

    def __init__(
        self,
        service_id: str,
        info: StreamInfo,
        msg_callback: MsgCallback | None,
        log_context: str,
        *,
        edge: EdgeClient,
        link_config: LinkConfig,
        lag: float = DEFAULT_LAG,
    ) -> None:
        super().__init__(service_id, msg_callback, log_context)
        self.info = info
        self.edge = edge
        self._link_config = link_config
        self.lag = lag
        self.identity = LinkIdentity.generate(common_name="xp2p viewer")
        self.counters = Counters()
        self.pipes: dict[str, PeerPipe] = {}
        self._join: JoinResponse | None = None
        self.key: Ed25519PublicKey | None = None  #: the edge's, from the last join
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._neighbours: Neighbourhood | None = None
        self._pull: SwarmPull | None = None
        self._data_callback: DataCallback | None = None
        self._tasks = TaskSet(f"swarm-{service_id}")
        self._recovering = False
        self._stopping = False
        self.seed = False
        self.state = "starting"
        self.closers: dict[str, Any] = {}  # the 1v1 extras never attach here

    # ---- joining ----------------------------------------------------------------------

    async def join(self) -> None:
        """Join the room and open its control channel; XP2PError if the edge refuses."""
        try:
            await self._join_once()
        except CloudError as exc:
            await self.stop()
            code = ErrorCode.BAD_PARAM if exc.status == 400 else ErrorCode.START_STREAM_FAILED
            raise XP2PError(code, f"cannot join the swarm of {self.info.url}: {exc}") from exc
        self._tasks.spawn(self._report(), "stats")
        join = self._join
        assert join is not None
        self.notify(
            NotifySubtype.CONNECTED,
            {"mode": "swarm", "room": join.room, "peer_id": join.peer_id, "seed": join.seed},
        )

    async def _join_once(self) -> None:
        request = JoinRequest(
            self.info.url, self.info.upload, self.identity.fingerprint, self._link_config.nat_type
        )
        join = await self.edge.join(request)
        try:
            key = parse_edge_key(join.edge_key)
            ice = parse_ice_servers(join.ice_servers)
        except (MessageError, ValueError) as exc:
            raise CloudError(200, "bad_response", f"malformed join answer: {exc}") from None
        ws = await self.edge.control(join.room, join.peer_id, join.token)
        self._join, self._ws, self.seed = join, ws, join.seed
        self.key = key
        config = replace(
            self._link_config,
            ice_servers=ice or self._link_config.ice_servers,
            connect_timeout=min(self._link_config.connect_timeout, PEER_CONNECT_TIMEOUT),
        )
        self._neighbours = Neighbourhood(
            peer_id=join.peer_id,
            room=join.room,
            token=join.token,
            edge_key=key,
            identity=self.identity,
            link_config=config,
            send_ws=self._send_ws,
            on_up=self._pipe_up,
            on_message=self._on_message,
            on_down=self._pipe_down,
            pipes=self.pipes,
        )
        self._tasks.spawn(self._read_ws(ws), "ws")
        self._neighbours.on_neighbours(join.neighbours)
        logger.info(
            "%s service %s joined room %s as %s%s with %d neighbours listed",
            self._log_context,
            self.id,
            join.room,
            join.peer_id,
            " (seed)" if join.seed else "",
            len(join.neighbours),
        )

    async def _send_ws(self, doc: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            await ws.send_str(json.dumps(doc, separators=(",", ":")))

    async def _read_ws(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = parse_edge_message(frame.data)
            except MessageError as exc:
                logger.warning("service %s: bad frame from the edge: %s", self.id, exc)
                continue
            await self._on_edge_message(message)
        if self._stopping or ws is not self._ws:
            return
        if self.state == "ended":
            # The source is gone for good and the edge closed the room: nothing to re-join.
            self._tasks.spawn(self.stop_stream(), "ended")
            return
        self._tasks.spawn(self._recover("the edge closed the control channel"), "recover")

    async def _on_edge_message(self, message: Any) -> None:
        neighbours = self._neighbours
        if isinstance(message, NeighboursUpdate) and neighbours is not None:
            neighbours.on_neighbours(message.neighbours)
        elif isinstance(message, Signal) and neighbours is not None:
            self._tasks.spawn(neighbours.on_signal(message), "signal")
        elif isinstance(message, SeedUpdate):
            self.seed = message.seed
            if self._pull is not None:
                self._pull.set_seed(message.seed)
        elif isinstance(message, StateUpdate):
            previous, self.state = self.state, message.state
            self.notify(NotifySubtype.SWARM_STATE, {"state": message.state, "previous": previous})
            if message.state == "ended":
                self.notify(NotifySubtype.EOF)
            if self._pull is not None:
                self._tasks.spawn(self._check_session(), "session")
        elif isinstance(message, TokenUpdate) and neighbours is not None:
            neighbours.token = message.token
        elif isinstance(message, ErrorMessage):
            self.log(LogLevel.WARN, f"edge: {message.code}: {message.message}")

    async def _recover(self, reason: str) -> None:
        """Join again after the control channel dropped (the edge restarted, say)."""
        if self._recovering or self._stopping:
            return
        self._recovering = True
        old_join = self._join
        self.state = "reconnecting"
        self.log(LogLevel.WARN, f"swarm: {reason}; joining again")
        self.notify(NotifySubtype.SWARM_STATE, {"state": "reconnecting", "reason": reason})
        try:
            await self._leave()
            delay = REJOIN_BACKOFF[0]
            while not self._stopping:
                try:
                    await self._join_once()
                    break
                except CloudError as exc:
                    logger.info("service %s: join again failed: %s", self.id, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, REJOIN_BACKOFF[1])
            if self._stopping or self._join is None:
                return
            self.state = "live"
            self.notify(NotifySubtype.SWARM_STATE, {"state": "rejoined", "seed": self.seed})
            same = old_join is not None and (old_join.edge_key, old_join.stream_id) == (
                self._join.edge_key,
                self._join.stream_id,
            )
            if self._pull is not None and not same:
                await self._restart_pull()
            elif self._pull is not None:
                self._pull.set_seed(self.seed)
        finally:
            self._recovering = False

    async def _leave(self) -> None:
        ws, self._ws = self._ws, None
        if self._neighbours is not None:
            await self._neighbours.close()
            self._neighbours = None
        if ws is not None:
            await ws.close()

    # ---- neighbours -------------------------------------------------------------------

    def _pipe_up(self, pipe: PeerPipe) -> None:
        join = self._join
        assert join is not None
        stream_id = self._pull.settings.stream_id if self._pull is not None else join.stream_id
        pipe.send(proto.Hello(stream_id, join.peer_id, self.info.upload))

    def _pipe_down(self, pipe: PeerPipe, reason: str) -> None:
        self.counters.control_bytes += pipe.control_received
        logger.info("service %s: neighbour %s gone: %s", self.id, pipe.peer_id, reason)
        if self._pull is not None:
            self._pull.remove_pipe(pipe.peer_id)

    def _on_message(self, pipe: PeerPipe, message: proto.Message) -> None:
        if isinstance(message, proto.Hello):
            if message.peer_id != pipe.peer_id:
                self._ban(pipe.peer_id, f"says it is {message.peer_id!r}")
            elif pipe.hello is None:
                pipe.hello = message
                if self._pull is not None:
                    self._pull.add_pipe(pipe)
            return
        if pipe.hello is None:
            return  # nothing counts before the hello
        if isinstance(message, proto.Have):
            pipe.note_have(message.seq)
        elif isinstance(message, proto.Bitfield):
            for seq in message.seqs():
                pipe.note_have(seq)
        if self._pull is not None:
            self._pull.on_message(pipe, message)
        elif isinstance(message, proto.Request):
            pipe.send(proto.Busy(message.seq, 1000))  # not pulling: holds nothing

    def _ban(self, peer: str, why: str) -> None:
        logger.warning("service %s: banned neighbour %s: %s", self.id, peer, why)
        self.log(LogLevel.WARN, f"swarm: banned neighbour {peer}: {why}")
        pipe = self.pipes.get(peer)
        if pipe is not None:
            pipe.halt(f"banned: {why}")  # not one more message from it, even one read already
        if self._neighbours is not None:
            self._neighbours.banned.add(peer)
            self._tasks.spawn(self._neighbours.drop(peer, f"banned: {why}", ban=True), "ban")

    def _banned_peers(self) -> frozenset[str]:
        return frozenset(self._neighbours.banned) if self._neighbours is not None else frozenset()

    def _abandon(self, peer: str) -> None:
        if self._neighbours is not None:
            self._tasks.spawn(self._neighbours.drop(peer, "silent for too long"), "abandon")

    # ---- pulls ------------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._pull is not None

    async def start_stream(self, data_callback: DataCallback, flv: FlvParams | None = None) -> None:
        """Start pulling (``flv`` is a 1v1 notion and ignored here)."""
        if self._pull is not None:
            raise XP2PError(
                ErrorCode.START_STREAM_FAILED,
                f"service {self.id} is already pulling a stream; stop it first",
            )
        self.notify(NotifySubtype.REQUEST, {"target": self.info.url})
        self._data_callback = data_callback
        try:
            await self._start_pull(skip_header=False)
        except CloudError as exc:
            self._data_callback = None
            self.notify(NotifySubtype.FAIL, {"reason": str(exc)})
            raise XP2PError(ErrorCode.START_STREAM_FAILED, f"swarm pull failed: {exc}") from exc
        self.notify(
            NotifySubtype.PARSED, {"status": 200, "headers": {"content-type": "video/x-flv"}}
        )

    async def _start_pull(self, *, skip_header: bool) -> None:
        join, key = self._join, self.key
        if join is None or key is None:
            raise CloudError(0, "unreachable", "not in the room (the edge is unreachable)")
        live = await self._first_keyframe(join.room)
        init, proof, _ = await self.edge.init(join.room)
        if not verify(init, proof, key) or init.stream_id != live.stream_id:
            raise CloudError(200, "bad_response", "the edge's init chunk fails its signature")
        assert live.keyframe_seq is not None and live.live_seq is not None
        settings = PullSettings(
            room=join.room,
            stream_id=live.stream_id,
            edge_key=key,
            peer_id=join.peer_id,
            lag=self.lag,
            upload=self.info.upload,
            upload_rate_cap=float(self.info.upload_rate_cap) or None,
            scheduler=SchedulerConfig(chunk_duration=max(join.chunk_ms, 50) / 1000, seed=self.seed),
        )
        pull = SwarmPull(
            settings,
            self.edge,
            self.pipes,
            self.counters,
            deliver=self._deliver,
            ban=self._ban,
            abandon=self._abandon,
            on_gone=self._session_changed,
            skip_header=skip_header,
        )
        self._pull = pull
        start = pick_start(
            live.keyframes,
            live.keyframe_seq,
            live.live_seq,
            settings.scheduler.chunk_duration,
            self.lag,
        )
        await pull.start(start, live.live_seq, init)
        for pipe in list(self.pipes.values()):
            if pipe.hello is not None and pipe.hello.stream_id != live.stream_id:
                pipe.send(proto.Hello(live.stream_id, join.peer_id, self.info.upload))

    async def _first_keyframe(self, room: str) -> LiveInfo:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_KEYFRAME_WAIT
        while True:
            live = await self.edge.live(room)
            if live.keyframe_seq is not None and live.live_seq is not None:
                self.state = live.state
                return live
            if loop.time() > deadline or live.state == "ended":
                raise CloudError(200, "no_keyframe", f"no keyframe from the source ({live.state})")
            await asyncio.sleep(0.3)

    def _deliver(self, data: bytes) -> None:
        callback = self._data_callback
        if callback is None:
            return
        try:
            callback(data)
        except Exception:
            logger.exception("data_callback raised for service %s; stopping the pull", self.id)
            self._data_callback = None
            self.notify(NotifySubtype.FAIL, {"reason": "data_callback raised"})
            self._tasks.spawn(self.stop_stream(), "stop")

    def _session_changed(self) -> None:
        self._tasks.spawn(self._check_session(), "session")

    async def _check_session(self) -> None:
        """A chunk of another stream session, or a state change: is there a new session?"""
        pull, join = self._pull, self._join
        if pull is None or join is None:
            return
        try:
            live = await self.edge.live(join.room)
        except CloudError as exc:
            if exc.status == 404:
                await self._recover("the edge forgot the room")
            return
        if live.stream_id != pull.settings.stream_id and self._pull is pull:
            self.notify(NotifySubtype.SWARM_STATE, {"state": "new_session", "reason": "source"})
            await self._restart_pull()

    async def _restart_pull(self) -> None:
        pull = self._pull
        if pull is None:
            return
        released = pull.playout.app_has_header
        await pull.stop()
        self._pull = None
        try:
            await self._start_pull(skip_header=released)
        except CloudError as exc:
            self.log(LogLevel.WARN, f"swarm: pull restart failed: {exc}")
            self._pull = None
            if not self._stopping:
                self._tasks.spawn(self._retry_pull(released), "retry")

    async def _retry_pull(self, skip_header: bool) -> None:
        delay = REJOIN_BACKOFF[0]
        while not self._stopping and self._pull is None and self._data_callback is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, REJOIN_BACKOFF[1])
            try:
                await self._start_pull(skip_header=skip_header)
            except CloudError as exc:
                logger.info("service %s: pull restart failed: %s", self.id, exc)
                self._pull = None

    async def stop_stream(self) -> None:
        pull, self._pull = self._pull, None
        self._data_callback = None
        if pull is None:
            return
        await pull.stop()
        self.notify(NotifySubtype.CLOSE)

    # ---- statistics -------------------------------------------------------------------

    def stats(self) -> SwarmStats:
        join, c, pull = self._join, self.counters, self._pull
        return SwarmStats(
            room=join.room if join else "",
            peer_id=join.peer_id if join else "",
            seed=self.seed,
            neighbours=sum(1 for p in self.pipes.values() if p.hello is not None),
            p2p_bytes=c.p2p_bytes,
            cdn_bytes=c.cdn_bytes,
            uploaded_bytes=c.uploaded_bytes,
            stalls=c.stalls + (pull.playout.stalls if pull is not None else 0),
            control_bytes=c.control_bytes + sum(p.control_received for p in self.pipes.values()),
            bad_chunks=c.bad_chunks,
            banned=len(self._neighbours.banned) if self._neighbours else 0,
            state=self.state,
            streaming=pull is not None,
        )

    async def _report(self) -> None:
        while not self._stopping:
            await asyncio.sleep(STATS_INTERVAL)
            s = self.stats()
            self.notify(NotifySubtype.SWARM, s.to_json())
            c = self.counters
            logger.debug(
                "service %s%s: edge requests %s, refused %d, refusing %d, %d queued to send",
                self.id,
                " (seed)" if s.seed else "",
                dict(c.edge_requests),
                c.refused,
                c.refusing,
                len(self._pull.queue) if self._pull is not None else 0,
            )
            report = PeerStats(s.p2p_bytes, s.cdn_bytes, s.uploaded_bytes, s.stalls, s.neighbours)
            await self._send_ws(report.to_json())

    # ---- lifecycle --------------------------------------------------------------------

    async def stop(self) -> None:
        """Leave the room: stop the pull, close every link, the control channel, the tasks."""
        self._stopping = True
        await self.stop_stream()
        await self._leave()
        await self._tasks.cancel_all()
        await self.edge.close()
