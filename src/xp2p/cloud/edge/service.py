"""The edge's routes (see `xp2p.swarm.edge_routes` for the contract), mounted on an aiohttp app.

`EdgeService` owns the rooms of one edge instance. The same service runs inside the cloud
(sharing its app accounts and request verifier) and standalone (`xp2p.cloud.edge.server`).
Every failure is a JSON error with a specific code; an unexpected one is logged and answered
500 ``internal_error``, never left to take the server down.

Against the attacks of issue 10: sources pass `xp2p.cloud.edge.policy` (public addresses or
``allowed_sources``, at the check, at the connect and on every redirect) and a joiner learns
only "source refused" or "source unavailable"; a room is its maker's (and its product's
apps'), and counts against ``max_rooms`` once a WebSocket opened in it, with quotas for
pending rooms and per app; the stats list only the asking app's rooms. Over the WebSocket,
signals go only between neighbours the tracker assigned, at a bounded rate whose excess is
held against the sender, and stats reports beyond what is possible are refused.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.auth import AuthError, RequestVerifier
from xp2p.cloud.config import AppConfig
from xp2p.swarm import ChunkSigner, peer_token
from xp2p.swarm import edge_messages as messages
from xp2p.swarm import edge_routes as routes
from xp2p.swarm.device_url import is_device_url, parse_device_url

from .config import EdgeConfig
from .device_source import DeviceSource
from .peers import CLOSE_POLICY, PeerSession
from .policy import PolicyResolver, SourceRefused, SourceUnresolved
from .room import Room
from .source import SourceError, source_ssl_context
from .store import BufferBudget, Lookup

logger = logging.getLogger("xp2p.edge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IceServers = Callable[[str], list[dict[str, Any]]]
#: (app key, product id) -> may that app read that product's rooms
AppAllows = Callable[[str, str], bool]
SOURCE_REFUSED = "source refused"
SOURCE_UNAVAILABLE = "source unavailable"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def apps_allow(app_of: Callable[[str], AppConfig | None]) -> AppAllows:
    """`AppAllows` from the cloud's app accounts (their ``products``), looked up per call so
    that a registry change applies to rooms already open."""

    def allows(app_key: str, product: str) -> bool:
        app = app_of(app_key)
        return app is not None and app.allows(product)

    return allows


class EdgeError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def edge_error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response(messages.error_body(code, message), status=status)


def _json_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except EdgeError as exc:
            response = edge_error_response(exc.status, exc.code, exc.message)
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return edge_error_response(
                exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason
            )
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, request.path)
            return edge_error_response(500, "internal_error", "internal server error")

    return wrapped


@web.middleware
async def edge_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For the standalone edge: unknown routes and methods get JSON errors too."""
    return await _json_errors(handler)(request)


