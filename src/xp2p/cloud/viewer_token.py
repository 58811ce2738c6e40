"""Viewer tokens: what a browser holds instead of the app secret (docs/protocol.md §4a).

The app's own backend (which holds the app secret) asks the cloud for a token that covers some
devices or products, a subset of the app's permissions and a short lifetime; the browser sends
it as ``Authorization: Bearer <token>`` to the routes it needs. Pure: no sockets, no logging,
``now`` comes from the caller.

Wire form: ``xvt1.<payload>.<mac>``, both parts unpadded base64url; the payload is canonical
JSON; the MAC is HMAC-SHA256 over ``"xp2p-viewer-token-v1" 0x00 "xvt1." <payload>`` with a key
derived from the cloud's grant key (:func:`derive_token_key`).

Why an HMAC and not an Ed25519 signature with the grant key: only the cloud ever checks a
viewer token, so nothing needs a public key; devices do hold the grant public key, and a second
kind of Ed25519-signed token under it is one more thing a confused verifier could take for a
grant. A key derived by HKDF with its own label cannot sign a grant, and it survives restarts
whenever the grant key does (``grant_key_file``), with no new secret to configure.

Errors never quote the token; a token's id (``tid``) is the only part fit for a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from xp2p.auth import b64url_decode, b64url_encode, normalise_permissions

TOKEN_PREFIX = "xvt1"
_VERSION = 1
_DOMAIN = b"xp2p-viewer-token-v1"
#: Longer tokens are refused before any MAC work (64 devices of 64-character names fit).
MAX_TOKEN_LENGTH = 12 * 1024
#: Devices and products one token may name.
MAX_SCOPE_ENTRIES = 64
#: How far ahead of the verifier's clock ``iat`` may be (several cloud processes, one key).
ISSUED_SKEW = 30
_NAME_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_TID_RE = re.compile(r"[0-9a-f]{16}")


class TokenFailure(StrEnum):
    """Why a viewer token was refused; the value is the cloud's error code (HTTP 401)."""

    INVALID = "token_invalid"
    EXPIRED = "token_expired"


class TokenError(Exception):
    """A viewer token was refused. The message never quotes the token. ``app_key`` is set
    when the MAC checked out (an expired token): the cloud may then answer with that app's
    CORS origins."""

    def __init__(self, reason: TokenFailure, message: str, app_key: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.app_key = app_key

    @property
    def code(self) -> str:
        return self.reason.value


@dataclass(frozen=True)
class ViewerToken:
    """What a browser may ask the cloud for, on behalf of one app, until when."""

    app_key: str
    devices: frozenset[tuple[str, str]]
    products: frozenset[str]
    permissions: frozenset[str]
    issued_at: int
    expires_at: int
    token_id: str = field(default_factory=lambda: secrets.token_hex(8))

    def covers(self, product_id: str, device_name: str) -> bool:
        return product_id in self.products or (product_id, device_name) in self.devices

    def payload(self) -> bytes:
        doc = {
            "v": _VERSION,
            "app": self.app_key,
            "dev": sorted([p, d] for p, d in self.devices),
            "prod": sorted(self.products),
            "perm": sorted(self.permissions),
            "iat": self.issued_at,
            "exp": self.expires_at,
            "tid": self.token_id,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def derive_token_key(grant_key: Ed25519PrivateKey) -> bytes:
    """The viewer-token MAC key: HKDF-SHA256 of the grant key's raw bytes, with its own label."""
    raw = grant_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return HKDF(hashes.SHA256(), 32, salt=None, info=_DOMAIN).derive(raw)


class ViewerTokenCodec:
    """Signs and verifies viewer tokens with one MAC key (kept out of the repr)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a viewer-token key is at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "ViewerTokenCodec(<key>)"

    def _mac(self, signed: str) -> bytes:
        return hmac.new(
            self._key, _DOMAIN + b"\x00" + signed.encode("ascii"), hashlib.sha256
        ).digest()

    def sign(self, token: ViewerToken) -> str:
        signed = f"{TOKEN_PREFIX}.{b64url_encode(token.payload())}"
        text = f"{signed}.{b64url_encode(self._mac(signed))}"
        if len(text) > MAX_TOKEN_LENGTH:
            raise ValueError("viewer token too long; name fewer devices")
        return text

    def verify(self, text: str, now: float) -> ViewerToken:
        """The token's claims, or :class:`TokenError` (malformed, bad MAC, expired)."""
        if len(text) > MAX_TOKEN_LENGTH:
            raise TokenError(TokenFailure.INVALID, "viewer token too long")
        prefix, sep, rest = text.partition(".")
        payload_b64, sep2, mac_b64 = rest.partition(".")
        if prefix != TOKEN_PREFIX or not (sep and sep2):
            raise TokenError(TokenFailure.INVALID, "not a viewer token (xvt1.<payload>.<mac>)")
        try:
            mac = b64url_decode(mac_b64)
            payload = b64url_decode(payload_b64)
        except ValueError:
            raise TokenError(TokenFailure.INVALID, "viewer token is not base64url") from None
        if not hmac.compare_digest(mac, self._mac(f"{prefix}.{payload_b64}")):
            raise TokenError(TokenFailure.INVALID, "viewer token signature does not match")
        token = parse_payload(payload)
        if token.issued_at > now + ISSUED_SKEW:
            raise TokenError(TokenFailure.INVALID, "viewer token issued in the future")
        if now >= token.expires_at:
            raise TokenError(TokenFailure.EXPIRED, "viewer token expired", token.app_key)
        return token


def parse_payload(payload: bytes) -> ViewerToken:
    """A token's claims from its JSON payload; :class:`TokenError` on anything unexpected.

    Only reached for payloads under a valid MAC, still parsed defensively: a bug or a future
    version must give a clear refusal, never a crash.
    """
    try:
        doc: Any = json.loads(payload)
        if not isinstance(doc, dict) or doc.get("v") != _VERSION:
            raise ValueError("unknown version")
        app, tid, iat, exp = doc["app"], doc["tid"], doc["iat"], doc["exp"]
        devs, prods, perms = doc["dev"], doc["prod"], doc["perm"]
        if not (
            type(app) is str
            and _NAME_RE.fullmatch(app)
            and type(tid) is str
            and _TID_RE.fullmatch(tid)
            and type(iat) is int
            and type(exp) is int
            and iat < exp
            and type(devs) is list
            and type(prods) is list
            and type(perms) is list
            and len(devs) + len(prods) <= MAX_SCOPE_ENTRIES
        ):
            raise ValueError("bad field")
        devices: set[tuple[str, str]] = set()
        for entry in devs:
            if not (type(entry) is list and len(entry) == 2):
                raise ValueError("bad device")
            pid, dev = entry
            if not (type(pid) is str and type(dev) is str):
                raise ValueError("bad device")
            if not (_NAME_RE.fullmatch(pid) and _NAME_RE.fullmatch(dev)):
                raise ValueError("bad device")
            devices.add((pid, dev))
        if not all(type(p) is str and _NAME_RE.fullmatch(p) for p in prods):
            raise ValueError("bad product")
        if not (devices or prods) or not all(type(p) is str for p in perms):
            raise ValueError("empty scope")
        return ViewerToken(
            app, frozenset(devices), frozenset(prods), normalise_permissions(perms), iat, exp, tid
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        raise TokenError(TokenFailure.INVALID, "viewer token payload is malformed") from None
