"""The device end of the cloud: ``GET /api/v1/device/ws``.

Protocol (JSON text frames, each with a ``type``)::

    server → {"type": "challenge", "nonce": hex32}
    device → {"type": "auth", "product_id", "device_name", "proof", "nonce": hex32}
    server → {"type": "welcome", "session_id", "grant_public_key", "ice_servers", "stun",
              "server_time", "reports", "mac"}     or {"type": "error", "code": "auth_failed"}
                                                   or {"type": "error", "code": "auth_throttled",
                                                       "retry_after": seconds}
    device → {"type": "xp2p_info", "xp2p_info"}    server → {"type": "xp2p_info_ok"}
    server → {"type": "offer", "request_id", "app_key", "offer", "ice_servers"}
    device → {"type": "answer", "request_id", "answer"}
           | {"type": "reject", "request_id", "code", "reason"}
    device → {"type": "link_up", "request_id", "mode": "direct"|"relay"|"webrtc"}
             (once that offer's link is up, if the welcome's "reports" lists "link_up")

Malformed frames get ``{"type": "error", "code": "bad_message"}``; the tenth closes the socket.

The welcome's ``mac`` (``xp2p.trust.welcome_mac``) is HMAC-SHA256 under the device secret over
the challenge, the device's nonce and the welcome itself: the device accepts only a welcome
made by a holder of its secret for this very sign-in. Failed proofs are throttled per source
address and per identity (``xp2p.cloud.signin_throttle``): past a few, sign-ins are refused
with ``auth_throttled`` (close 4004) before any proof is checked.
:func:`parse_device_frame` is the pure part; :class:`DeviceGateway` runs one socket per device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.auth import verify_device_key_proof, verify_device_proof
from xp2p.cloud.accounts import Accounts
from xp2p.cloud.config import CloudConfig
from xp2p.cloud.hub import SignallingHub
from xp2p.cloud.metrics import CloudMetrics
from xp2p.cloud.registry import DeviceRegistry
from xp2p.cloud.signin_throttle import SignInThrottle
from xp2p.trust import WELCOME_MAC_FIELD, WELCOME_SIG_FIELD, welcome_mac, welcome_signature

logger = logging.getLogger("xp2p.cloud")

MAX_MESSAGE_SIZE = 64 * 1024
MAX_XP2P_INFO_LENGTH = 2048
MAX_BAD_FRAMES = 10
HEARTBEAT = 10.0
#: A device has this long after the challenge to sign in.
AUTH_TIMEOUT = 10.0
_CLOSE_AUTH_FAILED = 4001
_CLOSE_REPLACED = 4002
#: An admin rotated, disabled or removed the device's credentials (docs/protocol.md §6).
_CLOSE_CREDENTIALS = 4005
_CLOSE_BAD_FRAMES = 4003
_CLOSE_THROTTLED = 4004
_NONCE_RE = re.compile(r"[0-9a-fA-F]{32}")


class BadMessage(Exception):
    """A frame the protocol does not allow; the message is sent back to the device."""


def _str_field(doc: dict[str, Any], name: str, max_len: int) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise BadMessage(f"{name} must be a non-empty string of at most {max_len} characters")
    try:
        value.encode()  # the sign-in proof is computed over the UTF-8 bytes
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\ud800" escape
        raise BadMessage(f"{name} is not valid Unicode text") from None
    return value


#: The paths a device reports its links took (``link_up``): QUIC links' ``Link.link_mode``,
#: and ``webrtc`` for a browser's (aiortc does not say which pair it chose).
LINK_MODES = frozenset({"direct", "relay", "webrtc"})


def parse_device_frame(text: str) -> dict[str, Any]:
    """Parse and check one frame from a device; raises :class:`BadMessage`."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise BadMessage("frame is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise BadMessage("frame must be a JSON object with a type")
    kind = doc["type"]
    if kind == "auth":
        for name in ("product_id", "device_name", "proof"):
            _str_field(doc, name, 128)
        nonce = doc.get("nonce")
        if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
            raise BadMessage("nonce must be 32 hex digits (the device's, for the welcome MAC)")
    elif kind == "xp2p_info":
        info = _str_field(doc, "xp2p_info", MAX_XP2P_INFO_LENGTH)
        if not info.startswith("XP2P"):
            raise BadMessage("xp2p_info must start with XP2P")
    elif kind == "answer":
        _str_field(doc, "request_id", 64)
        if not isinstance(doc.get("answer"), dict):
            raise BadMessage("answer must be a JSON object")
    elif kind == "reject":
        _str_field(doc, "request_id", 64)
        code = doc.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            raise BadMessage("code must be an integer")
        if not isinstance(doc.get("reason", ""), str):
            raise BadMessage("reason must be a string")
    elif kind == "link_up":
        _str_field(doc, "request_id", 64)
        if doc.get("mode") not in LINK_MODES:
            raise BadMessage(f"mode must be one of {', '.join(sorted(LINK_MODES))}")
    else:
        raise BadMessage(f"unknown frame type {kind[:32]!r}")
    return doc


