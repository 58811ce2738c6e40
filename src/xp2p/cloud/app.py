"""The cloud service: app API, device WebSocket and STUN, in one asyncio shell.

App endpoints (every request signed, see :mod:`xp2p.auth`)::

    POST /api/v1/app/session                                    ICE servers, STUN, time
    GET  /api/v1/devices/{product_id}/{device_name}/p2p-info    xp2pInfo and presence
    POST /api/v1/devices/{product_id}/{device_name}/grant       a signed access grant
    POST /api/v1/devices/{product_id}/{device_name}/connect     offer → device → answer
    POST /api/v1/app/viewer-token                               mint a viewer token (signed only)
    GET  /api/v1/app/devices                                    the devices the caller may see
    /api/v1/swarm/...                                           the 1vN edge (xp2p.cloud.edge)
    POST /api/v1/demo/viewer-token                              the demo's sign-in (demo_login)
    /app/..., /sdk/...                                          the web app (xp2p.cloud.webapp)

The ``BROWSER_ROUTES`` also take ``Authorization: Bearer <viewer token>`` instead of the
signature (:mod:`xp2p.cloud.viewer_token`), within the token's scope, and answer CORS for the
origins of the token's app (``[[apps]] cors_origins``). The demo sign-in
(:mod:`xp2p.cloud.demo_login`) exists only when the server is given a ``DemoLogin``, and
answers pages of the cloud's own origin only.

Errors are ``{"error": {"code": "<snake_case>", "message": "..."}}`` with a matching HTTP
status; no handler failure takes the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xp2p import __version__
from xp2p.auth import (
    HEADER_APP,
    AccessGrant,
    AuthError,
    GrantSigner,
    RequestVerifier,
    export_public_key,
    normalise_permissions,
    turn_credentials,
)
from xp2p.cloud.account_db import AccountDatabase
from xp2p.cloud.accounts import Accounts
from xp2p.cloud.admin import AdminApi
from xp2p.cloud.config import NAME_RE, WILDCARD_HOSTS, AppConfig, CloudConfig, ConfigError
from xp2p.cloud.demo_login import DemoLogin, LoginBodyError, parse_login_body
from xp2p.cloud.device_ws import DeviceGateway
from xp2p.cloud.edge import EdgeConfig, EdgeService
from xp2p.cloud.edge.device_source import CloudDeviceSource
from xp2p.cloud.edge.service import apps_allow
from xp2p.cloud.hub import DeviceRefused, RelayError, SignallingHub
from xp2p.cloud.limits import RateLimiter
from xp2p.cloud.metrics import CONTENT_TYPE_LATEST, CloudMetrics, MetricsAccess
from xp2p.cloud.registry import DeviceRegistry, MemoryRegistry
from xp2p.cloud.signin_throttle import SignInThrottle
from xp2p.cloud.stun import StunServer, start_stun_server
from xp2p.cloud.viewer_token import (
    MAX_SCOPE_ENTRIES,
    TOKEN_PREFIX,
    TokenError,
    ViewerToken,
    ViewerTokenCodec,
    derive_token_key,
)
from xp2p.cloud.webapp import WebApp
from xp2p.httpd import ConnectionLimits, ThrottledLog, host_in_url, start_site
from xp2p.link.config import StunInfo
from xp2p.swarm.edge_messages import RoomStats
from xp2p.trust import server_ssl_context
from xp2p.web_assets import WEB_DIR

logger = logging.getLogger("xp2p.cloud")

MAX_BODY_SIZE = 64 * 1024
MAX_OFFER_SIZE = 16 * 1024
#: Devices one ``GET /api/v1/app/devices`` lists at most (then ``truncated``).
MAX_LISTED_DEVICES = 1000
#: The demo sign-in's key in its failure throttle (one identity: the demo login itself).
DEMO_LOGIN_IDENTITY = "demo-login"
#: How long ``stop()`` lets in-flight requests finish.
SHUTDOWN_TIMEOUT = 2.0

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


#: Query parameters that look like a place for a token: refused (400), never logged.
_TOKEN_QUERY_NAMES = frozenset({"token", "access_token", "viewer_token", "authorization"})
#: The routes a browser calls (canonical path → methods): Bearer viewer tokens and CORS.
_DEVICE = "/api/v1/devices/{product_id}/{device_name}"
BROWSER_ROUTES: dict[str, str] = {
    "/api/v1/app/session": "POST",
    f"{_DEVICE}/p2p-info": "GET",
    f"{_DEVICE}/grant": "POST",
    f"{_DEVICE}/connect": "POST",
    "/api/v1/app/devices": "GET",
}
_CORS_HEADERS = frozenset({"authorization", "content-type"})
CORS_MAX_AGE = 600
#: Where a request's verified viewer token (or the app of an expired one) is kept.
_TOKEN_KEY = web.RequestKey("xp2p_viewer_token", ViewerToken)
_TOKEN_APP_KEY = web.RequestKey("xp2p_viewer_token_app", str)
#: The cloud's metrics, where the error middleware (a function, not a method) finds them.
METRICS_KEY = web.AppKey("xp2p_metrics", CloudMetrics)


class RedactedAccessLog(AbstractAccessLogger):
    """The cloud's access log: method, path without its query, status, size, time. A query
    string could hold a token someone put where it does not belong: it is never logged."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %s %.3fs",
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    metrics = request.app.get(METRICS_KEY)
    try:
        return await handler(request)
    except ApiError as exc:
        if metrics is not None:
            metrics.errors.labels(exc.code).inc()
        retry = exc.extra.get("retry_after")
        headers = {"Retry-After": str(math.ceil(retry))} if retry is not None else None
        return error_response(exc.status, exc.code, exc.message, headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        if metrics is not None:
            metrics.errors.labels(code).inc()
        return error_response(exc.status, code, exc.reason, headers=allow)
    except Exception:
        if metrics is not None:
            metrics.errors.labels("internal_error").inc()
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


@web.middleware
async def _no_token_in_query(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A token in a URL ends up in access logs, proxies and browser history: refused, and
    the access log (`RedactedAccessLog`) never writes the query. The edge's routes keep
    their own rule (``/api/v1/swarm``)."""
    if not request.path.startswith("/api/v1/swarm/"):
        for name, value in request.query.items():
            if name.lower() in _TOKEN_QUERY_NAMES or value.startswith(TOKEN_PREFIX + "."):
                return error_response(
                    400,
                    "token_in_query",
                    "send the viewer token in the Authorization header, never in the URL",
                )
    return await handler(request)


def json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return doc


class CloudServer:
    """Runs the cloud: ``await start()``, then ``url`` and ``stun_address`` are known."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        registry: DeviceRegistry | None = None,
        clock: Callable[[], float] = time.time,
        edge: EdgeConfig | None = None,
        web_dir: Path | None = WEB_DIR,
        demo_login: DemoLogin | None = None,
        metrics_access: MetricsAccess | None = None,
        accounts: Accounts | None = None,
        registry_db: AccountDatabase | None = None,
        admin_token: str = "",
    ) -> None:
        self.config = config
        #: the apps and devices every request checks: the TOML's, or the database's (--db),
        #: replaced whole by its watcher when an admin changes them
        self.accounts = accounts or Accounts.from_config(config)
        #: with --db: the database ``accounts`` is reloaded from, and the admin API on it
        self.registry_db = registry_db
        self._admin_token = admin_token
        self._registry_watch: asyncio.Task[None] | None = None
        self.registry: DeviceRegistry = registry or MemoryRegistry()
        self.hub = SignallingHub()
        #: ``GET /metrics`` (xp2p.cloud.metrics): a bearer token, or loopback clients only
        self.metrics = CloudMetrics(lambda: self.hub.online, self._room_stats)
        self._metrics_access = metrics_access or MetricsAccess()
        self._clock = clock
        self._offers = RateLimiter(config.offer_rate, config.offer_burst)
        #: one line per key per interval for refusals an attacker can repeat at will
        self._throttled_log = ThrottledLog(logger)
        grant_key = config.load_grant_key()
        self._signer = GrantSigner(grant_key)
        #: viewer tokens: MAC key derived from the grant key (why: xp2p.cloud.viewer_token)
        self._tokens = ViewerTokenCodec(derive_token_key(grant_key))
        #: replay cache, rate and failure throttle per app (config limits), shared with the edge
        self._verifier: RequestVerifier = config.request_verifier(self.accounts.app_secrets)
        edge = edge or EdgeConfig()
        #: the 1vN edge (rooms, tracker), on by default; it signs chunks with the grant key
        self.edge: EdgeService | None = None
        if edge.enabled:
            self.edge = EdgeService(
                edge,
                grant_key,
                self._verifier,
                ice_servers=self._ice_servers,
                clock=clock,
                app_allows=apps_allow(self.accounts.app),
                # the 1v1→1vN switch: the edge pulls a full camera over its own link
                device_source=CloudDeviceSource(
                    config,
                    self.accounts,
                    self.registry,
                    self.hub,
                    self._signer,
                    self._ice_servers,
                    clock=clock,
                ),
            )
        # Plain HTTP only on loopback (ConfigError naming host otherwise): issue 10 item 3.
        config.check_transport()
        self._gateway = DeviceGateway(
            config,
            self.accounts,
            self.registry,
            self.hub,
            self._device_welcome,
            grant_key=grant_key,
            clock=clock,
            metrics=self.metrics,
        )
        #: the web app and the SDK as static files (/app/, /sdk/); None: not served
        self.webapp = WebApp(web_dir) if web_dir is not None else None
        self.demo_login = demo_login
        self._demo_products = self._demo_scope(demo_login) if demo_login is not None else ()
        #: wrong demo codes, per source (and per the one identity), as for device proofs
        self._demo_throttle = SignInThrottle()
        self._runner: web.AppRunner | None = None
        self._stun: StunServer | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        return f"<CloudServer url={self.url if self._port else None}>"

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("cloud already started")
        cfg = self.config
        self._stun = await start_stun_server(
            cfg.stun_host,
            cfg.stun_port,
            alt_port=cfg.stun_alt_port,
            alt_host=cfg.stun_alt_host,
            advertised_host=cfg.advertised_host,
            rate=cfg.stun_rate,
            burst=cfg.stun_burst,
        )
        try:
            self._runner, self._port = await start_site(
                self.create_app(),
                cfg.host,
                cfg.port,
                ssl_context=self._tls_context(),
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                limits=ConnectionLimits(
                    header_timeout=cfg.header_timeout,
                    keepalive_timeout=cfg.keepalive_timeout,
                    max_per_source=cfg.max_connections_per_source,
                ),
                access_log_class=RedactedAccessLog,
            )
        except BaseException:
            self._stun.close()
            self._stun = None
            raise
        if self.registry_db is not None:
            self._registry_watch = asyncio.get_running_loop().create_task(
                self.registry_db.watch(self.accounts), name="registry-watch"
            )
        logger.info("cloud listening on %s, STUN on %s:%d", self.url, *self.stun_address)

    async def stop(self) -> None:
        if self._registry_watch is not None:
            self._registry_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registry_watch
            self._registry_watch = None
        if self._runner is not None:
            await self._runner.cleanup()  # on_shutdown closes device sockets first
            self._runner = None
        if self._stun is not None:
            self._stun.close()
            self._stun = None
        self._port = None

    async def __aenter__(self) -> CloudServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("cloud not started")
        host = self.config.host
        if host in WILDCARD_HOSTS:
            host = self.config.advertised_host
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{host_in_url(host)}:{self._port}"

    def _tls_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.tls_cert_file is None or cfg.tls_key_file is None:
            logger.warning(
                "cloud serves plain HTTP on loopback %s: for local use only (configure "
                "tls_cert_file/tls_key_file to serve devices and apps elsewhere)",
                cfg.host,
            )
            return None
        try:
            return server_ssl_context(cfg.tls_cert_file, cfg.tls_key_file)
        except (OSError, ssl.SSLError):
            raise ConfigError(
                "tls_cert_file/tls_key_file: cannot load a PEM certificate chain and its key"
            ) from None

    @property
    def app_url(self) -> str:
        """The web app's address; with a demo login, the code in the fragment (never sent
        to a server, so never in a log): the one address ``xp2p demo`` prints."""
        url = f"{self.url}/app/"
        if self.demo_login is not None:
            url += f"#login={self.demo_login.code}"
        return url

    def _own_origins(self) -> frozenset[str]:
        """The origins of the cloud's own pages: its URL's, and on loopback each loopback
        name's (a page opened as localhost). From the configuration, never from the request's
        Host, which a DNS-rebinding page chooses."""
        cfg = self.config
        scheme = "https" if cfg.tls else "http"
        hosts = {cfg.advertised_host} | ({cfg.host} - set(WILDCARD_HOSTS))
        if cfg.loopback_only:
            hosts |= {"127.0.0.1", "localhost", "::1"}
        default = 443 if cfg.tls else 80
        port = "" if self._port == default else f":{self._port}"
        return frozenset(f"{scheme}://{host_in_url(h).lower()}{port}" for h in hosts)

    def _demo_scope(self, login: DemoLogin) -> tuple[str, ...]:
        """The products a demo token covers: those of the app's configured devices."""
        app = self.accounts.app(login.app_key)
        if app is None:
            raise ConfigError(f"demo_login: no app {login.app_key!r} is configured")
        if login.token_ttl > self.config.viewer_token_max_ttl:
            raise ConfigError("demo_login: token_ttl exceeds viewer_token_max_ttl")
        products = sorted({d.product_id for d in self.accounts.devices if app.allows(d.product_id)})
        if not 1 <= len(products) <= MAX_SCOPE_ENTRIES:
            raise ConfigError(
                f"demo_login: app {app.key!r} must cover 1 to {MAX_SCOPE_ENTRIES} products "
                f"of configured devices, not {len(products)}"
            )
        return tuple(products)

    @property
    def stun_address(self) -> tuple[str, int]:
        """Where clients send STUN requests (the advertised host, the bound port)."""
        return self.stun_info.host, self.stun_info.port

    @property
    def stun_info(self) -> StunInfo:
        if self._stun is None:
            raise RuntimeError("cloud not started")
        addresses = self._stun.addresses
        return StunInfo(
            self.config.advertised_host, addresses.port, addresses.alt_port, addresses.alt_host
        )

    @property
    def grant_public_key(self) -> Ed25519PublicKey:
        return self._signer.public_key

    def create_app(self) -> web.Application:
        # CORS outside the JSON errors: error answers carry the CORS headers too.
        app = web.Application(
            client_max_size=MAX_BODY_SIZE,
            middlewares=[self._cors, _no_token_in_query, _json_errors],
        )
        app[METRICS_KEY] = self.metrics
        if self.registry_db is not None and self._admin_token:
            AdminApi(
                self.registry_db,
                self._admin_token,
                export_public_key(self.grant_public_key),
                ApiError,
                clock=self._clock,
            ).add_routes(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/version", self._version)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/api/v1/app/session", self._create_session)
        app.router.add_post("/api/v1/app/viewer-token", self._mint_viewer_token)
        app.router.add_get("/api/v1/app/devices", self._app_devices)
        if self.demo_login is not None:
            app.router.add_post("/api/v1/demo/viewer-token", self._demo_viewer_token)
        device = _DEVICE
        app.router.add_get(f"{device}/p2p-info", self._p2p_info)
        app.router.add_post(f"{device}/grant", self._grant)
        app.router.add_post(f"{device}/connect", self._connect)
        for path in BROWSER_ROUTES:
            app.router.add_route("OPTIONS", path, self._preflight)
        app.router.add_get("/api/v1/device/ws", self._gateway.handle)
        if self.edge is not None:
            self.edge.add_routes(app)
        if self.webapp is not None:
            self.webapp.add_routes(app)

        async def close_device_sockets(_: web.Application) -> None:
            await self._gateway.close_all()

        app.on_shutdown.append(close_device_sockets)
        return app

    # --- CORS (browser routes only) ------------------------------------------------------

    def _origin_allowed(self, origin: str, app_key: str | None) -> bool:
        """``origin`` is one of ``app_key``'s, or with no app known, of any app's."""
        apps = (
            self.accounts.apps
            if app_key is None
            else [a for a in self.accounts.apps if a.key == app_key]
        )
        return any(origin in a.cors_origins for a in apps)

    @web.middleware
    async def _cors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Answers to browser routes carry Access-Control-Allow-Origin for the configured
        origins of the token's app only (an error before any app is known: of any app, so
        the page can read the code; the body holds nothing else). Never ``*``, never
        credentials (the token is a header, not a cookie); always ``Vary: Origin``."""
        response = await handler(request)
        resource = request.match_info.route.resource
        if resource is None or resource.canonical not in BROWSER_ROUTES:
            return response
        response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if origin is None or request.method == "OPTIONS":
            return response  # the preflight handler set its own
        app_key = request.get(_TOKEN_APP_KEY)
        if app_key is None and response.status < 400:
            return response  # an app-signed answer is for the app's backend, not a page
        if self._origin_allowed(origin, app_key):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        return response

    async def _preflight(self, request: web.Request) -> web.Response:
        """CORS preflight: it carries no token, so the Origin must be configured for some
        app; the real request's answer is then readable only for the token's own app."""
        origin = request.headers.get("Origin")
        resource = request.match_info.route.resource
        assert resource is not None
        method = BROWSER_ROUTES[resource.canonical]
        asked = request.headers.get("Access-Control-Request-Headers", "")
        headers = {h.strip().lower() for h in asked.split(",") if h.strip()}
        if origin is None or not self._origin_allowed(origin, None):
            self._throttled_log.warning(
                "cors", "CORS preflight refused for an origin no app allows"
            )
            raise ApiError(403, "origin_not_allowed", "this origin may not call the cloud's API")
        if request.headers.get("Access-Control-Request-Method") != method or not (
            headers <= _CORS_HEADERS
        ):
            raise ApiError(
                403,
                "origin_not_allowed",
                f"this route allows {method} with the headers Authorization and Content-Type",
            )
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": method,
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": str(CORS_MAX_AGE),
            },
        )

    # --- what clients are handed ----------------------------------------------------------

    def _ice_servers(self, user: str, until: int | None = None) -> list[dict[str, Any]]:
        """STUN first, then each TURN server with REST credentials for ``user``, lasting
        no longer than ``until`` (a viewer token's expiry) when given."""
        stun = self.stun_info
        servers: list[dict[str, Any]] = [{"urls": [f"stun:{host_in_url(stun.host)}:{stun.port}"]}]
        now = int(self._clock())
        for turn in self.config.turn:
            ttl = turn.ttl if until is None else max(1, min(turn.ttl, until - now))
            username, password = turn_credentials(turn.shared_secret, user, ttl, now=now)
            servers.append({"urls": list(turn.urls), "username": username, "credential": password})
        self.metrics.turn_credentials.inc(len(self.config.turn))
        return servers

    def _room_stats(self) -> list[RoomStats]:
        return [room.stats() for room in self.edge.rooms.values()] if self.edge else []

    def _session_fields(self, session_id: str, until: int | None = None) -> dict[str, Any]:
        return {
            "ice_servers": self._ice_servers(session_id, until),
            "stun": self.stun_info.to_json(),
            "server_time": int(self._clock()),
        }

    def _device_welcome(self, session_id: str) -> dict[str, Any]:
        return {
            "grant_public_key": export_public_key(self.grant_public_key),
            **self._session_fields(session_id),
            # what the device reports back: each link's path, for the metrics
            "reports": ["link_up"],
        }

    # --- handlers -------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        if not self._metrics_access.allows(request.remote, authorization):
            raise ApiError(403, "forbidden", "metrics need the operator's metrics token")
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "xp2p", "version": __version__})

    async def _authenticate(
        self, request: web.Request, authorise: Callable[[AppConfig, bytes], None] | None = None
    ) -> tuple[AppConfig, bytes]:
        """Verify the request's signature, then ``authorise(app, body)`` (which raises
        ApiError to refuse): only a request that passes both takes room in the replay cache."""
        body = await self._read_body(request)
        authorization = request.headers.get("Authorization")
        if authorization is not None or (
            HEADER_APP not in request.headers and "Origin" in request.headers
        ):
            # A browser: no app signature, a viewer token instead (or nothing, token_missing).
            if request.match_info.route.resource is None or (
                request.match_info.route.resource.canonical not in BROWSER_ROUTES
            ):
                raise ApiError(401, "missing_auth", "this route needs an app-signed request")
            if HEADER_APP in request.headers:
                raise ApiError(400, "bad_request", "send a viewer token or a signature, not both")
            app = self._token_caller(request, authorization or "")
            if authorise is not None:
                authorise(app, body)
            return app, body

        def check(app_key: str) -> None:
            if authorise is not None:
                authorise(self._app(app_key), body)

        try:
            app_key = self._verifier.verify(
                request.method,
                request.raw_path,
                request.headers,
                body,
                self._clock(),
                source=request.remote,
                authorise=check,
            )
        except AuthError as exc:
            extra = {} if exc.retry_after is None else {"retry_after": round(exc.retry_after, 3)}
            if exc.status == 429:
                self._throttled_log.warning(
                    exc.code, "app request refused (%s) from %s", exc.code, request.remote
                )
            raise ApiError(exc.status, exc.code, exc.message, **extra) from None
        return self._app(app_key), body

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            # A body trickled in byte by byte would hold the connection inside its handler,
            # where no connection limit reaches: it gets as long as the headers did.
            async with asyncio.timeout(self.config.header_timeout):
                return await request.read()  # raises 413 past client_max_size
        except TimeoutError:
            raise ApiError(408, "request_timeout", "request body not received in time") from None

    def _token_caller(self, request: web.Request, authorization: str) -> AppConfig:
        """The app of a valid viewer token in ``Authorization: Bearer``; ApiError otherwise.
        The app's request rate applies, as to its signed requests."""
        scheme, _, text = authorization.partition(" ")
        text = text.strip()
        if scheme.lower() != "bearer" or not text:
            raise ApiError(401, "token_missing", "send 'Authorization: Bearer <viewer token>'")
        now = self._clock()
        try:
            token = self._tokens.verify(text, now)
        except TokenError as exc:
            if exc.app_key is not None:
                request[_TOKEN_APP_KEY] = exc.app_key
            raise ApiError(401, exc.code, exc.message) from None
        app = self.accounts.app(token.app_key)
        if app is None:  # the app was removed from the config since
            raise ApiError(401, "token_invalid", "viewer token of an unknown app")
        request[_TOKEN_APP_KEY] = app.key
        try:
            self._verifier.spend(app.key, now)
        except AuthError as exc:
            raise ApiError(
                exc.status, exc.code, exc.message, retry_after=round(exc.retry_after or 0, 3)
            ) from None
        request[_TOKEN_KEY] = token
        return app

    def _app(self, app_key: str) -> AppConfig:
        app = self.accounts.app(app_key)
        assert app is not None  # the verifier only knows configured apps
        return app

    async def _device_target(
        self, request: web.Request, authorise: Callable[[AppConfig, bytes], None] | None = None
    ) -> tuple[AppConfig, bytes, str, str]:
        """Authenticate, then check the app may use the device named in the path."""
        pid, dev = request.match_info["product_id"], request.match_info["device_name"]

        def check(app: AppConfig, body: bytes) -> None:
            token = request.get(_TOKEN_KEY)
            if token is not None and not token.covers(pid, dev):
                # Before the device lookup: a token does not learn which other devices exist.
                raise ApiError(403, "token_scope", "this viewer token does not cover that device")
            if not app.allows(pid):
                raise ApiError(403, "forbidden", "this app may not access that product")
            if not (NAME_RE.fullmatch(pid) and NAME_RE.fullmatch(dev)) or (
                self.accounts.device(pid, dev) is None
            ):
                raise ApiError(404, "unknown_device", "no such device")
            if authorise is not None:
                authorise(app, body)

        app, body = await self._authenticate(request, check)
        return app, body, pid, dev

    async def _create_session(self, request: web.Request) -> web.Response:
        app, body = await self._authenticate(request)
        json_object(body)
        session_id = secrets.token_hex(16)
        token = request.get(_TOKEN_KEY)
        # A token's session: TURN credentials that do not outlive the token.
        until = None if token is None else token.expires_at
        via = "" if token is None else f" (viewer token {token.token_id})"
        logger.info("app %s opened session %s%s", app.key, session_id, via)
        return web.json_response(
            {"session_id": session_id, **self._session_fields(session_id, until)}
        )

    async def _mint_viewer_token(self, request: web.Request) -> web.Response:
        """App-signed only: a viewer token for the app's browser (body: devices, products,
        permissions, ttl; docs/protocol.md §4a)."""
        minted: list[ViewerToken] = []

        def check(app: AppConfig, body: bytes) -> None:
            minted.append(self._token_claims(app, json_object(body)))

        if request.headers.get("Authorization") is not None:
            raise ApiError(401, "missing_auth", "viewer tokens are minted by app-signed requests")
        app, _ = await self._authenticate(request, check)
        return self._token_answer(minted[0], app)

    def _token_answer(self, token: ViewerToken, app: AppConfig, via: str = "") -> web.Response:
        text = self._tokens.sign(token)
        logger.info(
            "viewer token %s for app %s%s: %d devices, %d products, %s, until %d",
            token.token_id,
            app.key,
            via,
            len(token.devices),
            len(token.products),
            ",".join(sorted(token.permissions)),
            token.expires_at,
        )
        return web.json_response(
            {
                "token": text,
                "token_id": token.token_id,
                "expires_at": token.expires_at,
                "permissions": sorted(token.permissions),
            }
        )

    def _token_claims(self, app: AppConfig, doc: dict[str, Any]) -> ViewerToken:
        unknown = sorted(set(doc) - {"devices", "products", "permissions", "ttl"})
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}")
        devices_doc, products_doc = doc.get("devices", []), doc.get("products", [])
        if not isinstance(devices_doc, list) or not isinstance(products_doc, list):
            raise ApiError(400, "bad_request", "devices and products must be lists")
        if not (devices_doc or products_doc):
            raise ApiError(400, "bad_request", "a viewer token needs devices or products")
        if len(devices_doc) + len(products_doc) > MAX_SCOPE_ENTRIES:
            raise ApiError(400, "bad_request", f"at most {MAX_SCOPE_ENTRIES} devices and products")
        devices: set[tuple[str, str]] = set()
        for entry in devices_doc:
            pid = entry.get("product_id") if isinstance(entry, dict) else None
            dev = entry.get("device_name") if isinstance(entry, dict) else None
            if not (isinstance(pid, str) and isinstance(dev, str)):
                raise ApiError(
                    400, "bad_request", "each device is {product_id, device_name} strings"
                )
            if not app.allows(pid):
                raise ApiError(403, "forbidden", "this app may not access that product")
            if self.accounts.device(pid, dev) is None:
                raise ApiError(404, "unknown_device", "no such device")
            devices.add((pid, dev))
        products: set[str] = set()
        for pid in products_doc:
            if not (isinstance(pid, str) and NAME_RE.fullmatch(pid)):
                raise ApiError(400, "bad_request", "each product is a product id")
            if not app.allows(pid):
                raise ApiError(403, "forbidden", "this app may not access that product")
            products.add(pid)
        perms = doc.get("permissions")
        if perms is not None and not (
            isinstance(perms, list) and all(isinstance(p, str) for p in perms)
        ):
            raise ApiError(400, "bad_request", "permissions must be a list of strings")
        allowed = frozenset(app.permissions)
        try:
            wanted = allowed if perms is None else normalise_permissions(perms)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        if not wanted <= allowed:
            raise ApiError(
                403,
                "permission_not_allowed",
                "this app may not be granted: " + ", ".join(sorted(wanted - allowed)),
            )
        cfg = self.config
        ttl = doc.get("ttl", cfg.viewer_token_ttl)
        if type(ttl) is not int or not 1 <= ttl <= cfg.viewer_token_max_ttl:
            raise ApiError(
                400, "bad_request", f"ttl must be an integer in [1, {cfg.viewer_token_max_ttl}]"
            )
        now = int(self._clock())
        return ViewerToken(app.key, frozenset(devices), frozenset(products), wanted, now, now + ttl)

    async def _app_devices(self, request: web.Request) -> web.Response:
        """The configured devices the caller may see, with presence: a token's ``dev`` and
        every device of its ``prod``; an app-signed caller's, every device of its products."""
        app, _ = await self._authenticate(request)
        token = request.get(_TOKEN_KEY)
        names = sorted(
            (d.product_id, d.device_name)
            for d in self.accounts.devices
            if app.allows(d.product_id)
            and (token is None or token.covers(d.product_id, d.device_name))
        )
        devices = []
        for pid, dev in names[:MAX_LISTED_DEVICES]:
            presence = await self.registry.get(pid, dev)
            online = bool(presence and presence.online)
            devices.append({"product_id": pid, "device_name": dev, "online": online})
        return web.json_response({"devices": devices, "truncated": len(names) > MAX_LISTED_DEVICES})

    async def _demo_viewer_token(self, request: web.Request) -> web.Response:
        """The demo's sign-in (``xp2p.cloud.demo_login``): the right code gets a viewer token
        for every device of the demo app, as the app-signed mint would answer it."""
        login = self.demo_login
        assert login is not None  # the route exists only with a demo login
        origin = request.headers.get("Origin")
        # No Origin: not a page (a browser sends one with every POST), e.g. a script at this
        # machine; it still needs the code. Any other page's origin: refused outright.
        if origin is not None and origin.lower() not in self._own_origins():
            self._throttled_log.warning(
                "demo-origin", "demo sign-in refused for a page of another origin"
            )
            raise ApiError(
                403, "origin_not_allowed", "the demo sign-in is for the cloud's own page"
            )
        source = request.remote or "unknown"
        wait = self._demo_throttle.retry_after(DEMO_LOGIN_IDENTITY, source, self._clock())
        if wait > 0:  # before the code is looked at: a throttled guess teaches nothing
            raise ApiError(
                429,
                "too_many_failures",
                f"too many wrong sign-in codes; retry in {math.ceil(wait)} s",
                retry_after=round(wait, 3),
            )
        body = await self._read_body(request)
        try:
            code = parse_login_body(body)
        except LoginBodyError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        if not login.matches(code):
            self._demo_throttle.failed(DEMO_LOGIN_IDENTITY, source, self._clock())
            # Never the code, right or wrong: the source and that it was wrong.
            self._throttled_log.warning(
                "demo-code", "demo sign-in with a wrong code from %s", source
            )
            raise ApiError(
                401, "bad_login_code", "wrong sign-in code: open the address xp2p demo printed"
            )
        self._demo_throttle.succeeded(DEMO_LOGIN_IDENTITY, source)
        app = self._app(login.app_key)
        now = int(self._clock())
        token = ViewerToken(
            app.key,
            frozenset(),
            frozenset(self._demo_products),
            frozenset(app.permissions),
            now,
            now + login.token_ttl,
        )
        return self._token_answer(token, app, " (demo sign-in)")

    async def _p2p_info(self, request: web.Request) -> web.Response:
        _, _, pid, dev = await self._device_target(request)
        presence = await self.registry.get(pid, dev)
        return web.json_response(
            {
                "xp2p_info": presence.xp2p_info if presence else None,
                "online": bool(presence and presence.online),
                "report_time": presence.report_time if presence else None,
                # Two agents signing in with one identity keep replacing each other.
                "duplicate_identity": bool(presence and presence.duplicate_identity),
                "session_replacements": presence.session_replacements if presence else 0,
            }
        )

    async def _grant(self, request: web.Request) -> web.Response:
        asked: list[frozenset[str]] = []

        def check_permissions(app: AppConfig, body: bytes) -> None:
            perms = json_object(body).get("permissions")
            if perms is not None and not (
                isinstance(perms, list) and all(isinstance(p, str) for p in perms)
            ):
                raise ApiError(400, "bad_request", "permissions must be a list of strings")
            allowed = frozenset(app.permissions)
            token = request.get(_TOKEN_KEY)
            try:
                # No list: everything this app (and its viewer token) may have.
                if perms is None:
                    wanted = allowed if token is None else allowed & token.permissions
                else:
                    wanted = normalise_permissions(perms)
            except ValueError as exc:
                raise ApiError(400, "bad_request", str(exc)) from None
            if not wanted <= allowed:
                raise ApiError(
                    403,
                    "permission_not_allowed",
                    "this app may not be granted: " + ", ".join(sorted(wanted - allowed)),
                )
            if token is not None and not wanted <= token.permissions:
                raise ApiError(
                    403,
                    "token_scope",
                    "this viewer token does not allow: "
                    + ", ".join(sorted(wanted - token.permissions)),
                )
            if not wanted:
                raise ApiError(403, "permission_not_allowed", "no permission left to grant")
            asked.append(wanted)

        app, _, pid, dev = await self._device_target(request, check_permissions)
        permissions = asked[0]
        now = int(self._clock())
        expires = now + self.config.grant_ttl
        token = request.get(_TOKEN_KEY)
        if token is not None:  # a grant never outlives the viewer token it came from
            expires = min(expires, token.expires_at)
        grant = AccessGrant(app.key, pid, dev, permissions, now, expires)
        token = self._signer.sign(grant)
        logger.info(
            "grant %s for app %s on %s/%s: %s",
            grant.grant_id,
            app.key,
            pid,
            dev,
            ",".join(sorted(permissions)),
        )
        return web.json_response({"grant": token, "expires_at": grant.expires_at})

    async def _connect(self, request: web.Request) -> web.Response:
        app, body, pid, dev = await self._device_target(request)
        offer = json_object(body).get("offer")
        if not isinstance(offer, dict):
            raise ApiError(400, "bad_request", "offer must be a JSON object")
        if len(json.dumps(offer, separators=(",", ":"))) > MAX_OFFER_SIZE:
            raise ApiError(400, "bad_request", f"offer exceeds {MAX_OFFER_SIZE} bytes")
        wait = self._offers.take((app.key, pid, dev), time.monotonic())
        if wait > 0:
            self._throttled_log.warning(
                ("offers", app.key, pid, dev),
                "app %s: too many offers to %s/%s, refused one",
                app.key,
                pid,
                dev,
            )
            raise ApiError(
                429,
                "rate_limited",
                f"too many connection attempts to this device; retry in {wait:.1f} s",
                retry_after=round(wait, 3),
            )
        logger.info("offer from app %s to %s/%s", app.key, pid, dev)
        started = time.monotonic()
        try:
            answer = await self.hub.relay_offer(
                pid,
                dev,
                app.key,
                offer,
                answer_within=self.config.connect_timeout,
                ice_servers=self._ice_servers(f"{pid}/{dev}"),
            )
        except RelayError as exc:
            self.metrics.connects.labels(exc.code).inc()
            logger.info("offer from app %s to %s/%s failed: %s", app.key, pid, dev, exc.code)
            extra: dict[str, Any] = {}
            if isinstance(exc, DeviceRefused):
                extra = {"device_code": exc.device_code, "device_reason": exc.reason}
            raise ApiError(exc.status, exc.code, str(exc), **extra) from None
        self.metrics.relay_latency.observe(time.monotonic() - started)
        self.metrics.connects.labels("answered").inc()
        return web.json_response({"answer": answer})
