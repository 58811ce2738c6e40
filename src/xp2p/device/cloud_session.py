"""The device's signed-in session with the cloud (the device end of ``/api/v1/device/ws``).

It signs in with a proof of the device secret (never the secret), publishes a fresh xp2pInfo
on every (re)connect, serves connection offers concurrently and reconnects by itself with
exponential backoff and jitter. The wire protocol is described in ``xp2p.cloud.device_ws``.

The device authenticates the cloud too (docs/protocol.md §6): the URL's TLS certificate is
verified (``trust``: the system store, a pinned CA or a fingerprint), the welcome must carry a
MAC under the device secret bound to this sign-in's challenge and the device's own nonce, and
the grant-signing key is the one pinned at provisioning (``grant_public_key``), never one the
welcome offers. A welcome that fails any of these is refused, logged, and retried with backoff.
A session the cloud replaced by another sign-in of the same identity (close 4002) backs off
instead of signing straight back in, so two agents with one identity do not flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from yarl import URL

from xp2p.auth import device_key_proof, device_proof, import_public_key
from xp2p.link.config import IceServer, StunInfo, parse_ice_servers
from xp2p.tasks import TaskSet
from xp2p.trust import (
    DEVICE_NONCE_BYTES,
    CloudTrust,
    tls_failure,
    tls_failure_message,
    verify_welcome_mac,
    verify_welcome_signature,
)

logger = logging.getLogger("xp2p.device")

MAX_MESSAGE_SIZE = 64 * 1024
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: Bound on opening the socket and on the challenge/auth/welcome exchange.
SIGN_IN_TIMEOUT = 10.0
#: The cloud's close code for a session replaced by a newer sign-in of the same identity.
CLOSE_REPLACED = 4002
#: The least wait after being replaced: another agent with this identity is likely running.
REPLACED_MIN_DELAY = 2.0
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@dataclass(frozen=True)
class SignInInfo:
    """What the cloud's welcome tells a device."""

    session_id: str
    grant_public_key: Ed25519PublicKey
    ice_servers: tuple[IceServer, ...]
    stun: StunInfo
    server_time: int
    #: What the cloud asks devices to report ("link_up": each link's path, for its
    #: metrics); a cloud that does not ask is sent nothing it would not understand.
    reports: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OfferRequest:
    """A viewer's connection offer, relayed by the cloud."""

    request_id: str
    app_key: str
    offer: dict[str, Any]
    #: Fresh STUN/TURN entries for this link (TURN credentials expire; sign-in's may have).
    ice_servers: tuple[IceServer, ...] = ()


class OfferRejected(Exception):
    """Raise from ``on_offer`` to refuse a viewer; ``code`` and ``reason`` reach the app."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} ({code})")
        self.code = code
        self.reason = reason


class CloudSignInError(Exception):
    """The cloud refused this device's credentials (wrong secret or unknown device)."""


class SessionProtocolError(Exception):
    """The cloud sent something this device does not understand: reconnect."""


class WelcomeRefused(SessionProtocolError):
    """The welcome did not prove it came from our cloud (bad MAC, another grant key)."""


