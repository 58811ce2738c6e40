"""The app's end of the cloud API: signed HTTP requests over one aiohttp session.

Every request carries the headers of :func:`xp2p.auth.sign_request`; the secret itself never
leaves this object and is kept out of its repr. Every failure is a :class:`CloudError`, with
``status`` 0 when the cloud could not be reached or did not answer in time.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from yarl import URL

from xp2p.auth import sign_request
from xp2p.link.config import IceServer, StunInfo, parse_ice_servers
from xp2p.trust import CloudTrust, tls_failure, tls_failure_message

#: Answers bigger than this are not from our cloud.
MAX_RESPONSE_SIZE = 1024 * 1024


class CloudError(Exception):
    """A cloud request failed. ``code`` is the cloud's snake_case error code, or
    ``unreachable``/``timeout``/``bad_response``/``tls_untrusted`` for failures on the way."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class AppSession:
    session_id: str
    ice_servers: tuple[IceServer, ...]
    stun: StunInfo
    server_time: int


@dataclass(frozen=True)
class P2PInfo:
    """DescribeP2PInfo: the device's last xp2pInfo (None before its first report)."""

    xp2p_info: str | None
    online: bool
    report_time: int | None
    #: The cloud saw two agents sign in with this identity, replacing each other.
    duplicate_identity: bool = False
    session_replacements: int = 0


