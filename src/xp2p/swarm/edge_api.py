"""The edge's API for swarm viewers: routes, peer tokens and JSON message shapes (sans-IO).

This docstring is the contract between the edge (``xp2p.cloud.edge``) and the viewer's swarm
client; change it only together with both sides.

The edge runs inside ``xp2p cloud`` (same aiohttp app, extra routes) and standalone as
``xp2p edge`` (same code). HTTP requests are app-signed exactly like the app API
(`xp2p.viewer.cloud_client.CloudClient`, `xp2p.auth.sign_request`: HMAC over method, raw path
and query, timestamp, nonce, body hash). Every error is JSON with an HTTP status; the body is
the app API's ``{"error": {"code", "message"}}`` (what CloudClient turns into
``CloudError(status, code)``) with the same ``code`` and ``message`` repeated at top level.

- ``POST /api/v1/swarm/join`` body `JoinRequest` ``{"url": "<http(s) FLV URL>", "upload":
  bool, "fingerprint": "<viewer link cert fingerprint>", "nat_type": "<NatType value>"}``
  → 200 `JoinResponse` ``{"room", "peer_id", "stream_id": "<u64 decimal>", "edge_key":
  "<base64url raw Ed25519 public key>", "token", "seed": bool, "neighbours": [{"peer_id",
  "fingerprint", "nat_type"}], "ice_servers": [...as the app session's...], "chunk_ms"}``.
  Errors: 400 ``bad_request`` (not http(s), over 2048 bytes, bad field), 502
  ``source_unreachable`` (no FLV header from the source within 5 s, or not FLV), 503
  ``too_many_rooms``. The peer is only counted once its WebSocket is open; a join whose WS
  does not open within `JOIN_GRACE` seconds is forgotten. An optional ``?room=<room id>``
  query (checked against the url's) lets a load balancer route the join by room too.
- ``GET /api/v1/swarm/rooms/{room}/live`` → `LiveInfo` ``{"stream_id", "live_seq": int|null,
  "keyframe_seq": int|null (newest chunk with keyframe_start), "init_id": int|null,
  "state": "starting"|"live"|"stalled"|"ended"}``. 404 ``unknown_room``.
- ``GET /api/v1/swarm/rooms/{room}/init`` → ``application/octet-stream``,
  ``xp2p.swarm.wire.encode_item(init_chunk, proof)`` of the current InitChunk (404
  ``not_yet`` before the first one).
- ``GET /api/v1/swarm/rooms/{room}/chunks/{seq}[?wait=S]`` → ``application/octet-stream``
  ``encode_item(chunk, proof)``; 404 ``not_yet`` (after waiting up to S <= 3 s for it to be
  cut) or 410 ``gone`` (older than the edge keeps, which is >= 30 s). These bytes are the
  room's ``cdn_bytes``. ``stream_id`` stays for as long as the edge pulls the room; when it
  reconnects to a stalled or dropped source, sequence numbers go on and the first new chunk
  is a keyframe chunk coded against a new ``init_id`` (fetch ``init`` again): a
  `StreamAssembler` counts one stall and carries on. A room stopped after ``linger`` and
  started again has a new ``stream_id``.
- WebSocket ``GET /api/v1/swarm/rooms/{room}/ws?peer_id=P`` with ``Authorization: Bearer
  T`` (not app-signed: the peer token authenticates it, and stays out of the URL and so out
  of access logs; a ``token`` query parameter is refused; closing it = leaving the room).
  JSON text frames of at most `MAX_WS_FRAME` bytes; a bigger or malformed frame gets
  ``{"type":"error"}`` and, past `MAX_WS_ERRORS` of them, a close.
  Edge → peer (`parse_edge_message`):
  ``neighbours`` {neighbours} (whenever the list changes, and at once on connect),
  ``seed`` {seed}, ``offer`` {from, request_id, offer}, ``answer`` {from, request_id,
  answer}, ``reject`` {from, request_id, reason}, ``state`` {state} (stalled/ended/live
  again), ``token`` {token} (a fresh one before the old expires), ``error`` {code, message}.
  Peer → edge (`parse_peer_message`): ``offer`` {to, request_id, offer}, ``answer`` {to,
  request_id, answer}, ``reject`` {to, request_id, reason}, ``stats`` {p2p_bytes,
  cdn_bytes, uploaded_bytes, stalls, neighbours (connected neighbours, a count)} about every
  2 s, cumulative since join; ``need_neighbours`` {exclude: [peer_ids]}. A frame addressed
  to a peer that is not in this room gets ``{"type":"error","code":"unknown_peer"}``.
  ``request_id`` is a string of 1-64 characters or a non-negative integer, echoed as is.
- ``GET /api/v1/swarm/stats`` (app-signed) → ``{"rooms": [`RoomStats`]}``: room, url,
  online, cdn_bytes, p2p_bytes, stalls, requests_ok, requests_failed, edge_egress_copies
  (cdn_bytes over the bytes the edge has cut: about 1 when the swarm works).
- Peer token (`sign_peer_token`, `verify_peer_token`):
  ``<base64url(json {room, peer_id, fingerprint, exp})>.<base64url(Ed25519 signature by the
  edge key over the first part's ASCII)>``, valid `TOKEN_TTL` s. A viewer accepting a peer
  link checks that the offer's grant is a valid, unexpired token for its room and not its own
  peer_id (``verify_peer_token(..., room=, not_peer=)``); the opener pins the acceptor's
  certificate against the neighbour list's fingerprint.
- Room id (`room_id`): first 22 chars of base64url(sha256(url)). All requests of a room must
  reach the same edge instance: clients pick the edge by consistent hashing of the room id
  over the edge list, or the operator routes ``/api/v1/swarm/rooms/{room}/*`` by room.
- Peer links use the link layer: ``open_link(config, signal, fingerprint=<peer's>,
  grant=<own token>)`` on the opener, ``parse_offer`` + ``accept_link`` on the acceptor; the
  opener then sends ``POST /swarm`` whose streamed request body carries its
  `xp2p.swarm.protocol.frame`d messages and whose response body carries the acceptor's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from xp2p.auth import b64url_decode, b64url_encode
from xp2p.link.nat_behaviour import NatType

API = "/api/v1/swarm"
JOIN_PATH = f"{API}/join"
STATS_PATH = f"{API}/stats"
MAX_URL_LENGTH = 2048
#: A chunk request may wait at most this long for the chunk to be cut.
MAX_CHUNK_WAIT = 3.0
TOKEN_TTL = 600
#: A token is refreshed over the WS when it has less than this left.
TOKEN_REFRESH = 120
MAX_TOKEN_LENGTH = 1024
#: Offers and answers carry ICE candidates and a few fields: a few KiB. Bigger is abuse.
MAX_SIGNAL_BYTES = 16 * 1024
MAX_WS_FRAME = 32 * 1024
MAX_WS_ERRORS = 8
MAX_EXCLUDE = 64
JOIN_GRACE = 30.0
STATS_INTERVAL = 2.0
ROOM_ID_LENGTH = 22
ROOM_STATES = ("starting", "live", "stalled", "ended")
RoomState = Literal["starting", "live", "stalled", "ended"]

_PEER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FINGERPRINT_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_ROOM_RE = re.compile(r"[A-Za-z0-9_-]{22}")
_TOKEN_DOMAIN = b"xp2p swarm peer token v1\x00"


class MessageError(ValueError):
    """A request body or WS frame that is malformed; ``code`` is the JSON error code."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TokenError(ValueError):
    """A peer token was refused; ``reason`` is one of malformed, bad_signature, expired,
    wrong_room, own_peer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- names and keys --------------------------------------------------------------------------


def room_id(url: str) -> str:
    return b64url_encode(hashlib.sha256(url.encode()).digest())[:ROOM_ID_LENGTH]


def is_room_id(text: str) -> bool:
    return _ROOM_RE.fullmatch(text) is not None


def is_peer_id(text: object) -> bool:
    return isinstance(text, str) and _PEER_ID_RE.fullmatch(text) is not None


def check_source_url(url: object) -> str:
    """An http(s) URL with a host, at most `MAX_URL_LENGTH` bytes, or MessageError."""
    if not isinstance(url, str) or not url:
        raise MessageError("url must be a non-empty string")
    if len(url.encode()) > MAX_URL_LENGTH:
        raise MessageError(f"url is over {MAX_URL_LENGTH} bytes")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise MessageError("url is malformed") from None
    if parts.scheme not in ("http", "https"):
        raise MessageError("url must be http:// or https://")
    if not parts.hostname or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise MessageError("url needs a host and no spaces or control characters")
    del port
    return url


def edge_key_text(key: Ed25519PublicKey) -> str:
    return b64url_encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def parse_edge_key(text: str) -> Ed25519PublicKey:
    try:
        raw = b64url_decode(text)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise MessageError("edge_key is not a base64url Ed25519 public key") from None


# --- peer tokens -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerToken:
    room: str
    peer_id: str
    fingerprint: str
    exp: int


def sign_peer_token(key: Ed25519PrivateKey, token: PeerToken) -> str:
    doc: dict[str, Any] = {
        "room": token.room,
        "peer_id": token.peer_id,
        "fingerprint": token.fingerprint,
        "exp": token.exp,
    }
    body = b64url_encode(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    return f"{body}.{b64url_encode(key.sign(_TOKEN_DOMAIN + body.encode()))}"


def verify_peer_token(
    text: str,
    public_key: Ed25519PublicKey,
    *,
    now: float,
    room: str | None = None,
    not_peer: str | None = None,
    leeway: int = 30,
) -> PeerToken:
    """The token's fields if the edge signed it, it is unexpired (``leeway`` s of clock skew
    allowed), names ``room`` and is not ``not_peer``'s own; else TokenError."""
    if not isinstance(text, str) or len(text) > MAX_TOKEN_LENGTH or text.count(".") != 1:
        raise TokenError("malformed", "peer token is malformed")
    body, _, sig = text.partition(".")
    try:
        signature = b64url_decode(sig)
        payload = b64url_decode(body)
    except ValueError:
        raise TokenError("malformed", "peer token is not base64url") from None
    try:
        public_key.verify(signature, _TOKEN_DOMAIN + body.encode())
    except (InvalidSignature, ValueError):
        raise TokenError("bad_signature", "peer token signature does not verify") from None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise TokenError("malformed", "peer token payload is not JSON") from None
    if not isinstance(doc, dict):
        raise TokenError("malformed", "peer token payload is not an object")
    r, p, f, exp = doc.get("room"), doc.get("peer_id"), doc.get("fingerprint"), doc.get("exp")
    if not (isinstance(r, str) and isinstance(p, str) and is_peer_id(p)) or not (
        isinstance(f, str) and _is_int(exp)
    ):
        raise TokenError("malformed", "peer token fields are missing or mistyped")
    token = PeerToken(r, p, f, exp)
    if token.exp + leeway < now:
        raise TokenError("expired", "peer token has expired")
    if room is not None and token.room != room:
        raise TokenError("wrong_room", "peer token is for another room")
    if not_peer is not None and token.peer_id == not_peer:
        raise TokenError("own_peer", "peer token is this peer's own")
    return token