class SignInThrottled(Exception):
    """The cloud refuses sign-ins for now after failed proofs; retry after ``retry_after``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the cloud throttles sign-ins; retrying in {retry_after:g} s")
        self.retry_after = retry_after


class SessionReplaced(Exception):
    """The cloud closed this session for a newer sign-in of the same identity (4002)."""


OfferHandler = Callable[[OfferRequest], Awaitable[dict[str, Any]]]
Xp2pInfoFactory = Callable[[SignInInfo], str]


class DeviceCloudSession:
    def __init__(
        self,
        base_url: str,
        product_id: str,
        device_name: str,
        device_secret: str,
        *,
        device_key: Ed25519PrivateKey | None = None,
        grant_public_key: Ed25519PublicKey,
        on_offer: OfferHandler,
        xp2p_info_factory: Xp2pInfoFactory,
        trust: CloudTrust | None = None,
        heartbeat: float = 10.0,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        self._ws_url = base_url.rstrip("/").replace("http", "ws", 1) + "/api/v1/device/ws"
        self._host = URL(base_url).host
        self._grant_key = grant_public_key
        self._trust = trust or CloudTrust()
        #: sign-ins that the cloud replaced (4002) since this session started
        self.replaced_count = 0
        self.product_id = product_id
        self.device_name = device_name
        self._secret = device_secret
        #: a provisioned device signs in with this key instead of the secret
        self._key = device_key
        if not device_secret and device_key is None:
            raise ValueError("a device needs its secret or its key")
        self._on_offer = on_offer
        self._xp2p_info_factory = xp2p_info_factory
        self._heartbeat = heartbeat
        self._backoff = (backoff_initial, backoff_max)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._offers = TaskSet(f"cloud-session-{product_id}/{device_name}")
        self._signed_in = asyncio.Event()
        self._auth_failed = asyncio.Event()
        self._closing = asyncio.Event()
        #: The latest welcome; None before the first sign-in.
        self.info: SignInInfo | None = None

    def __repr__(self) -> str:
        state = "signed in" if self.signed_in else "signed out"
        return f"<DeviceCloudSession {self.label} {state}>"

    @property
    def label(self) -> str:
        return f"{self.product_id}/{self.device_name}"

    @property
    def signed_in(self) -> bool:
        return self._signed_in.is_set()

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("session already started")
        # ssl= applies to wss:// only; the context is built (and a bad CA file refused) now.
        self._http = aiohttp.ClientSession(connector=self._trust.connector())
        self._runner = asyncio.create_task(self._run(), name=f"cloud-session {self.product_id}")

    async def wait_signed_in(self, timeout: float | None = None) -> SignInInfo:
        """Wait until signed in with xp2pInfo published.

        Raises :class:`CloudSignInError` as soon as the cloud refuses the credentials (the
        session keeps retrying in the background) and TimeoutError after ``timeout``.
        """
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._signed_in, self._auth_failed)]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._signed_in.is_set() and self.info is not None:
            return self.info
        if self._auth_failed.is_set():
            raise CloudSignInError(f"the cloud refused the credentials of {self.label}")
        raise TimeoutError(f"not signed in to the cloud within {timeout} s")

    async def publish_xp2p_info(self) -> None:
        """Publish a fresh xp2pInfo now (after the device's link identity changed).

        A no-op while signed out: every sign-in publishes a fresh one anyway.
        """
        if self.info is not None and self._ws is not None:
            await self._send({"type": "xp2p_info", "xp2p_info": self._xp2p_info_factory(self.info)})

    async def reconnect(self, reason: str) -> None:
        """Drop the connection to the cloud and sign in again now: this machine's network
        changed, and the old socket may sit on an address that is gone, silent until its
        heartbeat (10 s or more), while viewers' re-offers to move their links
        (``xp2p.link.handover``) go to it and wait for nothing."""
        runner = self._runner
        if self._closing.is_set() or runner is None:
            return
        logger.info("%s: %s: signing in to the cloud again", self.label, reason)
        # A second cancel cuts the closing handshake short: the old socket cannot finish it.
        for _ in range(2):
            runner.cancel()
            done, _pending = await asyncio.wait([runner], timeout=0.2)
            if done:
                break
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        if self._closing.is_set():
            return
        self._runner = asyncio.create_task(self._run(), name=f"cloud-session {self.product_id}")

    async def close(self) -> None:
        """Sign out cleanly and stop reconnecting."""
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- connection loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff[0]
        while not self._closing.is_set():
            reached = False
            replaced = False
            try:
                await self._connect_once()
            except CloudSignInError as exc:
                logger.error("%s", exc)
                self._auth_failed.set()
            except SignInThrottled as exc:
                logger.warning("%s: %s", self.label, exc)
                delay = min(max(delay, exc.retry_after), self._backoff[1])
            except SessionReplaced:
                replaced = True
                self.replaced_count += 1
                delay = min(max(delay, REPLACED_MIN_DELAY), self._backoff[1])
                logger.warning(
                    "%s: the cloud replaced this session with another sign-in of the same "
                    "identity (is a second agent running as this device?); retrying in about "
                    "%.0f s",
                    self.label,
                    delay,
                )
            except WelcomeRefused as exc:
                logger.error("%s: refused the cloud's welcome: %s", self.label, exc)
            except aiohttp.ClientError as exc:
                if tls_failure(exc):
                    logger.error("%s: %s", self.label, tls_failure_message(self._host))
                else:
                    logger.warning("%s: cloud connection failed: %s", self.label, exc or repr(exc))
            except (OSError, TimeoutError, SessionProtocolError) as exc:
                logger.warning("%s: cloud connection failed: %s", self.label, exc or repr(exc))
            except Exception:
                # A failing xp2p_info_factory, say: keep retrying rather than go silently dead.
                logger.exception("%s: cloud session error", self.label)
            finally:
                reached = self._signed_in.is_set()
                self._signed_in.clear()
            if self._closing.is_set():
                break
            if reached and not replaced:
                # A connection that got as far as signing in starts the backoff afresh; one
                # that was replaced does not, or two agents with one identity replace each
                # other for ever.
                delay = self._backoff[0]
            # Jitter spreads the reconnects of many devices after a cloud restart.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    async def _connect_once(self) -> None:
        """One connection: sign in, publish xp2pInfo, serve offers until it ends."""
        assert self._http is not None
        connecting = self._http.ws_connect(
            self._ws_url,
            heartbeat=self._heartbeat,
            max_msg_size=MAX_MESSAGE_SIZE,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
        )
        async with asyncio.timeout(SIGN_IN_TIMEOUT):
            ws = await connecting
        async with ws:
            self._ws = ws
            try:
                info = await self._sign_in(ws)
                self.info = info
                await self.publish_xp2p_info()
                await self._serve(ws)
            finally:
                self._ws = None
                # Their answers could no longer be delivered; not awaited, so the reconnect
                # (or close) does not wait on an ICE gathering being unwound.
                for task in self._offers:
                    task.cancel()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
        """The next frame as JSON, or None once the socket is closed."""
        msg = await ws.receive()
        if msg.type in _CLOSED:
            return None
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise SessionProtocolError(f"socket error: {ws.exception()}")
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise SessionProtocolError("the cloud sent a non-text frame")
        try:
            doc = json.loads(msg.data)
        except (ValueError, RecursionError):
            raise SessionProtocolError("the cloud sent a non-JSON frame") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise SessionProtocolError("the cloud sent a frame without a type")
        return doc

    async def _sign_in(self, ws: aiohttp.ClientWebSocketResponse) -> SignInInfo:
        async with asyncio.timeout(SIGN_IN_TIMEOUT):
            challenge = await self._receive(ws)
            if challenge is None or challenge["type"] != "challenge":
                raise SessionProtocolError("expected a challenge")
            try:
                nonce = bytes.fromhex(challenge["nonce"])
            except (KeyError, TypeError, ValueError):
                raise SessionProtocolError("malformed challenge") from None
            proof = (
                device_key_proof(self._key, nonce, self.product_id, self.device_name)
                if self._key is not None
                else device_proof(self._secret, nonce, self.product_id, self.device_name)
            )
            # The device's own nonce: the welcome's MAC covers it, so a welcome recorded from
            # an earlier sign-in (or made for another one) never verifies.
            device_nonce = self._new_device_nonce()
            await self._send(
                {
                    "type": "auth",
                    "product_id": self.product_id,
                    "device_name": self.device_name,
                    "proof": proof,
                    "nonce": device_nonce.hex(),
                }
            )
            welcome = await self._receive(ws)
        if welcome is None:
            raise SessionProtocolError("the cloud closed the connection during sign-in")
        if welcome["type"] == "error" and welcome.get("code") == "auth_failed":
            raise CloudSignInError(f"the cloud refused the credentials of {self.label}")
        if welcome["type"] == "error" and welcome.get("code") == "auth_throttled":
            retry = welcome.get("retry_after")
            wait = self._backoff[1]
            if isinstance(retry, int | float) and not isinstance(retry, bool) and retry > 0:
                wait = min(float(retry), wait)
            raise SignInThrottled(wait)
        if welcome["type"] != "welcome":
            raise SessionProtocolError(f"expected welcome, got {str(welcome['type'])[:32]!r}")
        try:
            session_id = welcome["session_id"]
            server_time = welcome["server_time"]
            if not isinstance(session_id, str) or type(server_time) is not int:
                raise ValueError("session_id or server_time")
            offered_key = welcome.get("grant_public_key")
            info = SignInInfo(
                session_id=session_id,
                grant_public_key=self._grant_key,
                ice_servers=parse_ice_servers(welcome["ice_servers"]),
                stun=StunInfo.from_json(welcome["stun"]),
                server_time=server_time,
                reports=_reports(welcome.get("reports")),
            )
            offered = None if offered_key is None else import_public_key(offered_key)
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionProtocolError(f"malformed welcome: {exc}") from None
        # Checked after parsing (so malformed frames get their own error), before any of it
        # is used: only the holder of the device secret can make this MAC, and only the
        # holder of the pinned grant key this signature (a key-pair device's welcome).
        ident = (nonce, device_nonce, self.product_id, self.device_name, welcome)
        if self._key is not None:
            if not verify_welcome_signature(self._grant_key, *ident):
                raise WelcomeRefused(
                    "its signature does not verify under the pinned grant key (not our "
                    "cloud, or rewritten on the way)"
                )
        elif not verify_welcome_mac(self._secret, *ident):
            raise WelcomeRefused(
                "its MAC does not verify under this device's secret (not our cloud, or "
                "rewritten on the way)"
            )
        if offered is not None and not _same_key(offered, self._grant_key):
            raise WelcomeRefused("it offers a grant-signing key other than the pinned one")
        self._auth_failed.clear()
        logger.info("%s signed in to the cloud (session %s)", self.label, session_id)
        return info

    def _new_device_nonce(self) -> bytes:
        return secrets.token_bytes(DEVICE_NONCE_BYTES)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await self._serve_frames(ws)
        if ws.close_code == CLOSE_REPLACED:
            raise SessionReplaced

    async def _serve_frames(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while (doc := await self._receive(ws)) is not None:
            kind = doc["type"]
            if kind == "xp2p_info_ok":
                self._signed_in.set()
            elif kind == "offer":
                request = _parse_offer(doc)
                if request is None:
                    logger.warning("%s: malformed offer ignored", self.label)
                    continue
                self._offers.spawn(self._serve_offer(request), "offer")
            elif kind == "error":
                logger.warning(
                    "%s: the cloud reported %r: %r", self.label, doc.get("code"), doc.get("message")
                )
            else:
                logger.debug("%s: ignoring a %r frame", self.label, kind)

    async def _serve_offer(self, request: OfferRequest) -> None:
        reply: dict[str, Any]
        try:
            answer = await self._on_offer(request)
            if not isinstance(answer, dict):
                raise TypeError("on_offer must return a dict")
            reply = {"type": "answer", "request_id": request.request_id, "answer": answer}
        except OfferRejected as exc:
            reply = _reject(request, exc.code, exc.reason)
        except Exception:
            logger.exception("%s: on_offer failed", self.label)
            reply = _reject(request, 500, "device error")
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._send(reply)

    def report_link_up(self, request_id: str, mode: str) -> None:
        """Tell the cloud which path the link of its offer ``request_id`` took (``direct``,
        ``relay`` or ``webrtc``): its connects-by-link-mode metric. Never raises, never waits."""
        if self.info is None or "link_up" not in self.info.reports:
            return
        frame = {"type": "link_up", "request_id": request_id, "mode": mode}

        async def send() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send(frame)

        self._offers.spawn(send(), "link-up")

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("not connected to the cloud")
        # Offer tasks and the main loop may send at once: aiohttp's writer serialises frames.
        await ws.send_str(json.dumps(message))


def _reports(value: object) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))


def _same_key(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    return a.public_bytes_raw() == b.public_bytes_raw()


def _reject(request: OfferRequest, code: int, reason: str) -> dict[str, Any]:
    return {"type": "reject", "request_id": request.request_id, "code": code, "reason": reason}


def _parse_offer(doc: dict[str, Any]) -> OfferRequest | None:
    request_id, app_key, offer = doc.get("request_id"), doc.get("app_key"), doc.get("offer")
    if not (isinstance(request_id, str) and isinstance(app_key, str) and isinstance(offer, dict)):
        return None
    try:
        ice_servers = parse_ice_servers(doc.get("ice_servers", []))
    except ValueError:
        ice_servers = ()  # fall back on the sign-in's: a relay may still work
    return OfferRequest(request_id, app_key, offer, ice_servers)