class EdgeService:
    def __init__(
        self,
        config: EdgeConfig,
        key: Ed25519PrivateKey,
        verifier: RequestVerifier,
        *,
        ice_servers: IceServers = lambda user: [],
        clock: Callable[[], float] = time.time,
        app_allows: AppAllows | None = None,
        device_source: DeviceSource | None = None,
    ) -> None:
        self.config = config
        #: pulls cameras for device rooms (the 1v1→1vN switch); None: such rooms are refused
        self.device_source = device_source
        self.signer = ChunkSigner(key)
        self._key = key
        self.edge_key = peer_token.edge_key_text(self.signer.public_key)
        self._verifier = verifier
        self._ice_servers = ice_servers
        self._clock = clock
        self.rooms: dict[str, Room] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ssl = source_ssl_context(config.source_ca_file)
        self._policy = config.source_policy()
        self._budget = BufferBudget(config.max_buffer_bytes)
        self._app_allows = app_allows

    def add_routes(self, app: web.Application) -> None:
        rooms = f"{routes.API}/rooms/{{room}}"
        app.router.add_post(routes.JOIN_PATH, _json_errors(self._join))
        app.router.add_get(routes.STATS_PATH, _json_errors(self._stats))
        app.router.add_get(f"{rooms}/live", _json_errors(self._live))
        app.router.add_get(f"{rooms}/init", _json_errors(self._init))
        app.router.add_get(f"{rooms}/chunks/{{seq}}", _json_errors(self._chunk))
        app.router.add_get(f"{rooms}/ws", _json_errors(self._ws))

        async def close_rooms(_: web.Application) -> None:
            await self.aclose()

        app.on_shutdown.append(close_rooms)

    def allow_source(self, url: str) -> None:
        """Pull ``url``'s origin whatever its address, as if ``allowed_sources`` listed it."""
        self._policy.allow(url)

    async def aclose(self) -> None:
        rooms, self.rooms = list(self.rooms.values()), {}
        for room in rooms:
            await room.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- helpers ----------------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> tuple[str, bytes]:
        body = await request.read()
        try:
            app_key = self._verifier.verify(
                request.method,
                request.raw_path,
                request.headers,
                body,
                self._clock(),
                source=request.remote,
            )
        except AuthError as exc:
            # 401 for a bad signature, 429 (with Retry-After) for the rate and failure limits.
            retry = exc.retry_after
            raise EdgeError(exc.status, exc.code, exc.message, retry_after=retry) from None
        return app_key, body

    def _room(self, request: web.Request, app_key: str | None = None) -> Room:
        """The room of the path; with ``app_key``, 403 unless that app may read it."""
        room_id = request.match_info["room"]
        if not routes.is_room_id(room_id):
            raise EdgeError(400, "bad_request", "malformed room id")
        room = self.rooms.get(room_id)
        if room is None:
            raise EdgeError(404, "unknown_room", "no such room on this edge (join first)")
        if app_key is not None and not self._allowed(room, app_key):
            raise EdgeError(403, "room_forbidden", "this room is another app's")
        return room

    def _allowed(self, room: Room, app_key: str) -> bool:
        """May ``app_key`` join and read ``room``? Its maker and its product's apps; for a
        camera's room, only while that app could be granted ``live`` on the camera."""
        if not room.allows(app_key, self._app_allows):
            return False
        if room.device is None:
            return True
        try:
            self._authorise_device(app_key, room.url)
        except EdgeError:
            return False
        return True

    def _authorise_device(self, app_key: str, url: str) -> None:
        """403 ``source_refused`` unless this edge pulls cameras and ``app_key`` may watch
        that one live (`xp2p.cloud.edge.device_source`)."""
        if self.device_source is None:
            logger.info("join by app %s: %s refused: this edge pulls no cameras", app_key, url)
            raise EdgeError(403, "source_refused", SOURCE_REFUSED)
        try:
            self.device_source.authorise(app_key, parse_device_url(url))
        except (SourceError, ValueError) as exc:
            logger.info("join by app %s: %s refused: %s", app_key, url, exc)
            raise EdgeError(403, "source_refused", SOURCE_REFUSED) from None

    def _count_rooms(self) -> tuple[int, int]:
        """(activated, pending) rooms."""
        active = sum(1 for r in self.rooms.values() if r.activated and not r.closed)
        return active, sum(1 for r in self.rooms.values() if not r.activated and not r.closed)

    def _room_closed(self, room: Room) -> None:
        if self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]

    def _token(self, room: Room, peer_id: str, fingerprint: str) -> str:
        exp = int(self._clock()) + routes.TOKEN_TTL
        return peer_token.sign_peer_token(
            self._key, peer_token.PeerToken(room.room_id, peer_id, fingerprint, exp)
        )

    # --- handlers ---------------------------------------------------------------------------

    async def _join(self, request: web.Request) -> web.Response:
        app_key, body = await self._authenticate(request)
        try:
            join = messages.JoinRequest.from_json(body)
        except messages.MessageError as exc:
            raise EdgeError(400, exc.code, exc.message) from None
        url = routes.normalise_url(join.url)
        room_id = routes.room_id(url)
        if request.query.get("room", room_id) != room_id:
            raise EdgeError(400, "bad_request", "the room in the query is not the url's")
        room = self.rooms.get(room_id)
        if room is not None and not room.closed and not self._allowed(room, app_key):
            raise EdgeError(403, "room_forbidden", "this room is another app's")
        if room is None or room.closed:
            room = await self._new_room(app_key, url, room_id)
        with room.joining():
            try:
                await room.wait_ready()
            except SourceError as exc:
                logger.info(
                    "room %s: app %s refused: %s (%s)", room_id, app_key, exc.message,
                    room.safe_url,
                )  # fmt: skip
                if exc.refused:
                    raise EdgeError(403, "source_refused", SOURCE_REFUSED) from None
                raise EdgeError(502, "source_unreachable", SOURCE_UNAVAILABLE) from None
            peer_id = secrets.token_urlsafe(12)
            update = room.add_peer(peer_id, join.fingerprint, join.nat_type, join.upload)
        peer = room.tracker.peers[peer_id]
        logger.info(
            "room %s: app %s joined as %s (upload %s, seed %s, %d neighbours)",
            room_id,
            app_key,
            peer_id,
            join.upload,
            peer.seed,
            len(peer.out),
        )
        del update
        response = messages.JoinResponse(
            room=room_id,
            peer_id=peer_id,
            stream_id=room.stream_id,
            edge_key=self.edge_key,
            token=self._token(room, peer_id, join.fingerprint),
            seed=peer.seed,
            neighbours=room.tracker.neighbours_of(peer_id),
            ice_servers=self._ice_servers(f"swarm/{peer_id}"),
            chunk_ms=self.config.chunk_ms,
        )
        return web.json_response(response.to_json())

    async def _new_room(self, app_key: str, url: str, room_id: str) -> Room:
        active, pending = self._count_rooms()
        if active >= self.config.max_rooms or pending >= self.config.max_pending_rooms:
            raise EdgeError(503, "too_many_rooms", "this edge serves its maximum of rooms")
        mine = sum(1 for r in self.rooms.values() if r.owner == app_key and not r.closed)
        if mine >= self.config.max_rooms_per_app:
            raise EdgeError(429, "room_quota", "this app holds its maximum of rooms")
        try:
            if is_device_url(url):  # no http fetch: the cloud's rules for a grant instead
                self._authorise_device(app_key, url)
            else:
                await self._policy.check(url)
        except SourceRefused as exc:
            logger.info("join by app %s: %s refused: %s", app_key, routes.redact_url(url), exc)
            raise EdgeError(403, "source_refused", SOURCE_REFUSED) from None
        except SourceUnresolved as exc:
            logger.info("join by app %s: %s: %s", app_key, routes.redact_url(url), exc)
            raise EdgeError(502, "source_unreachable", SOURCE_UNAVAILABLE) from None
        room = self.rooms.get(room_id)  # another join may have made it meanwhile
        if room is not None and not room.closed:
            if not self._allowed(room, app_key):
                raise EdgeError(403, "room_forbidden", "this room is another app's")
            return room
        if self._http is None:
            # The resolver refuses what the policy refuses at the connect itself (rebinding).
            # One streaming connection per room (and a redirect's): aiohttp's default cap
            # of 100 would make the 101st room wait for a slot until its connect timeout.
            limit = self.config.max_rooms + self.config.max_pending_rooms + 8
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(self._policy), limit=limit, limit_per_host=0
            )
            self._http = aiohttp.ClientSession(connector=connector)
        room = Room(
            url,
            room_id,
            self.config,
            self.signer,
            self._http,
            ssl_context=self._ssl,
            on_closed=self._room_closed,
            owner=app_key,
            product=(
                parse_device_url(url).product_id
                if is_device_url(url)
                else self.config.product_of(url)
            ),
            policy=self._policy,
            budget=self._budget,
            device_source=self.device_source,
        )
        self.rooms[room_id] = room
        room.start()
        return room

    async def _live(self, request: web.Request) -> web.Response:
        app_key, _ = await self._authenticate(request)
        room = self._room(request, app_key)
        store = room.store
        info = messages.LiveInfo(
            room.stream_id,
            store.live_seq,
            store.keyframe_seq,
            store.init.init_id if store.init is not None else None,
            room.state,
            store.keyframe_seqs(routes.MAX_KEYFRAMES),
        )
        return web.json_response(info.to_json())

    async def _init(self, request: web.Request) -> web.Response:
        app_key, _ = await self._authenticate(request)
        data = self._room(request, app_key).init_data()
        if data is None:
            raise EdgeError(404, "not_yet", "the source has sent no sequence headers yet")
        return _octets(data)

    async def _chunk(self, request: web.Request) -> web.Response:
        app_key, _ = await self._authenticate(request)
        room = self._room(request, app_key)
        text = request.match_info["seq"]
        if not (text.isascii() and text.isdigit() and len(text) <= 20) or int(text) >= 2**64:
            raise EdgeError(400, "bad_request", "seq must be a u64 in decimal")
        wait = 0.0
        if "wait" in request.query:
            try:
                wait = float(request.query["wait"])
            except ValueError:
                wait = -1.0
            if not 0 <= wait <= routes.MAX_CHUNK_WAIT:
                raise EdgeError(
                    400, "bad_request", f"wait must be in [0, {routes.MAX_CHUNK_WAIT:g}]"
                )
        status, data = await room.chunk(int(text), wait)
        if status is Lookup.GONE:
            raise EdgeError(410, "gone", f"chunk {text} is older than this edge keeps")
        if data is None:
            raise EdgeError(404, "not_yet", f"chunk {text} has not been cut yet")
        return _octets(data)

    async def _stats(self, request: web.Request) -> web.Response:
        app_key, _ = await self._authenticate(request)
        rooms = [
            room.stats().to_json() for room in self.rooms.values() if self._allowed(room, app_key)
        ]
        return web.json_response({"rooms": rooms})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        room = self._room(request)
        if "token" in request.query:  # it would be in every access log and proxy's
            raise EdgeError(400, "bad_request", "send the peer token in the Authorization header")
        peer_id = request.query.get("peer_id", "")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise EdgeError(401, "bad_token", "no 'Authorization: Bearer' peer token")
        if not routes.is_peer_id(peer_id):
            raise EdgeError(400, "bad_request", "peer_id is missing or malformed")
        try:
            claims = peer_token.verify_peer_token(
                token, self.signer.public_key, now=self._clock(), room=room.room_id, leeway=0
            )
        except peer_token.TokenError as exc:
            raise EdgeError(401, "bad_token", f"{exc} ({exc.reason})") from None
        if claims.peer_id != peer_id:
            raise EdgeError(401, "bad_token", "the token is another peer's")
        if not room.knows(peer_id):
            raise EdgeError(404, "unknown_peer", "this peer is not in the room (join again)")
        if not room.activated and self._count_rooms()[0] >= self.config.max_rooms:
            raise EdgeError(503, "too_many_rooms", "this edge serves its maximum of rooms")
        ws = web.WebSocketResponse(max_msg_size=4 * routes.MAX_WS_FRAME, heartbeat=20.0)
        await ws.prepare(request)
        session = PeerSession(peer_id, ws)
        room.attach(session)
        refresh = asyncio.create_task(self._refresh_tokens(room, session, claims.fingerprint))
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_frame(room, session, msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._refuse(session, "bad_request", "frames must be JSON text")
                else:
                    break  # an error (such as a frame over the hard limit) closes the socket
        finally:
            refresh.cancel()
            room.detach(session)
            await session.aclose()
        return ws

    async def _refresh_tokens(self, room: Room, session: PeerSession, fingerprint: str) -> None:
        while True:
            await asyncio.sleep(routes.TOKEN_TTL - routes.TOKEN_REFRESH)
            token = self._token(room, session.peer_id, fingerprint)
            session.send(messages.TokenUpdate(token).to_json())

    def _on_frame(self, room: Room, session: PeerSession, data: str) -> None:
        try:
            message = messages.parse_peer_message(data)
        except messages.MessageError as exc:
            self._refuse(session, exc.code, exc.message)
            return
        if isinstance(message, messages.Signal):
            target = room.sessions.get(message.peer)
            if target is None or target is session:
                self._refuse(session, "unknown_peer", f"no peer {message.peer} in this room")
                return
            if not room.tracker.linked(session.peer_id, message.peer):
                # Only the tracker's pairs talk: no member can flood an arbitrary peer.
                self._refuse(session, "not_neighbour", f"peer {message.peer} is not a neighbour")
                return
            if not session.may_signal(time.monotonic()):
                self._refuse(session, "rate_limited", "too many signals: slow down")
                return
            if not target.send(message.relayed(session.peer_id).to_json(outgoing=True), drop=True):
                # The receiver is backed up: the sender's signal goes, the receiver stays.
                self._refuse(session, "peer_busy", f"peer {message.peer} is busy: try later")
        elif isinstance(message, messages.PeerStats):
            if not room.tracker.report(session.peer_id, message, time.monotonic()):
                self._refuse(session, "bad_stats", "stats beyond what is possible since the join")
                return
            room.maybe_reselect_seeds()
        else:
            room.apply(room.tracker.need_neighbours(session.peer_id, message.exclude))

    def _refuse(self, session: PeerSession, code: str, message: str) -> None:
        errors = session.penalise(time.monotonic())
        session.send(messages.ErrorMessage(code, message).to_json())
        if errors > routes.MAX_WS_ERRORS:
            session.close(CLOSE_POLICY, "too many bad frames")


def _octets(data: bytes) -> web.Response:
    return web.Response(
        body=data, content_type="application/octet-stream", headers={"Cache-Control": "no-store"}
    )