# --- field helpers ---------------------------------------------------------------------------


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(data: str | bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise MessageError("not valid JSON") from None
    if not isinstance(doc, dict):
        raise MessageError("must be a JSON object")
    return doc


def _str(doc: dict[str, Any], name: str, max_len: int = 256) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) > max_len:
        raise MessageError(f"{name} must be a string of at most {max_len} characters")
    return value


def _peer(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not is_peer_id(value):
        raise MessageError(f"{name} must be a peer id (1-64 of A-Z a-z 0-9 _ -)")
    assert isinstance(value, str)
    return value


def _count(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name, 0)
    if not _is_int(value) or not 0 <= value < 2**63:
        raise MessageError(f"{name} must be a non-negative integer")
    return int(value)


def _opt_int(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is not None and (not _is_int(value) or value < 0):
        raise MessageError(f"{name} must be a non-negative integer or null")
    return value


def _bool(doc: dict[str, Any], name: str) -> bool:
    value = doc.get(name)
    if not isinstance(value, bool):
        raise MessageError(f"{name} must be true or false")
    return value


def _request_id(doc: dict[str, Any]) -> str | int:
    value = doc.get("request_id")
    if isinstance(value, str) and 1 <= len(value) <= 64:
        return value
    if _is_int(value) and 0 <= value < 2**63:
        return int(value)
    raise MessageError("request_id must be a string of 1-64 characters or an integer")


def _signal_body(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise MessageError(f"{name} must be a JSON object")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_SIGNAL_BYTES:
        raise MessageError(f"{name} is over {MAX_SIGNAL_BYTES} bytes")
    return value


def _nat(doc: dict[str, Any]) -> str:
    value = doc.get("nat_type", NatType.UNKNOWN.value)
    if value not in {n.value for n in NatType}:
        raise MessageError("nat_type must be a NatType value")
    return str(value)


# --- HTTP bodies -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Neighbour:
    peer_id: str
    fingerprint: str
    nat_type: str

    def to_json(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "fingerprint": self.fingerprint, "nat_type": self.nat_type}

    @classmethod
    def from_json(cls, doc: object) -> Neighbour:
        if not isinstance(doc, dict):
            raise MessageError("a neighbour must be a JSON object")
        fingerprint = _str(doc, "fingerprint", 128)
        return cls(_peer(doc, "peer_id"), fingerprint, _nat(doc))


def _neighbours(value: object) -> tuple[Neighbour, ...]:
    if not isinstance(value, list) or len(value) > 64:
        raise MessageError("neighbours must be a list of at most 64")
    return tuple(Neighbour.from_json(n) for n in value)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    url: str
    upload: bool
    fingerprint: str
    nat_type: str = NatType.UNKNOWN.value

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "upload": self.upload,
            "fingerprint": self.fingerprint,
            "nat_type": self.nat_type,
        }

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> JoinRequest:
        doc = _object(data)
        url = check_source_url(doc.get("url"))
        fingerprint = doc.get("fingerprint")
        if not isinstance(fingerprint, str) or not _FINGERPRINT_RE.fullmatch(fingerprint):
            raise MessageError("fingerprint must be the base64url link certificate fingerprint")
        return cls(url, _bool(doc, "upload"), fingerprint, _nat(doc))


@dataclass(frozen=True, slots=True)
class JoinResponse:
    room: str
    peer_id: str
    stream_id: int
    edge_key: str
    token: str
    seed: bool
    neighbours: tuple[Neighbour, ...]
    ice_servers: list[dict[str, Any]]
    chunk_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "peer_id": self.peer_id,
            "stream_id": str(self.stream_id),
            "edge_key": self.edge_key,
            "token": self.token,
            "seed": self.seed,
            "neighbours": [n.to_json() for n in self.neighbours],
            "ice_servers": self.ice_servers,
            "chunk_ms": self.chunk_ms,
        }

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> JoinResponse:
        doc = _object(data)
        ice = doc.get("ice_servers")
        if not isinstance(ice, list):
            raise MessageError("ice_servers must be a list")
        chunk_ms = _count(doc, "chunk_ms")
        parse_edge_key(_str(doc, "edge_key"))
        return cls(
            room=_str(doc, "room"),
            peer_id=_peer(doc, "peer_id"),
            stream_id=_stream_id(doc),
            edge_key=_str(doc, "edge_key"),
            token=_str(doc, "token", MAX_TOKEN_LENGTH),
            seed=_bool(doc, "seed"),
            neighbours=_neighbours(doc.get("neighbours")),
            ice_servers=ice,
            chunk_ms=chunk_ms,
        )


def _stream_id(doc: dict[str, Any]) -> int:
    value = doc.get("stream_id")
    if not isinstance(value, str) or not value.isdigit() or int(value) >= 2**64:
        raise MessageError("stream_id must be a u64 as a decimal string")
    return int(value)


#: Keyframe chunks a /live answer lists at most (30 s of 1 s GOPs, with room).
MAX_KEYFRAMES = 64


@dataclass(frozen=True, slots=True)
class LiveInfo:
    stream_id: int
    live_seq: int | None
    keyframe_seq: int | None
    init_id: int | None
    state: RoomState
    #: The keyframe chunks the edge still keeps, oldest first (at most MAX_KEYFRAMES): a
    #: joiner can start from one already about its playout delay old, and play at once.
    keyframes: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": str(self.stream_id),
            "live_seq": self.live_seq,
            "keyframe_seq": self.keyframe_seq,
            "init_id": self.init_id,
            "state": self.state,
            "keyframes": list(self.keyframes),
        }

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> LiveInfo:
        doc = _object(data)
        return cls(
            _stream_id(doc),
            _opt_int(doc, "live_seq"),
            _opt_int(doc, "keyframe_seq"),
            _opt_int(doc, "init_id"),
            _state(doc),
            _keyframes(doc),
        )


