"""The admin API: provisioning apps and devices while the cloud runs (``--db`` only).

``/api/v1/admin/...``, authenticated by the operator's admin token (``Authorization: Bearer``,
``$XP2P_ADMIN_TOKEN``), never by app secrets: an app can never administer the registry.
Wrong tokens are throttled per source like device proofs. Every change goes to the database
and reaches every node's ``Accounts`` through its watcher (``xp2p.cloud.account_db``).

    GET    /api/v1/admin/apps                      -> {"apps": [...]} (never a secret)
    POST   /api/v1/admin/apps {key, products, permissions?, cors_origins?}
                                                   -> 201 {"key", "secret"} (shown once)
    POST   /api/v1/admin/apps/{key}/rotate         -> {"key", "secret"}
    POST   /api/v1/admin/apps/{key}/disable|enable -> {"key", "disabled"}
    DELETE /api/v1/admin/apps/{key}                -> {"key", "removed": true}
    GET    /api/v1/admin/devices                   -> {"devices": [...]}
    POST   /api/v1/admin/devices {product_id, device_name, public_key}
                                                   -> 201 {..., "grant_public_key"}
    POST   /api/v1/admin/devices/{p}/{d}/rotate {public_key}
    POST   /api/v1/admin/devices/{p}/{d}/disable|enable
    DELETE /api/v1/admin/devices/{p}/{d}

``public_key`` is the device's raw Ed25519 public key, base64url: the private key is made
where the camera is provisioned (``xp2p admin device add``) and never travels.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xp2p.auth import PERMISSIONS
from xp2p.cloud.account_db import AccountDatabase, RegistryError
from xp2p.cloud.config import NAME_RE, ORIGIN_RE
from xp2p.cloud.signin_throttle import SignInThrottle

PREFIX = "/api/v1/admin"
#: The admin token's minimum length: it opens the whole registry.
MIN_TOKEN_LENGTH = 24
_STATUS = {"unknown_app": 404, "unknown_device": 404, "duplicate": 409, "database": 503}

Raise = Callable[..., Exception]
T = TypeVar("T")
#: Products, permissions or origins one app may list.
MAX_LIST = 256


class AdminApi:
    """``error(status, code, message)`` makes the cloud's JSON error (``ApiError``)."""

    def __init__(
        self,
        db: AccountDatabase,
        token: str,
        grant_public_key: str,
        error: Raise,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
        self._db = db
        self._token = token.encode()
        self._grant_public_key = grant_public_key
        self._error = error
        self._clock = clock
        self._throttle = SignInThrottle()

    def __repr__(self) -> str:
        return "AdminApi(<token hidden>)"

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{PREFIX}/apps", self._guard(self._list_apps))
        r.add_post(f"{PREFIX}/apps", self._guard(self._add_app))
        r.add_post(f"{PREFIX}/apps/{{key}}/{{action}}", self._guard(self._app_action))
        r.add_delete(f"{PREFIX}/apps/{{key}}", self._guard(self._remove_app))
        r.add_get(f"{PREFIX}/devices", self._guard(self._list_devices))
        r.add_post(f"{PREFIX}/devices", self._guard(self._add_device))
        r.add_post(f"{PREFIX}/devices/{{pid}}/{{dev}}/{{action}}", self._guard(self._device_action))
        r.add_delete(f"{PREFIX}/devices/{{pid}}/{{dev}}", self._guard(self._remove_device))

    # ---- authentication ------------------------------------------------------------------

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            source = request.remote or "unknown"
            now = self._clock()
            wait = self._throttle.retry_after("admin", source, now)
            if wait > 0:
                raise self._error(
                    429, "too_many_failures", "too many wrong admin tokens", retry_after=wait
                )
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                raise self._error(401, "missing_auth", "the admin API needs the admin token")
            if not secrets.compare_digest(given.strip().encode(), self._token):
                self._throttle.failed("admin", source, now)
                raise self._error(403, "admin_token_invalid", "wrong admin token")
            try:
                return await handler(request)
            except RegistryError as exc:
                raise self._error(_STATUS.get(exc.code, 500), exc.code, exc.message) from None

        return guarded

    # ---- apps ----------------------------------------------------------------------------

    async def _list_apps(self, request: web.Request) -> web.Response:
        return web.json_response({"apps": [a.to_json() for a in await self._db.list_apps()]})

    async def _add_app(self, request: web.Request) -> web.Response:
        new = self._checked(parse_new_app, await self._body(request))
        secret = await self._db.add_app(new.key, new.products, new.permissions, new.cors_origins)
        return web.json_response({"key": new.key, "secret": secret}, status=201)

    async def _app_action(self, request: web.Request) -> web.Response:
        key, action = request.match_info["key"], request.match_info["action"]
        if action == "rotate":
            return web.json_response({"key": key, "secret": await self._db.rotate_app_secret(key)})
        if action in ("disable", "enable"):
            await self._db.set_app_disabled(key, action == "disable")
            return web.json_response({"key": key, "disabled": action == "disable"})
        raise self._error(404, "not_found", f"no app action {action[:32]!r}")

    async def _remove_app(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        await self._db.remove_app(key)
        return web.json_response({"key": key, "removed": True})

    # ---- devices -------------------------------------------------------------------------

    async def _list_devices(self, request: web.Request) -> web.Response:
        devices = await self._db.list_devices()
        return web.json_response({"devices": [d.to_json() for d in devices]})

    async def _add_device(self, request: web.Request) -> web.Response:
        new = self._checked(parse_new_device, await self._body(request))
        await self._db.add_device(new.product_id, new.device_name, new.public_key)
        return web.json_response(
            {
                "product_id": new.product_id,
                "device_name": new.device_name,
                "grant_public_key": self._grant_public_key,
            },
            status=201,
        )

    async def _device_action(self, request: web.Request) -> web.Response:
        pid, dev = request.match_info["pid"], request.match_info["dev"]
        action = request.match_info["action"]
        if action == "rotate":
            doc = await self._body(request)
            key = self._checked(parse_public_key, doc.get("public_key"))
            await self._db.rotate_device_key(pid, dev, key)
            return web.json_response(
                {"product_id": pid, "device_name": dev, "grant_public_key": self._grant_public_key}
            )
        if action in ("disable", "enable"):
            await self._db.set_device_disabled(pid, dev, action == "disable")
            return web.json_response(
                {"product_id": pid, "device_name": dev, "disabled": action == "disable"}
            )
        raise self._error(404, "not_found", f"no device action {action[:32]!r}")

    async def _remove_device(self, request: web.Request) -> web.Response:
        pid, dev = request.match_info["pid"], request.match_info["dev"]
        await self._db.remove_device(pid, dev)
        return web.json_response({"product_id": pid, "device_name": dev, "removed": True})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            return parse_body(await request.read())
        except AdminInputError as exc:
            raise self._error(400, "bad_request", str(exc)) from None

    def _checked(self, parse: Callable[[Any], T], value: Any) -> T:
        try:
            return parse(value)
        except AdminInputError as exc:
            raise self._error(400, "bad_request", str(exc)) from None


# ---- input (pure: fuzz/fuzz_admin.py feeds these) ------------------------------------------


class AdminInputError(ValueError):
    """An admin request that cannot be what it means: a 400 ``bad_request`` with this text."""


@dataclass(frozen=True)
class NewApp:
    key: str
    products: list[str]
    permissions: list[str]
    cors_origins: list[str]


@dataclass(frozen=True)
class NewDevice:
    product_id: str
    device_name: str
    public_key: bytes


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise AdminInputError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise AdminInputError("body must be a JSON object")
    return doc


def parse_new_app(doc: dict[str, Any]) -> NewApp:
    key = _name(doc.get("key"), "key")
    products = _strings(doc.get("products", ["*"]), "products")
    if not products:
        raise AdminInputError("products must not be empty")
    products = [p if p == "*" else _name(p, "products") for p in products]
    permissions = _strings(doc.get("permissions", sorted(PERMISSIONS)), "permissions")
    if not permissions or not set(permissions) <= PERMISSIONS:
        raise AdminInputError(f"permissions must be some of {', '.join(sorted(PERMISSIONS))}")
    origins = _strings(doc.get("cors_origins", []), "cors_origins")
    for origin in origins:
        if not ORIGIN_RE.fullmatch(origin):
            raise AdminInputError(f"{origin[:80]!r} is not an exact origin")
    return NewApp(key, products, sorted(set(permissions)), origins)


def parse_new_device(doc: dict[str, Any]) -> NewDevice:
    return NewDevice(
        _name(doc.get("product_id"), "product_id"),
        _name(doc.get("device_name"), "device_name"),
        parse_public_key(doc.get("public_key")),
    )


def parse_public_key(value: object) -> bytes:
    """A raw Ed25519 public key, base64url: 32 bytes that are a point on the curve."""
    raw = b""
    if isinstance(value, str) and len(value) <= 64:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error):
            raw = b""
    if len(raw) != 32:
        raise AdminInputError("public_key must be a raw Ed25519 public key, base64url")
    return raw


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise AdminInputError(f"{what} must be 1-64 letters, digits or _ . : @ -")
    return value


def _strings(value: object, what: str) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_LIST
        or not all(isinstance(v, str) for v in value)
    ):
        raise AdminInputError(f"{what} must be a list of at most {MAX_LIST} strings")
    return list(value)
