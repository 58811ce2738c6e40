"""Credentials and proofs shared by the cloud, the device and the viewer (docs/protocol.md).

Everything here is pure: no sockets, no logging, and the verifiers take ``now`` from the
caller (only the signing helpers default to the wall clock). That keeps the security-relevant
code small enough to read in one sitting and lets the tests drive time explicitly.

- App requests are signed with HMAC-SHA256 over method, path, timestamp, nonce and body hash;
  :class:`RequestVerifier` checks them and refuses replays.
- A device proves it holds its secret by answering a challenge (:func:`device_proof`); the
  secret itself never travels.
- The cloud hands a viewer a short-lived :class:`AccessGrant`, signed with Ed25519, which the
  device checks offline with the cloud's public key.
- TURN servers (coturn ``use-auth-secret``) get time-limited REST credentials.

Secrets never appear in exception messages or reprs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import ipaddress
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# --- app request signing ------------------------------------------------------------------

HEADER_APP = "X-XP2P-App"
HEADER_TIMESTAMP = "X-XP2P-Timestamp"
HEADER_NONCE = "X-XP2P-Nonce"
HEADER_SIGNATURE = "X-XP2P-Signature"

#: How old a request's timestamp may be (seconds): its nonce is remembered that long.
TIMESTAMP_WINDOW = 300
#: How far ahead of the verifier's clock a timestamp may be (seconds): clock skew, no more. A
#: request stamped far ahead would stay replayable, and pin its nonce in memory, for as long.
FUTURE_SKEW = 30
#: Nonces remembered per app before that app's window starts tightening (see ``_NonceCache``).
MAX_REMEMBERED_NONCES = 100_000
#: Signed requests one app may make: ``DEFAULT_REQUEST_BURST`` at once, then this many a second.
DEFAULT_REQUEST_RATE = 200.0
DEFAULT_REQUEST_BURST = 1000
#: Failed signatures (or unknown app keys) one app key or one source may cause in
#: ``DEFAULT_FAILURE_WINDOW`` seconds before further attempts are refused unverified.
DEFAULT_FAILURE_LIMIT = 20
DEFAULT_FAILURE_WINDOW = 60.0
#: Keys the failure throttle and the request buckets remember at most (memory bound under a
#: flood of spoofed sources or invented app keys).
MAX_TRACKED_KEYS = 10_000

_NONCE_RE = re.compile(r"[0-9a-fA-F]{16,64}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")


def _canonical_request(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path_qs}\n{timestamp}\n{nonce}\n{body_hash}".encode()


def _request_signature(app_secret: str, canonical: bytes) -> str:
    return hmac.new(app_secret.encode(), canonical, hashlib.sha256).hexdigest()


def sign_request(
    app_key: str,
    app_secret: str,
    method: str,
    path_qs: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one app request.

    ``path_qs`` is the path and query exactly as sent on the wire (already percent-encoded):
    the server signs over the raw request target, so any re-encoding would break the match.
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nc = secrets.token_hex(16) if nonce is None else nonce
    signature = _request_signature(app_secret, _canonical_request(method, path_qs, ts, nc, body))
    return {
        HEADER_APP: app_key,
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nc,
        HEADER_SIGNATURE: signature,
    }


class AuthFailure(StrEnum):
    """Why an app request was refused; the value is the cloud's JSON error code."""

    MISSING_AUTH = "missing_auth"
    UNKNOWN_APP = "unknown_app"
    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    REPLAYED_NONCE = "replayed_nonce"
    #: the app made more signed requests than its rate allows (HTTP 429, Retry-After)
    RATE_LIMITED = "rate_limited"
    #: too many failed signatures from this source or for this app key (HTTP 429, Retry-After)
    TOO_MANY_FAILURES = "too_many_failures"


_THROTTLES = frozenset({AuthFailure.RATE_LIMITED, AuthFailure.TOO_MANY_FAILURES})