def _keyframes(doc: dict[str, Any]) -> tuple[int, ...]:
    value = doc.get("keyframes", [])  # absent from older edges
    if (
        not isinstance(value, list)
        or len(value) > MAX_KEYFRAMES
        or not all(_is_int(v) and v >= 0 for v in value)
    ):
        raise MessageError(f"keyframes must be a list of at most {MAX_KEYFRAMES} chunk numbers")
    return tuple(value)


def _state(doc: dict[str, Any]) -> RoomState:
    value = doc.get("state")
    if value not in ROOM_STATES:
        raise MessageError(f"state must be one of {', '.join(ROOM_STATES)}")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class RoomStats:
    """One room's DescribeXP2PData fields, as ``GET /api/v1/swarm/stats`` lists them."""

    room: str
    url: str
    online: int
    cdn_bytes: int
    p2p_bytes: int
    stalls: int
    requests_ok: int
    requests_failed: int
    edge_egress_copies: float

    def to_json(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "url": self.url,
            "online": self.online,
            "cdn_bytes": self.cdn_bytes,
            "p2p_bytes": self.p2p_bytes,
            "stalls": self.stalls,
            "requests_ok": self.requests_ok,
            "requests_failed": self.requests_failed,
            "edge_egress_copies": round(self.edge_egress_copies, 3),
        }


