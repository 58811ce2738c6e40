"""A plain HTTP(S)-FLV origin: one live source served at ``/live/NAME.flv`` (`xp2p origin`).

What an edge pulls in 1vN, and what any player can open. It is the device's `LiveChannel`
served over ordinary HTTP instead of a P2P link: each client gets the FLV header, the
sequence headers and the stream from the newest keyframe at once, and a client that cannot
keep up skips to the next keyframe rather than making the origin buffer for it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from aiohttp import web

from xp2p.device.channel import LiveChannel
from xp2p.httpd import host_in_url, start_site
from xp2p.media import MediaSource

# The certificate helpers live in xp2p.trust (the cloud serves HTTPS with them too);
# re-exported here for the origin's callers.
from xp2p.trust import self_signed_certificate as self_signed_certificate
from xp2p.trust import server_ssl_context as server_ssl_context

logger = logging.getLogger("xp2p.origin")

#: A client waits at most this long for a source that is still starting.
START_TIMEOUT = 10.0


class OriginServer:
    def __init__(
        self,
        source_factory: Callable[[], MediaSource],
        *,
        name: str = "test",
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        max_lag: float = 3.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.channel = LiveChannel(f"origin/{name}", source_factory, max_lag=max_lag)
        self._runner: web.AppRunner | None = None
        #: every GET of the stream so far, and those still open
        self.connections = 0
        self.active = 0

    @property
    def path(self) -> str:
        return f"/live/{self.name}.flv"

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host_in_url(self.host)}:{self.port}{self.path}"

    async def start(self) -> None:
        await self.channel.start()
        app = web.Application()
        app.router.add_get(self.path, self._live, allow_head=False)
        try:
            self._runner, self.port = await start_site(
                app, self.host, self.port, ssl_context=self.ssl_context, shutdown_timeout=1.0
            )
        except BaseException:
            await self.channel.aclose()
            raise

    async def stop(self) -> None:
        await self.channel.aclose()  # ends every response first
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OriginServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _live(self, request: web.Request) -> web.StreamResponse:
        if not await self.channel.wait_ready(START_TIMEOUT):
            reason = self.channel.failed or "starting"
            return web.json_response({"error": f"no video ({reason})"}, status=503)
        start, subscription = self.channel.subscribe()
        self.connections += 1
        self.active += 1
        peer = request.remote
        logger.info("origin: %s pulls %s (%d open)", peer, self.path, self.active)
        response = web.StreamResponse(
            headers={"Content-Type": "video/x-flv", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            await response.write(start)
            while True:
                batch = await subscription.next_batch()
                if not batch:
                    break  # the source ended
                await response.write(b"".join(tag.encode() for tag in batch))
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            subscription.close()
            self.active -= 1
            logger.info("origin: %s stopped pulling (%d open)", peer, self.active)
        return response