class AuthError(Exception):
    """An app request failed verification. ``reason.value`` is a stable snake_case code.

    ``retry_after`` (seconds) is set for the two throttles, whose ``status`` is 429; every
    other failure is 401.
    """

    def __init__(
        self, reason: AuthFailure, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def code(self) -> str:
        return self.reason.value

    @property
    def status(self) -> int:
        return 429 if self.reason in _THROTTLES else 401


class _NonceCache:
    """One app's nonces seen inside the timestamp window, bounded in memory.

    A nonce must be remembered only while its timestamp is still acceptable; after that the
    window check refuses it anyway. When the cache is full, the entry that would expire first
    is dropped and ``floor`` rises to its timestamp: requests no newer than a forgotten nonce
    are then refused, so forgetting never re-opens a replay. The cache, its quota and its
    floor belong to one app, so an app that floods only tightens its own window.
    """

    def __init__(self, window: int, max_entries: int) -> None:
        self._window = window
        self._max = max_entries
        self._seen: set[str] = set()
        self._expiry: list[tuple[int, str]] = []
        self.floor = -1

    def purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] + self._window < now:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.discard(nonce)

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._seen

    def add(self, nonce: str, timestamp: int) -> None:
        while len(self._seen) >= self._max:
            ts, old = heapq.heappop(self._expiry)
            self._seen.discard(old)
            self.floor = max(self.floor, ts)
        self._seen.add(nonce)
        heapq.heappush(self._expiry, (timestamp, nonce))

    def __len__(self) -> int:
        return len(self._seen)