# --- WebSocket messages ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """An offer, answer or reject between two peers of a room, relayed by the edge.

    ``peer`` is ``to`` on the way in (peer → edge) and ``from`` on the way out; ``body`` is
    the offer or answer object (None for a reject, which has ``reason`` instead)."""

    type: Literal["offer", "answer", "reject"]
    peer: str
    request_id: str | int
    body: dict[str, Any] | None = None
    reason: str = ""

    def to_json(self, *, outgoing: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": self.type,
            ("from" if outgoing else "to"): self.peer,
            "request_id": self.request_id,
        }
        if self.type == "reject":
            doc["reason"] = self.reason
        else:
            doc[self.type] = self.body
        return doc

    def relayed(self, sender: str) -> Signal:
        """This signal as the edge forwards it: addressed from ``sender``."""
        return Signal(self.type, sender, self.request_id, self.body, self.reason)

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, outgoing: bool) -> Signal:
        kind = doc["type"]
        peer = _peer(doc, "from" if outgoing else "to")
        rid = _request_id(doc)
        if kind == "reject":
            return cls("reject", peer, rid, None, _str(doc, "reason", 256))
        return cls(kind, peer, rid, _signal_body(doc, kind))


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What a peer reports about every 2 s, cumulative since it joined."""

    p2p_bytes: int = 0
    cdn_bytes: int = 0
    uploaded_bytes: int = 0
    stalls: int = 0
    neighbours: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "stats",
            "p2p_bytes": self.p2p_bytes,
            "cdn_bytes": self.cdn_bytes,
            "uploaded_bytes": self.uploaded_bytes,
            "stalls": self.stalls,
            "neighbours": self.neighbours,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PeerStats:
        names = ("p2p_bytes", "cdn_bytes", "uploaded_bytes", "stalls", "neighbours")
        return cls(*(_count(doc, n) for n in names))