async def _send_error(ws: web.WebSocketResponse, code: str, message: str) -> None:
    await ws.send_str(json.dumps({"type": "error", "code": code, "message": message}))


class _FrameReader:
    """Reads one socket's frames; counts malformed ones across the whole connection."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._bad = 0

    async def run(self, on_frame: Callable[[dict[str, Any]], Awaitable[bool]]) -> bool:
        """Feed well-formed frames to ``on_frame`` until it returns True (then True) or the
        socket ends (then False). Malformed frames, and frames ``on_frame`` refuses with
        :class:`BadMessage`, get a ``bad_message`` error; the tenth closes the socket."""
        async for msg in self._ws:
            try:
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type != WSMsgType.TEXT:
                    raise BadMessage("frames must be JSON text")
                if await on_frame(parse_device_frame(msg.data)):
                    return True
            except BadMessage as exc:
                self._bad += 1
                await _send_error(self._ws, "bad_message", str(exc))
                if self._bad >= MAX_BAD_FRAMES:
                    logger.warning("closing a device socket after %d bad messages", self._bad)
                    await self._ws.close(code=_CLOSE_BAD_FRAMES, message=b"too many bad messages")
                    break
        return False


class _SocketLink:
    """A signed-in device socket, as the hub sees it."""

    def __init__(
        self, ws: web.WebSocketResponse, product_id: str, device_name: str, *, session_id: str
    ) -> None:
        self._ws = ws
        self.product_id = product_id
        self.device_name = device_name
        self.session_id = session_id

    async def send(self, message: dict[str, Any]) -> None:
        # Safe from several tasks at once (HTTP handlers send offers): aiohttp's writer
        # serialises frames.
        await self._ws.send_str(json.dumps(message))

    async def close(self, reason: str, code: int = _CLOSE_REPLACED) -> None:
        await self._ws.close(code=code, message=reason.encode())


@dataclass(frozen=True)
class _SignIn:
    """A device whose proof checked out, and what its welcome's MAC binds."""

    product_id: str
    device_name: str
    challenge: bytes
    device_nonce: bytes
    #: the shared secret the welcome's MAC is made with; None: a key-pair device, whose
    #: welcome the cloud signs with its grant key instead
    secret: str | None = field(repr=False)


