"""`xp2p edge`: the edge on its own port, with the app accounts of the cloud's config.

The same `EdgeService` as inside the cloud; only the aiohttp runner, the STUN/TURN list it
hands out and the key are its own; TLS, the plain-HTTP-on-loopback-only rule, the request
verifier's limits and the connection limits are the cloud config's. Give it the cloud's
``grant_key_file`` to sign chunks with the cloud's key, or let it make one per run (viewers
learn it from the join answer).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from aiohttp import web

from xp2p.auth import turn_credentials
from xp2p.cloud.config import WILDCARD_HOSTS, CloudConfig
from xp2p.httpd import ConnectionLimits, host_in_url, start_site
from xp2p.trust import server_ssl_context

from .config import EdgeConfig
from .service import EdgeService, apps_allow, edge_errors

logger = logging.getLogger("xp2p.edge")

MAX_BODY_SIZE = 64 * 1024


class EdgeServer:
    def __init__(self, cloud: CloudConfig, config: EdgeConfig, *, host: str | None = None) -> None:
        self.cloud = cloud
        self.config = config
        self.host = host or cloud.host
        # The standalone edge answers apps as the cloud does: the same transport rule (plain
        # HTTP on loopback only), the same TLS pair, verifier limits and connection limits.
        dataclasses.replace(cloud, host=self.host).check_transport()
        self.service = EdgeService(
            config,
            cloud.load_grant_key(),
            cloud.request_verifier(),
            ice_servers=self._ice_servers,
            app_allows=apps_allow(cloud.app),
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def _ice_servers(self, user: str) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = (
            [{"urls": list(self.config.stun)}] if self.config.stun else []
        )
        now = int(time.time())
        for turn in self.cloud.turn:
            username, password = turn_credentials(turn.shared_secret, user, turn.ttl, now=now)
            servers.append({"urls": list(turn.urls), "username": username, "credential": password})
        return servers

    def create_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_SIZE, middlewares=[edge_errors])

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "rooms": len(self.service.rooms)})

        app.router.add_get("/healthz", healthz)
        self.service.add_routes(app)
        return app

    async def start(self) -> None:
        cloud = self.cloud
        tls = None
        if cloud.tls_cert_file is not None and cloud.tls_key_file is not None:
            tls = server_ssl_context(cloud.tls_cert_file, cloud.tls_key_file)
        self._runner, self._port = await start_site(
            self.create_app(),
            self.host,
            self.config.port,
            ssl_context=tls,
            limits=ConnectionLimits(
                header_timeout=cloud.header_timeout,
                keepalive_timeout=cloud.keepalive_timeout,
                max_per_source=cloud.max_connections_per_source,
            ),
        )
        logger.info("edge listening on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.service.aclose()

    async def __aenter__(self) -> EdgeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("edge not started")
        host = self.cloud.advertised_host if self.host in WILDCARD_HOSTS else self.host
        scheme = "https" if self.cloud.tls else "http"
        return f"{scheme}://{host_in_url(host)}:{self._port}"