class _Buckets:
    """Token buckets by key, bounded: ``burst`` at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    def take(self, key: str, now: float) -> float:
        """0.0 when a token was spent, else the seconds until one will be there."""
        tokens, updated = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - updated) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        if len(self._buckets) >= MAX_TRACKED_KEYS:
            # Least recently used first (re-inserted on every take): a forgotten bucket is
            # a full one, which at worst grants one extra burst.
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)
        return wait


class FailureThrottle:
    """Counts failures per key in fixed windows; a key at ``limit`` is blocked until its
    window ends. Sans-IO and bounded (``MAX_TRACKED_KEYS``, oldest window dropped first)."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("failure limit must be at least 1 and its window positive")
        self._limit = limit
        self._window = window
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (window start, failures)

    def blocked(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0.0 when it may now."""
        entry = self._counts.get(key)
        if entry is None:
            return 0.0
        start, count = entry
        if now >= start + self._window:
            del self._counts[key]
            return 0.0
        return start + self._window - now if count >= self._limit else 0.0

    def recent(self, key: str, now: float) -> int:
        """Failures of ``key`` in its current window."""
        start, count = self._counts.get(key, (now, 0))
        return count if now < start + self._window else 0

    def failed(self, key: str, now: float) -> None:
        start, count = self._counts.get(key, (now, 0))
        if now >= start + self._window:
            start, count = now, 0
        elif key not in self._counts and len(self._counts) >= MAX_TRACKED_KEYS:
            del self._counts[next(iter(self._counts))]  # the oldest window
        self._counts[key] = (start, count + 1)

    def __len__(self) -> int:
        return len(self._counts)


def _source_key(source: str | None) -> str | None:
    """The failure throttle's key for a client address: an IPv6 client is its /64, since one
    host is commonly handed a whole /64."""
    if source is None:
        return None
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return f"src:{source}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"src:{ip.ipv4_mapped}"
        return f"src:{ipaddress.ip_network((ip, 64), strict=False)}"
    return f"src:{ip}"


class RequestVerifier:
    """Checks signed app requests (sans-IO: the caller passes ``now``).

    ``app_secrets`` maps app key → secret; it is read on every call, so a caller may pass a
    live mapping and add or revoke apps at run time. In order, :meth:`verify`:

    1. refuses (429 ``too_many_failures``) an app key or a source that failed
       ``failure_limit`` times in ``failure_window`` s, before any HMAC work: online guessing
       of a secret is bounded by that rate;
    2. checks the signature (failures count towards 1.), so only holders of the secret learn
       the finer reasons below;
    3. spends one token of the app's bucket (429 ``rate_limited``);
    4. refuses timestamps older than ``window`` or more than ``future_skew`` ahead;
    5. refuses a replayed nonce, against that app's own cache (quota ``max_nonces``);
    6. calls ``authorise(app_key)``, the caller's permission check, which may raise;
    7. only then remembers the nonce: a request that is refused takes no room.
    """

    def __init__(
        self,
        app_secrets: Mapping[str, str],
        *,
        window: int = TIMESTAMP_WINDOW,
        future_skew: int = FUTURE_SKEW,
        max_nonces: int = MAX_REMEMBERED_NONCES,
        request_rate: float = DEFAULT_REQUEST_RATE,
        request_burst: int = DEFAULT_REQUEST_BURST,
        failure_limit: int = DEFAULT_FAILURE_LIMIT,
        failure_window: float = DEFAULT_FAILURE_WINDOW,
    ) -> None:
        if window <= 0 or max_nonces <= 0 or future_skew < 0:
            raise ValueError("window and max_nonces must be positive, future_skew not negative")
        if request_rate <= 0 or request_burst < 1:
            raise ValueError("request_rate must be positive and request_burst at least 1")
        self._secrets = app_secrets
        self._window = window
        self._skew = future_skew
        self._max_nonces = max_nonces
        self._nonces: dict[str, _NonceCache] = {}
        self._requests = _Buckets(request_rate, request_burst)
        self._failures = FailureThrottle(failure_limit, failure_window)

    def verify(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        *,
        source: str | None = None,
        authorise: Callable[[str], None] | None = None,
    ) -> str:
        """Return the authenticated app key, or raise :class:`AuthError` (or whatever
        ``authorise`` raises). ``source`` is the client's address, for the failure throttle."""
        app_key = headers.get(HEADER_APP)
        ts = headers.get(HEADER_TIMESTAMP)
        nonce = headers.get(HEADER_NONCE)
        signature = headers.get(HEADER_SIGNATURE)
        if app_key is None or ts is None or nonce is None or signature is None:
            raise AuthError(AuthFailure.MISSING_AUTH, "missing authentication headers")
        if not (
            _TIMESTAMP_RE.fullmatch(ts)
            and _NONCE_RE.fullmatch(nonce)
            and _SIGNATURE_RE.fullmatch(signature)
        ):
            raise AuthError(AuthFailure.MISSING_AUTH, "malformed authentication headers")
        src_key = _source_key(source)
        keys = [f"app:{app_key}"] + ([src_key] if src_key is not None else [])
        # A throttled app key still lets sources with a clean record through to the HMAC: the
        # key is no secret, and anyone could otherwise lock a real app out with wrong
        # signatures. Guessing from many sources is still bounded, one failure per source.
        wait = self._failures.blocked(src_key, now) if src_key is not None else 0.0
        key_wait = self._failures.blocked(keys[0], now)
        if key_wait > 0 and (src_key is None or self._failures.recent(src_key, now) > 0):
            wait = max(wait, key_wait)
        if wait > 0:
            raise AuthError(
                AuthFailure.TOO_MANY_FAILURES,
                f"too many failed signatures; retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
        secret = self._secrets.get(app_key)
        expected = (
            _request_signature(secret, _canonical_request(method, path_qs, ts, nonce, body))
            if secret is not None
            else None
        )
        if expected is None or not hmac.compare_digest(
            expected.encode(), signature.lower().encode()
        ):
            # An unknown key counts against the source only: inventing keys must not grow the
            # table by itself, and must not lock a real app out.
            for key in keys if expected is not None else keys[1:]:
                self._failures.failed(key, now)
            if expected is None:
                raise AuthError(AuthFailure.UNKNOWN_APP, "unknown app key")
            raise AuthError(AuthFailure.BAD_SIGNATURE, "request signature does not match")
        wait = self._requests.take(app_key, now)
        if wait > 0:
            raise AuthError(
                AuthFailure.RATE_LIMITED,
                f"too many requests from this app; retry in {wait:.1f} s",
                retry_after=wait,
            )
        nonces = self._nonces.get(app_key)
        if nonces is None:
            nonces = self._nonces[app_key] = _NonceCache(self._window, self._max_nonces)
        nonces.purge(now)
        timestamp = int(ts)
        if timestamp < now - self._window:
            raise AuthError(
                AuthFailure.STALE_TIMESTAMP,
                f"request timestamp is more than {self._window} s before server time",
            )
        if timestamp > now + self._skew:
            raise AuthError(
                AuthFailure.FUTURE_TIMESTAMP,
                f"request timestamp is more than {self._skew} s after server time",
            )
        nonce = nonce.lower()
        if nonce in nonces:
            raise AuthError(AuthFailure.REPLAYED_NONCE, "request nonce was already used")
        if timestamp <= nonces.floor:
            # This app's nonce cache overflowed and forgot requests this old: refuse rather
            # than risk accepting a replay of one of them.
            raise AuthError(
                AuthFailure.STALE_TIMESTAMP, "request timestamp is too old under current load"
            )
        if authorise is not None:
            authorise(app_key)
        nonces.add(nonce, timestamp)
        return app_key

    @property
    def remembered_nonces(self) -> int:
        return sum(len(c) for c in self._nonces.values())

    def remembered_for(self, app_key: str) -> int:
        """Nonces remembered for one app."""
        cache = self._nonces.get(app_key)
        return 0 if cache is None else len(cache)

    def spend(self, app_key: str, now: float) -> None:
        """Take one request from ``app_key``'s bucket for a request authenticated some other
        way (a viewer token): signed and token requests share the app's rate. Raises
        :class:`AuthError` ``rate_limited`` (429) when the bucket is empty."""
        wait = self._requests.take(app_key, now)
        if wait > 0:
            raise AuthError(
                AuthFailure.RATE_LIMITED,
                f"too many requests from this app; retry in {wait:.1f} s",
                retry_after=wait,
            )


# --- device sign-in proof -----------------------------------------------------------------

_PROOF_DOMAIN = b"xp2p-device-proof-v1"
_KEY_PROOF_DOMAIN = b"xp2p-device-key-proof-v1"


def length_prefixed(*parts: bytes) -> bytes:
    """The parts, each after its 4-byte big-endian length: what every MAC here signs."""
    # Length prefixes make the message unambiguous: ("ab", "c") and ("a", "bc") differ.
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def device_proof(device_secret: str, challenge: bytes, product_id: str, device_name: str) -> str:
    """Hex HMAC-SHA256 proving possession of ``device_secret`` for this challenge and device."""
    message = length_prefixed(_PROOF_DOMAIN, product_id.encode(), device_name.encode(), challenge)
    return hmac.new(device_secret.encode(), message, hashlib.sha256).hexdigest()


def _key_proof_message(challenge: bytes, product_id: str, device_name: str) -> bytes:
    return length_prefixed(_KEY_PROOF_DOMAIN, product_id.encode(), device_name.encode(), challenge)


def device_key_proof(
    device_key: Ed25519PrivateKey, challenge: bytes, product_id: str, device_name: str
) -> str:
    """Hex Ed25519 signature proving possession of a provisioned device's private key; its
    own domain, so it never doubles as an HMAC proof's message or a grant's."""
    return device_key.sign(_key_proof_message(challenge, product_id, device_name)).hex()


def verify_device_key_proof(
    public_key: bytes, challenge: bytes, product_id: str, device_name: str, proof: str
) -> bool:
    """``public_key``: the raw 32 bytes the registry holds."""
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        return False
    return verify_hex_signature(key, proof, _key_proof_message(challenge, product_id, device_name))


def verify_hex_signature(key: Ed25519PublicKey, signature: object, message: bytes) -> bool:
    """Whether ``signature`` is 128 hex digits of ``key``'s Ed25519 signature of ``message``;
    False (never an exception) for anything else a peer might send."""
    if not isinstance(signature, str) or len(signature) != 128:
        return False
    try:
        key.verify(bytes.fromhex(signature), message)
    except (ValueError, InvalidSignature):
        return False
    return True


def verify_device_proof(
    device_secret: str, challenge: bytes, product_id: str, device_name: str, proof: str
) -> bool:
    expected = device_proof(device_secret, challenge, product_id, device_name)
    try:
        given = proof.lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode(), given)


# --- access grants ------------------------------------------------------------------------

#: Everything a grant can allow (docs/protocol.md §9: live, playback, download, voice, command).
PERMISSIONS: frozenset[str] = frozenset({"live", "playback", "download", "voice", "command"})
#: The 1vN edge's pull of a camera (docs/protocol.md §5, §12): the device gives such a link
#: one viewer slot beyond ``max_viewers``. Never handed to an app: only the edge mints it,
#: with the cloud's grant key, so `normalise_permissions` (what apps may ask) refuses it.
RELAY = "relay"
_GRANT_PERMISSIONS = PERMISSIONS | {RELAY}
#: Grants longer than this are refused before any parsing or signature work.
MAX_GRANT_LENGTH = 2048
DEFAULT_GRANT_TTL = 300
_GRANT_VERSION = 1


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url; raises ValueError on anything else."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc


@dataclass(frozen=True)
class AccessGrant:
    """What a viewer may do on one device, until when; signed by the cloud."""

    app_key: str
    product_id: str
    device_name: str
    permissions: frozenset[str]
    issued_at: int
    expires_at: int
    grant_id: str = field(default_factory=lambda: secrets.token_hex(8))

    def allows(self, permission: str) -> bool:
        return permission in self.permissions

    def _payload(self) -> bytes:
        doc = {
            "v": _GRANT_VERSION,
            "app": self.app_key,
            "pid": self.product_id,
            "dev": self.device_name,
            "perm": sorted(self.permissions),
            "iat": self.issued_at,
            "exp": self.expires_at,
            "gid": self.grant_id,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class GrantFailure(StrEnum):
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_DEVICE = "wrong_device"


class GrantError(Exception):
    """A grant was refused. The message never quotes the token."""

    def __init__(self, reason: GrantFailure, message: str | None = None) -> None:
        super().__init__(message or f"access grant refused: {reason.value}")
        self.reason = reason


def normalise_permissions(permissions: Iterable[str] | None) -> frozenset[str]:
    """``None`` means all; unknown names or an empty set are a ValueError."""
    if permissions is None:
        return PERMISSIONS
    perms = frozenset(permissions)
    unknown = perms - PERMISSIONS
    if unknown:
        raise ValueError(f"unknown permissions: {', '.join(sorted(unknown))}")
    if not perms:
        raise ValueError("a grant needs at least one permission")
    return perms


class GrantSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"GrantSigner(public_key={export_public_key(self.public_key)})"

    def sign(self, grant: AccessGrant) -> str:
        payload = b64url_encode(grant._payload())
        signature = self._key.sign(payload.encode("ascii"))
        token = f"{payload}.{b64url_encode(signature)}"
        if len(token) > MAX_GRANT_LENGTH:
            raise ValueError("grant too long; shorten the app key or device name")
        return token

    def issue(
        self,
        app_key: str,
        product_id: str,
        device_name: str,
        permissions: Iterable[str] | None = None,
        *,
        now: float | None = None,
        ttl: int = DEFAULT_GRANT_TTL,
    ) -> str:
        """Sign a grant valid from ``now`` (default: the clock) for ``ttl`` seconds.

        ``permissions`` None means all of them.
        """
        issued = int(time.time() if now is None else now)
        return self.sign(
            AccessGrant(
                app_key=app_key,
                product_id=product_id,
                device_name=device_name,
                permissions=normalise_permissions(permissions),
                issued_at=issued,
                expires_at=issued + ttl,
            )
        )


class GrantVerifier:
    """Checks grants offline with the cloud's public key.

    ``leeway`` absorbs clock skew between the cloud that issued a grant and the device that
    checks it.
    """

    def __init__(self, public_key: Ed25519PublicKey, *, leeway: int = 30) -> None:
        self._key = public_key
        self._leeway = leeway

    def verify(self, token: str, product_id: str, device_name: str, now: float) -> AccessGrant:
        if len(token) > MAX_GRANT_LENGTH:
            raise GrantError(GrantFailure.MALFORMED, "access grant too long")
        payload_b64, sep, sig_b64 = token.partition(".")
        try:
            if not sep:
                raise ValueError("no separator")
            signature = b64url_decode(sig_b64)
            payload = b64url_decode(payload_b64)
        except ValueError:
            raise GrantError(GrantFailure.MALFORMED) from None
        try:
            self._key.verify(signature, payload_b64.encode("ascii"))
        except InvalidSignature:
            raise GrantError(GrantFailure.BAD_SIGNATURE) from None
        grant = _parse_grant_payload(payload)
        if grant.product_id != product_id or grant.device_name != device_name:
            raise GrantError(GrantFailure.WRONG_DEVICE)
        if now + self._leeway < grant.issued_at:
            raise GrantError(GrantFailure.NOT_YET_VALID)
        if now - self._leeway >= grant.expires_at:
            raise GrantError(GrantFailure.EXPIRED)
        return grant


def _parse_grant_payload(payload: bytes) -> AccessGrant:
    # Only reached for correctly signed payloads, but still parsed defensively: a bug or a
    # future version on the cloud side must give a clear error, not a crash.
    try:
        doc: Any = json.loads(payload)
        if not isinstance(doc, dict) or doc.get("v") != _GRANT_VERSION:
            raise ValueError("unknown grant version")
        names, times = (doc["app"], doc["pid"], doc["dev"], doc["gid"]), (doc["iat"], doc["exp"])
        if not (
            all(type(n) is str for n in names)
            and all(type(t) is int for t in times)
            and type(doc["perm"]) is list
        ):
            raise ValueError("grant field of the wrong type")
        perms = frozenset(doc["perm"])
        if not perms or not perms <= _GRANT_PERMISSIONS:
            raise ValueError("unknown or no permissions")
        return AccessGrant(*names[:3], perms, *times, names[3])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise GrantError(GrantFailure.MALFORMED) from None


def export_public_key(key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of an Ed25519 public key, as unpadded base64url."""
    return b64url_encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def import_public_key(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`export_public_key`; raises ValueError on a malformed key."""
    raw = b64url_decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


# --- what the cloud hands out for connectivity -------------------------------------------
#
# Both the viewer and the device receive ICE servers and the STUN address from the cloud, and
# neither may import the other, so the checks of that JSON live here, beside the TURN
# credentials the ICE server entries carry.


def turn_credentials(
    shared_secret: str, user: str, ttl: int, *, now: int | None = None
) -> tuple[str, str]:
    """coturn ``use-auth-secret`` credentials: ``("<expiry>:<user>", base64(HMAC-SHA1))``."""
    expiry = (int(time.time()) if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(shared_secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")