class DeviceGateway:
    def __init__(
        self,
        config: CloudConfig,
        accounts: Accounts,
        registry: DeviceRegistry,
        hub: SignallingHub,
        welcome: Callable[[str], dict[str, Any]],
        *,
        grant_key: Ed25519PrivateKey | None = None,
        clock: Callable[[], float] = time.time,
        throttle: SignInThrottle | None = None,
        metrics: CloudMetrics | None = None,
    ) -> None:
        """``welcome(session_id)`` gives the per-session welcome fields (ICE servers...);
        ``grant_key`` signs the welcome of a device that signs in with a key pair."""
        self._config = config
        self._accounts = accounts
        self._grant_key = grant_key
        accounts.on_device_change(self._credentials_changed)
        self._registry = registry
        self._hub = hub
        self._welcome = welcome
        self._clock = clock
        self.throttle = throttle or SignInThrottle()
        self._metrics = metrics
        self._sockets: set[web.WebSocketResponse] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"cloud shutting down")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_MESSAGE_SIZE)
        await ws.prepare(request)
        self._sockets.add(ws)
        frames = _FrameReader(ws)
        link: _SocketLink | None = None
        try:
            sign_in = await self._authenticate(ws, frames, request.remote)
            if sign_in is not None:
                # Assigned before registering so that ``finally`` undoes a half-done sign-in.
                link = _SocketLink(
                    ws, sign_in.product_id, sign_in.device_name, session_id=secrets.token_hex(16)
                )
                await self._register(link, sign_in, request.remote)
                await frames.run(lambda doc: self._on_frame(link, doc))
        except ConnectionError:
            pass
        finally:
            self._sockets.discard(ws)
            if link is not None:
                await self._sign_out(link)
            if not ws.closed:
                await ws.close()
        return ws

    async def _authenticate(
        self, ws: web.WebSocketResponse, frames: _FrameReader, remote: str | None
    ) -> _SignIn | None:
        """Run the challenge; returns the signed-in device once the proof checks out."""
        nonce = secrets.token_hex(16)
        await ws.send_str(json.dumps({"type": "challenge", "nonce": nonce}))
        auth: dict[str, Any] = {}

        async def expect_auth(doc: dict[str, Any]) -> bool:
            if doc["type"] != "auth":
                raise BadMessage("sign in first")
            auth.update(doc)
            return True

        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                if not await frames.run(expect_auth):
                    return None
        except TimeoutError:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"sign-in timeout")
            return None
        product_id, device_name = auth["product_id"], auth["device_name"]
        identity = SignInThrottle.identity_key(product_id, device_name)
        source = remote or "unknown"
        wait = self.throttle.retry_after(identity, source, self._clock())
        if wait > 0:
            # Refused before the proof is looked at: a throttled guess teaches nothing.
            retry = math.ceil(wait)
            logger.warning(
                "device sign-in throttled for %r/%r from %s (retry in %d s)",
                product_id,
                device_name,
                source,
                retry,
            )
            await ws.send_str(
                json.dumps(
                    {
                        "type": "error",
                        "code": "auth_throttled",
                        "message": f"too many failed sign-ins; retry in {retry} s",
                        "retry_after": retry,
                    }
                )
            )
            await ws.close(code=_CLOSE_THROTTLED, message=b"sign-in throttled")
            self._count_sign_in("auth_throttled")
            return None
        device = self._accounts.device(product_id, device_name)
        challenge = bytes.fromhex(nonce)
        if device is not None and device.public_key is not None:
            secret = None
            valid = self._grant_key is not None and verify_device_key_proof(
                device.public_key, challenge, product_id, device_name, auth["proof"]
            )
        else:
            # A dummy secret for unknown devices, so that timing does not tell them apart.
            secret = device.secret if device is not None and device.secret else None
            checked = secret or secrets.token_hex(16)
            valid = verify_device_proof(checked, challenge, product_id, device_name, auth["proof"])
        if device is None or not valid:
            self.throttle.failed(identity, source, self._clock())
            logger.warning(
                "device sign-in refused for %r/%r from %s", product_id, device_name, remote
            )
            await _send_error(ws, "auth_failed", "device authentication failed")
            await ws.close(code=_CLOSE_AUTH_FAILED, message=b"auth failed")
            self._count_sign_in("auth_failed")
            return None
        self.throttle.succeeded(identity, source)
        self._count_sign_in("ok")
        return _SignIn(product_id, device_name, challenge, bytes.fromhex(auth["nonce"]), secret)

    def _count_sign_in(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.sign_ins.labels(outcome).inc()

    async def _register(self, link: _SocketLink, sign_in: _SignIn, remote: str | None) -> None:
        pid, dev, session_id = link.product_id, link.device_name, link.session_id
        presence = await self._registry.sign_in(pid, dev, session_id, int(self._clock()))
        old = self._hub.attach(link)
        logger.info("device %s/%s signed in from %s (session %s)", pid, dev, remote, session_id)
        welcome: dict[str, Any] = {
            "type": "welcome",
            "session_id": session_id,
            **self._welcome(session_id),
        }
        if sign_in.secret is not None:
            welcome[WELCOME_MAC_FIELD] = welcome_mac(
                sign_in.secret, sign_in.challenge, sign_in.device_nonce, pid, dev, welcome
            )
        else:
            assert self._grant_key is not None  # a key-pair proof needs it to pass
            welcome[WELCOME_SIG_FIELD] = welcome_signature(
                self._grant_key, sign_in.challenge, sign_in.device_nonce, pid, dev, welcome
            )
        await link.send(welcome)
        if old is not None:
            if presence.duplicate_identity:
                logger.warning(
                    "device %s/%s: duplicate identity suspected: %d sign-ins replaced a live "
                    "session within a minute (latest from %s); two agents share its credentials?",
                    pid,
                    dev,
                    len(presence.recent_replacements),
                    remote,
                )
            else:
                logger.info("device %s/%s: earlier session replaced", pid, dev)
            await old.close("replaced by a new sign-in")

    async def _on_frame(self, link: _SocketLink, doc: dict[str, Any]) -> bool:
        """Handle one frame of a signed-in device; False: keep reading."""
        kind = doc["type"]
        if kind == "auth":
            raise BadMessage("already signed in")
        if kind == "xp2p_info":
            stored = await self._registry.report_xp2p_info(
                link.product_id,
                link.device_name,
                link.session_id,
                doc["xp2p_info"],
                int(self._clock()),
            )
            if stored:
                logger.info("device %s/%s reported xp2pInfo", link.product_id, link.device_name)
                await link.send({"type": "xp2p_info_ok"})
        elif kind == "answer":
            if not self._hub.answer(link, doc["request_id"], doc["answer"]):
                logger.debug("late or unknown answer from %s/%s", link.product_id, link.device_name)
        elif kind == "link_up":
            if self._hub.link_up(link, doc["request_id"]) and self._metrics is not None:
                self._metrics.links.labels(doc["mode"]).inc()
        elif kind == "reject":
            code, reason = doc["code"], doc.get("reason", "")[:200]
            if self._hub.refuse(link, doc["request_id"], code, reason):
                logger.info(
                    "device %s/%s refused a connection: %r (%d)",
                    link.product_id,
                    link.device_name,
                    reason,
                    code,
                )
        return False

    def _credentials_changed(self, idents: frozenset[tuple[str, str]]) -> None:
        """An admin rotated, disabled or removed these devices: a session signed in with the
        old credentials ends now (its device signs in again, with the new ones if it has
        them)."""
        for ident in idents:
            link = self._hub.link(*ident)
            if isinstance(link, _SocketLink):
                logger.info("device %s/%s: its credentials changed; closing its session", *ident)
                task = asyncio.get_running_loop().create_task(
                    link.close("credentials changed", _CLOSE_CREDENTIALS)
                )
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _sign_out(self, link: _SocketLink) -> None:
        self._hub.detach(link)
        if await self._registry.sign_out(
            link.product_id, link.device_name, link.session_id, int(self._clock())
        ):
            logger.info("device %s/%s went offline", link.product_id, link.device_name)