@dataclass(frozen=True, slots=True)
class NeedNeighbours:
    exclude: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"type": "need_neighbours", "exclude": list(self.exclude)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NeedNeighbours:
        exclude = doc.get("exclude", [])
        if not isinstance(exclude, list) or len(exclude) > MAX_EXCLUDE:
            raise MessageError(f"exclude must be a list of at most {MAX_EXCLUDE} peer ids")
        if not all(is_peer_id(p) for p in exclude):
            raise MessageError("exclude must hold peer ids")
        return cls(tuple(exclude))


@dataclass(frozen=True, slots=True)
class NeighboursUpdate:
    neighbours: tuple[Neighbour, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": "neighbours", "neighbours": [n.to_json() for n in self.neighbours]}


@dataclass(frozen=True, slots=True)
class SeedUpdate:
    seed: bool

    def to_json(self) -> dict[str, Any]:
        return {"type": "seed", "seed": self.seed}


@dataclass(frozen=True, slots=True)
class StateUpdate:
    state: RoomState

    def to_json(self) -> dict[str, Any]:
        return {"type": "state", "state": self.state}


@dataclass(frozen=True, slots=True)
class TokenUpdate:
    token: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "token", "token": self.token}


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


PeerMessage = Signal | PeerStats | NeedNeighbours
EdgeMessage = Signal | NeighboursUpdate | SeedUpdate | StateUpdate | TokenUpdate | ErrorMessage