class SignedClient:
    """What the clients of the cloud and of an edge share: one aiohttp session, app-signed
    requests (the secret stays in here and out of the repr), answers read up to a limit,
    and every failure on the way as a `CloudError`."""

    #: Names the server in error messages.
    server = "the cloud"

    def __init__(
        self,
        base_url: str,
        app_key: str,
        app_secret: str,
        *,
        timeout: float = 10.0,
        trust: CloudTrust | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the URL of {self.server} must be http(s)")
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self._app_secret = app_secret
        self.timeout = timeout
        self.trust = trust or CloudTrust()
        # Built now, so that an unreadable pinned CA file is a ValueError here, not later.
        self._ssl = self.trust.client_ssl()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, app_key={self.app_key!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # ssl= verifies https:// URLs (system store, pinned CA or fingerprint).
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _auth_headers(self, method: str, path: str, data: bytes) -> dict[str, str]:
        return sign_request(self.app_key, self._app_secret, method, path, data)

    async def _fetch(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        limit: int,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """Send a signed request; the status and the body, whatever the status."""
        data = body or b""
        headers = self._auth_headers(method, path, data)
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = self.timeout if timeout is None else timeout
        # encoded=True: the server checks the signature over the request target exactly as
        # sent, so yarl must not re-quote what the caller already quoted.
        url = URL(self.base_url + path, encoded=True)
        try:
            async with (
                asyncio.timeout(timeout),
                self.session.request(method, url, data=data, headers=headers) as resp,
            ):
                raw = bytearray()
                async for piece in resp.content.iter_any():
                    raw += piece
                    if len(raw) > limit:
                        raise CloudError(
                            resp.status, "bad_response", f"{self.server}'s answer is too large"
                        )
                return resp.status, bytes(raw)
        except TimeoutError:
            raise CloudError(
                0, "timeout", f"no answer from {self.server} within {timeout:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            if tls_failure(exc):
                # Names the host, never a traceback: a relay or a misconfigured pin.
                raise CloudError(0, "tls_untrusted", tls_failure_message(url.host)) from None
            raise CloudError(0, "unreachable", f"cannot reach {self.server}: {exc}") from None
        except OSError as exc:
            raise CloudError(0, "unreachable", f"cannot reach {self.server}: {exc}") from None


class CloudClient(SignedClient):
    """One app's signed-in client of the cloud; safe to share between tasks."""

    # --- API --------------------------------------------------------------------------------

    async def create_session(self) -> AppSession:
        doc = await self._request("POST", "/api/v1/app/session", {})
        try:
            return AppSession(
                session_id=_typed(doc, "session_id", str),
                ice_servers=parse_ice_servers(doc.get("ice_servers")),
                stun=StunInfo.from_json(doc.get("stun")),
                server_time=_typed(doc, "server_time", int),
            )
        except ValueError as exc:
            raise CloudError(200, "bad_response", f"malformed session: {exc}") from None

    async def get_p2p_info(self, product_id: str, device_name: str) -> P2PInfo:
        doc = await self._request("GET", _device_path(product_id, device_name, "p2p-info"))
        info, online, report = doc.get("xp2p_info"), doc.get("online"), doc.get("report_time")
        if (
            not (info is None or isinstance(info, str))
            or not isinstance(online, bool)
            or not (report is None or type(report) is int)
        ):
            raise CloudError(200, "bad_response", "malformed p2p-info")
        duplicate, replacements = doc.get("duplicate_identity"), doc.get("session_replacements")
        return P2PInfo(
            info,
            online,
            report,
            duplicate_identity=duplicate is True,
            session_replacements=replacements if type(replacements) is int else 0,
        )

    async def get_grant(
        self, product_id: str, device_name: str, permissions: list[str] | None = None
    ) -> tuple[str, int]:
        """A signed access grant for the device: (token, expires_at in unix seconds)."""
        body = {} if permissions is None else {"permissions": list(permissions)}
        doc = await self._request("POST", _device_path(product_id, device_name, "grant"), body)
        try:
            return _typed(doc, "grant", str), _typed(doc, "expires_at", int)
        except ValueError as exc:
            raise CloudError(200, "bad_response", str(exc)) from None

    async def connect(
        self, product_id: str, device_name: str, offer: dict[str, Any]
    ) -> dict[str, Any]:
        """Relay ``offer`` to the device through the cloud; returns the device's answer."""
        path = _device_path(product_id, device_name, "connect")
        doc = await self._request("POST", path, {"offer": offer})
        answer = doc.get("answer")
        if not isinstance(answer, dict):
            raise CloudError(200, "bad_response", "answer is not a JSON object")
        return answer

    async def mint_viewer_token(
        self,
        *,
        devices: list[tuple[str, str]] | None = None,
        products: list[str] | None = None,
        permissions: list[str] | None = None,
        ttl: int | None = None,
    ) -> ViewerTokenGrant:
        """The app backend's call: a viewer token for a browser (docs/protocol.md §4a)."""
        body: dict[str, Any] = {}
        if devices:
            body["devices"] = [{"product_id": p, "device_name": d} for p, d in devices]
        if products:
            body["products"] = list(products)
        if permissions is not None:
            body["permissions"] = list(permissions)
        if ttl is not None:
            body["ttl"] = ttl
        doc = await self._request("POST", "/api/v1/app/viewer-token", body)
        try:
            perms = doc.get("permissions")
            if not (isinstance(perms, list) and all(isinstance(p, str) for p in perms)):
                raise ValueError("permissions missing or not a list of strings")
            return ViewerTokenGrant(
                _typed(doc, "token", str),
                _typed(doc, "token_id", str),
                _typed(doc, "expires_at", int),
                tuple(perms),
            )
        except ValueError as exc:
            raise CloudError(200, "bad_response", f"malformed viewer token: {exc}") from None

    # --- transport ----------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        status, raw = await self._fetch(method, path, data, limit=MAX_RESPONSE_SIZE)
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            raise CloudError(status, "bad_response", "the cloud's answer is not a JSON object")
        if status >= 400:
            error = doc.get("error")
            if not isinstance(error, dict):
                raise CloudError(status, "bad_response", "error without details")
            details = {k: v for k, v in error.items() if k not in ("code", "message")}
            code, message = error.get("code"), error.get("message")
            raise CloudError(
                status,
                code if isinstance(code, str) else "unknown",
                message if isinstance(message, str) else "",
                **details,
            )
        return doc


@dataclass(frozen=True)
class ViewerTokenGrant:
    """A minted viewer token; ``token`` is a bearer secret (kept out of the repr)."""

    token: str = field(repr=False)
    token_id: str
    expires_at: int
    permissions: tuple[str, ...]


class ViewerTokenClient(CloudClient):
    """What a browser does, in Python: the cloud's browser routes (session, p2p-info, grant,
    connect) with ``Authorization: Bearer <viewer token>`` and no app secret at all.
    ``origin`` is sent as the Origin header, as a browser would."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        origin: str | None = None,
        timeout: float = 10.0,
        trust: CloudTrust | None = None,
    ) -> None:
        super().__init__(base_url, "", "", timeout=timeout, trust=trust)
        self._token = token
        self.origin = origin

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def set_token(self, token: str) -> None:
        """A fresh token from the app backend, before the current one expires."""
        self._token = token

    def _auth_headers(self, method: str, path: str, data: bytes) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}"}
        if self.origin is not None:
            headers["Origin"] = self.origin
        return headers

    async def mint_viewer_token(self, **_: Any) -> ViewerTokenGrant:
        raise CloudError(0, "unsupported", "viewer tokens are minted by the app's backend")


def _device_path(product_id: str, device_name: str, action: str) -> str:
    return f"/api/v1/devices/{quote(product_id, safe='')}/{quote(device_name, safe='')}/{action}"


def _typed(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} missing or not {kind.__name__}")
    return value
