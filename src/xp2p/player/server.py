"""The local player: HTTP-FLV on 127.0.0.1 that ffplay, VLC, mpv or a browser can open.

What the seed's P2P-Player plugin does: a player opening ``/live/PRODUCT/DEVICE.flv`` starts
the pull (playerStartPull), the last player closing it stops the pull (playerStopPull). Several
players of one device share its one pull: a late one gets the FLV header, the sequence headers
and the current GOP from a ``GopCache``, then the live bytes, so it starts on a keyframe too.

Every request passes ``xp2p.player.access`` first (Host, cross-site, per-start token, the
devices it was started for); see there for why. The URLs carry the token as ``&token=T``:
``/live/PRODUCT/DEVICE.flv?quality=high&token=T``, ``/playback/...flv?start_time=S&end_time=E
&token=T`` and the page ``/?token=T``. At most ``max_playbacks`` (4) playback pulls run at
once (each is a link of its own to the device); more get 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from xp2p.errors import ErrorCode, XP2PError
from xp2p.flv import FlvError, FlvHeader, FlvReader, FlvTag, GopCache
from xp2p.httpd import ThrottledLog, host_in_url, start_site
from xp2p.player.access import DEFAULT_MAX_PLAYBACKS, PlayerAccess, is_loopback
from xp2p.player.playback import serve_playback
from xp2p.tasks import TaskSet
from xp2p.viewer import FlvParams, P2PModule, StreamInfo
from xp2p.web_assets import MPEGTS_JS, SDK_SRC, WEB_DIR

logger = logging.getLogger("xp2p.player")

QUALITIES = ("standard", "high", "super")
#: A player whose queue holds this much is too slow for live video and is disconnected.
MAX_CLIENT_BACKLOG = 8 * 1024 * 1024
#: Keep the link this long after the last player left, so reopening is instant.
LINGER = 30.0
#: The page embeds a player from the JavaScript SDK's folder (``WEB_DIR``, shared with the
#: cloud's web app); without it (an installed wheel) the page has the links only.
#: The scripts the page loads, served from fixed routes of the player itself (same origin:
#: no CORS, and the Host/Origin/token checks apply to them as to every URL).
SDK_FILES = {
    "player.js": SDK_SRC / "player.js",
    "mpegts.js": MPEGTS_JS,
}


class _Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.backlog = 0

    def send(self, data: bytes | None) -> None:
        if data is not None:
            self.backlog += len(data)
        self.queue.put_nowait(data)


class DevicePull:
    """One stream's pull, shared by every player watching it: a device's live stream (1v1,
    or with ``live_stream_domain`` the seed's switch to the camera's swarm when it is full),
    or with ``url`` a 1vN stream (``/live/stream/NAME.flv``), whose quality is the stream's."""

    def __init__(
        self,
        module: P2PModule,
        product_id: str,
        device_name: str,
        *,
        live_stream_domain: str = "",
        url: str = "",
    ) -> None:
        self.module = module
        self.product_id = product_id
        self.device_name = device_name
        self.live_stream_domain = live_stream_domain
        self.url = url
        self.service_id = f"player:{product_id}/{device_name}"
        self.quality: str | None = None
        #: the quality the running service was started for: with the switch a service
        #: (a 1v1 link or a room of one quality) serves that quality only
        self._service_quality: str | None = None
        self.clients: set[_Client] = set()
        self._reader = FlvReader()
        self._gop = GopCache()
        self._header: FlvHeader | None = None
        self._lock = asyncio.Lock()
        self._linger: asyncio.TimerHandle | None = None
        #: the linger's service stops: held until done (a shutdown is never cancelled)
        self._tasks = TaskSet(f"player-{product_id}/{device_name}")

    @property
    def label(self) -> str:
        return f"{self.product_id}/{self.device_name}"

    async def join(self, quality: str) -> _Client:
        async with self._lock:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            if self.url:
                quality = "stream"  # a 1vN stream has one quality, its own
            if self.clients and quality != self.quality:
                raise web.HTTPConflict(
                    text=f"{self.label} is playing quality={self.quality}; "
                    "close that player first\n"
                )
            client = _Client()
            if not self.clients:
                await self._start(quality)
            elif self._header is not None:
                client.send(
                    self._header.encode() + b"".join(t.encode() for t in self._gop.snapshot())
                )
            self.clients.add(client)
            return client

    def _stream_info(self, quality: str) -> StreamInfo:
        if self.url:
            return StreamInfo(url=self.url)
        if not self.live_stream_domain:
            return StreamInfo(product_id=self.product_id, device_name=self.device_name)
        # The switch asks the camera for this quality and, when it is full, joins the room
        # of this quality: the seed's 1v1 url carries it.
        return StreamInfo(
            url=f"http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?action=live&channel=0&quality={quality}",
            product_id=self.product_id,
            device_name=self.device_name,
            live_stream_domain=self.live_stream_domain,
        )

    async def _start(self, quality: str) -> None:
        self._reader, self._gop, self._header = FlvReader(), GopCache(), None
        running = self.module.has_service(self.service_id)
        if running and self.live_stream_domain and self._service_quality != quality:
            await self.module.stop_p2p_service(self.service_id)  # another quality's room
            running = False
        if not running:
            await self.module.start_p2p_service(
                self.service_id, self._stream_info(quality), msg_callback=self._on_msg
            )
            self._service_quality = quality
        # On a 1vN service the flv is ignored: the stream is the room's.
        flv = FlvParams(params=f"action=live&channel=0&quality={quality}")
        await self.module.start_stream(self.service_id, self._on_data, flv)
        self.quality = quality
        logger.info("pull of %s (quality=%s) started", self.label, quality)

    def _on_data(self, data: bytes) -> None:
        # Players get whole tags only, never the link's raw chunks: a player that joins
        # between two chunks starts from the GOP cache's snapshot (whole tags), so the next
        # bytes it gets must start at a tag boundary, or its FLV is broken at the seam.
        whole = bytearray()
        try:
            for item in self._reader.feed(data):
                if isinstance(item, FlvHeader):
                    self._header = item
                elif isinstance(item, FlvTag):
                    self._gop.add(item)
                whole += item.encode()
        except FlvError as exc:
            logger.error("%s sent malformed FLV (%s); disconnecting players", self.label, exc)
            self._end_all()
            return
        if not whole:
            return  # the chunk ended inside a tag: it goes out with the rest of that tag
        data = bytes(whole)
        for client in list(self.clients):
            if client.backlog > MAX_CLIENT_BACKLOG:
                logger.warning("a player of %s is too slow; disconnecting it", self.label)
                self.clients.discard(client)
                client.send(None)
            else:
                client.send(data)

    def _on_msg(self, event: str, subtype: str, detail: Any) -> None:
        if subtype == "connected" and isinstance(detail, dict) and "mode" in detail:
            logger.info("%s connected (%s)", self.label, detail["mode"])  # 1v1 or swarm
        if subtype in ("eof", "disconnect", "fail"):
            logger.warning("%s %s %s", self.label, subtype, detail or "")
            self._end_all()
            if subtype == "disconnect":
                # The link is gone; the next player starts a new service (fresh xp2pInfo).
                self._stop_service_soon(0)

    def _end_all(self) -> None:
        for client in self.clients:
            client.send(None)
        self.clients.clear()

    async def leave(self, client: _Client) -> None:
        async with self._lock:
            self.clients.discard(client)
            if self.clients:
                return
            with contextlib.suppress(XP2PError):
                await self.module.stop_stream(self.service_id)
            logger.info("last player of %s left; pull stopped", self.label)
            self._stop_service_soon(LINGER)

    def _stop_service_soon(self, delay: float) -> None:
        def stop() -> None:
            self._tasks.spawn(self.module.stop_p2p_service(self.service_id), "stop")

        if self._linger is not None:
            self._linger.cancel()
        self._linger = asyncio.get_running_loop().call_later(delay, stop)

    def close(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        self._end_all()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PlayerServer:
    """``host`` must be loopback unless ``public`` (``--player-public``); ``allow_origins``
    are the web origins whose pages may use the player (none by default)."""

    def __init__(
        self,
        module: P2PModule,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        devices: Iterable[str] = (),
        streams: Mapping[str, str] | None = None,
        live_stream_domain: str = "",
        allow_origins: Iterable[str] = (),
        public: bool = False,
        max_playbacks: int = DEFAULT_MAX_PLAYBACKS,
        web_dir: Path | None = WEB_DIR,
    ) -> None:
        self.module = module
        # Live and each playback of one camera run on links of their own: the seed's one
        # link per device (-2401) is for apps, not for this server.
        module.one_link_per_device = False
        self.web_dir = web_dir
        self.host = host
        self.port = port
        #: 1vN streams served like devices: ``stream/NAME`` -> the stream's https:// URL
        self.streams = dict(streams or {})
        self.devices = [*devices, *self.streams]
        self.live_stream_domain = live_stream_domain
        self.access = PlayerAccess.create(
            host=host,
            port=port,
            devices=self.devices,
            allow_origins=allow_origins,
            public=public,
            max_playbacks=max_playbacks,
        )
        self.playbacks = 0
        #: requests refused by the access checks, by kind (for tests and diagnostics)
        self.refused: dict[str, int] = {}
        self._pulls: dict[tuple[str, str], DevicePull] = {}
        self._runner: web.AppRunner | None = None
        #: a hostile page can fire refusals as fast as it likes: one line per kind per 10 s
        self._refusal_log = ThrottledLog(logger)

    @property
    def token(self) -> str:
        return self.access.token

    @property
    def url(self) -> str:
        return f"http://{host_in_url(self.host)}:{self.port}"

    @property
    def page_url(self) -> str:
        return f"{self.url}/?token={self.token}"

    def live_url(self, device: str, quality: str = "high") -> str:
        return f"{self.url}/live/{device}.flv?quality={quality}&token={self.token}"

    def sdk_url(self, name: str) -> str:
        """Same-origin path of one of ``SDK_FILES`` (the page's own scripts)."""
        return f"/sdk/{name}?token={self.token}"

    def sdk_available(self) -> bool:
        return self.web_dir is not None and all(
            (self.web_dir / rel).is_file() for rel in SDK_FILES.values()
        )

    def playback_url(self, device: str, start_time: int, end_time: int, channel: int = 0) -> str:
        query = f"start_time={start_time}&end_time={end_time}&channel={channel}"
        return f"{self.url}/playback/{device}.flv?{query}&token={self.token}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(self._cors)
        app.router.add_get("/", self._index)
        app.router.add_get("/sdk/{name}", self._sdk)
        app.router.add_get("/live/{product}/{device}.flv", self._live)
        app.router.add_get("/playback/{product}/{device}.flv", self._playback)
        try:
            self._runner, self.port = await start_site(app, self.host, self.port, access_log=False)
        except OSError as exc:
            # The seed's "加载本地server错误": the local server could not listen.
            raise XP2PError(
                ErrorCode.LOCAL_SERVER_ERROR,
                f"the local player cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
            ) from None
        self.access = dataclasses.replace(self.access, port=self.port)
        if not is_loopback(self.host):
            logger.warning(
                "the player listens on %s, beyond this machine: anyone who can reach it and "
                "holds the URL token can watch %s; prefer 127.0.0.1",
                self.host,
                ", ".join(self.devices) or "nothing",
            )
        logger.info("serving %s", self.url)  # no token in logs

    async def stop(self) -> None:
        for pull in self._pulls.values():
            pull.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The access checks, before any route runs (so before any link is opened)."""
        refusal = self.access.check_request(request.headers) or self.access.check_token(
            request.query.get("token")
        )
        if refusal is None and "product" in request.match_info:
            device = f"{request.match_info['product']}/{request.match_info['device']}"
            refusal = self.access.check_device(device)
        if refusal is not None:
            self.refused[refusal.kind] = self.refused.get(refusal.kind, 0) + 1
            # The kind only: never the token, nor header values a hostile page chose.
            self._refusal_log.warning(
                refusal.kind, "refused a request (%s): %d", refusal.kind, refusal.status
            )
            return web.Response(
                status=refusal.status, text=refusal.message, headers={"Cache-Control": "no-store"}
            )
        return await handler(request)

    async def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """A page on a configured origin may read what it asked for (flv.js fetches)."""
        cors = self.access.cors_origin(request.headers)
        if cors is not None:
            response.headers["Access-Control-Allow-Origin"] = cors
            response.headers["Vary"] = "Origin"

    async def _index(self, request: web.Request) -> web.Response:
        embed = self.sdk_available()
        rows = []
        for device in self.devices:
            links = " ".join(
                f'<a href="{html.escape(self.live_url(device, q))}">{q}</a>' for q in QUALITIES
            )
            # The stream URL goes in a data attribute (escaped), read by the page's script:
            # never spliced into script text. A path: the page fetches from its own origin
            # whichever of 127.0.0.1/localhost/[::1] it was opened as.
            video = (
                f"<video class=xp2p-live width=640 controls muted playsinline "
                f'data-device="{html.escape(device)}" '
                f'data-src="{html.escape(self.live_url(device).removeprefix(self.url))}">'
                "</video><br>"
                if embed
                else ""
            )
            rows.append(
                f"<li><b>{html.escape(device)}</b><br>{video}live: {links}<br>"
                f"<code>ffplay {html.escape(self.live_url(device))}"
                "</code></li>"
            )
        script = ""
        if embed:
            script = (
                f'<script src="{html.escape(self.sdk_url("mpegts.js"))}"></script>'
                f'<script type=module data-player="{html.escape(self.sdk_url("player.js"))}">'
                "const { createLivePlayer } = await import("
                "document.querySelector('script[data-player]').dataset.player);"
                "window.xp2pPlayers = {};"
                "for (const video of document.querySelectorAll('video.xp2p-live')) {"
                "  const url = new URL(video.dataset.src, location.href).href;"
                "  window.xp2pPlayers[video.dataset.device] = createLivePlayer(video, { url });"
                "}"
                "</script>"
            )
        else:
            script = "<p>(no embedded player: run <code>npm ci</code> in web/ to get one)</p>"
        body = (
            # An empty icon: else the browser asks for /favicon.ico, without the token.
            "<!doctype html><meta charset=utf-8><link rel=icon href='data:,'>"
            "<title>xp2p player</title>"
            "<h1>xp2p local player</h1><p>Watch here, or open a stream in ffplay, VLC or mpv:</p>"
            f"<ul>{''.join(rows) or '<li>no devices configured</li>'}</ul>{script}"
        )
        # The page holds the token: it must never travel on in a Referer.
        return web.Response(
            text=body,
            content_type="text/html",
            headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
        )

    async def _sdk(self, request: web.Request) -> web.StreamResponse:
        """One of ``SDK_FILES``, by its fixed name only (no path from the request)."""
        rel = SDK_FILES.get(request.match_info["name"])
        if rel is None or self.web_dir is None or not (self.web_dir / rel).is_file():
            raise web.HTTPNotFound(text="no such script\n")
        return web.Response(
            body=(self.web_dir / rel).read_bytes(),
            content_type="text/javascript",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def _live(self, request: web.Request) -> web.StreamResponse:
        product, device = request.match_info["product"], request.match_info["device"]
        quality = request.query.get("quality", "high")
        if quality not in QUALITIES:
            raise web.HTTPBadRequest(text=f"quality must be one of {', '.join(QUALITIES)}\n")
        pull = self._pulls.get((product, device))
        if pull is None:
            pull = self._pulls[product, device] = DevicePull(
                self.module,
                product,
                device,
                live_stream_domain=self.live_stream_domain,
                url=self.streams.get(f"{product}/{device}", ""),
            )
        try:
            client = await pull.join(quality)
        except XP2PError as exc:
            logger.warning("cannot play %s/%s: %s", product, device, exc)
            raise web.HTTPBadGateway(text=f"{exc}\n") from exc
        response = web.StreamResponse(
            headers={"Content-Type": "video/x-flv", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            while (data := await client.queue.get()) is not None:
                client.backlog -= len(data)
                await response.write(data)
        except ConnectionResetError:
            pass  # the player went away
        finally:
            await pull.leave(client)
        return response

    async def _playback(self, request: web.Request) -> web.StreamResponse:
        """Recordings: one pull of its own per player request (``xp2p.player.playback``),
        at most ``max_playbacks`` at once: each is a link, and links are the user's budget."""
        if f"{request.match_info['product']}/{request.match_info['device']}" in self.streams:
            raise web.HTTPNotFound(text="a 1vN stream has no recordings\n")
        if self.playbacks >= self.access.max_playbacks:
            self.refused["busy"] = self.refused.get("busy", 0) + 1
            self._refusal_log.warning(
                "busy", "refused a playback: %d already running", self.playbacks
            )
            raise web.HTTPServiceUnavailable(
                text=f"{self.playbacks} playbacks already running; close one first\n"
            )
        self.playbacks += 1
        try:
            return await serve_playback(self.module, request)
        finally:
            self.playbacks -= 1