def _frame(data: str | bytes) -> dict[str, Any]:
    if len(data) > MAX_WS_FRAME:
        raise MessageError(f"frame is over {MAX_WS_FRAME} bytes", "frame_too_large")
    doc = _object(data)
    if not isinstance(doc.get("type"), str):
        raise MessageError("frame has no type")
    return doc


def parse_peer_message(data: str | bytes) -> PeerMessage:
    """A peer's WS frame as the edge reads it; MessageError names what is wrong."""
    doc = _frame(data)
    kind = doc["type"]
    if kind in ("offer", "answer", "reject"):
        return Signal.from_json(doc, outgoing=False)
    if kind == "stats":
        return PeerStats.from_json(doc)
    if kind == "need_neighbours":
        return NeedNeighbours.from_json(doc)
    raise MessageError(f"unknown message type {kind[:32]!r}", "unknown_type")


def parse_edge_message(data: str | bytes) -> EdgeMessage:
    """The edge's WS frame as a viewer reads it; MessageError names what is wrong."""
    doc = _frame(data)
    kind = doc["type"]
    if kind in ("offer", "answer", "reject"):
        return Signal.from_json(doc, outgoing=True)
    if kind == "neighbours":
        return NeighboursUpdate(_neighbours(doc.get("neighbours")))
    if kind == "seed":
        return SeedUpdate(_bool(doc, "seed"))
    if kind == "state":
        return StateUpdate(_state(doc))
    if kind == "token":
        return TokenUpdate(_str(doc, "token", MAX_TOKEN_LENGTH))
    if kind == "error":
        return ErrorMessage(_str(doc, "code", 64), _str(doc, "message", 1024))
    raise MessageError(f"unknown message type {kind[:32]!r}", "unknown_type")


def error_body(code: str, message: str) -> dict[str, Any]:
    """An HTTP error body: the app API's shape, with code and message also at top level."""
    return {"error": {"code": code, "message": message}, "code": code, "message": message}
