"""The JSON bodies and WebSocket frames of the edge's swarm API, and their parsers (pure).

The routes that carry them, and the limits named here, are in `xp2p.swarm.edge_routes` (the
contract); the peer token a join hands out is `xp2p.swarm.peer_token`'s. Everything a peer or
the network sends is parsed here, so this module imports with the standard library alone
(the fuzz targets and a test import it without cryptography): an edge key is checked for its
shape only, and `peer_token.parse_edge_key` makes the key from it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

from xp2p.link.nat_behaviour import NatType

from .device_url import is_device_url, parse_device_url
from .edge_routes import (
    MAX_EXCLUDE,
    MAX_KEYFRAMES,
    MAX_SIGNAL_BYTES,
    MAX_TOKEN_LENGTH,
    MAX_URL_LENGTH,
    MAX_WS_FRAME,
    is_peer_id,
)

ROOM_STATES = ("starting", "live", "stalled", "ended")
RoomState = Literal["starting", "live", "stalled", "ended"]
#: Raw Ed25519 public keys are 32 bytes; any 32 bytes load as one (cryptography checks no more).
EDGE_KEY_BYTES = 32

_FINGERPRINT_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


class MessageError(ValueError):
    """A request body or WS frame that is malformed; ``code`` is the JSON error code."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_source_url(url: object) -> str:
    """An http(s) URL with a host or a canonical `xp2p.swarm.device_url`, at most
    `MAX_URL_LENGTH` bytes, or MessageError."""
    if not isinstance(url, str) or not url:
        raise MessageError("url must be a non-empty string")
    try:
        size = len(url.encode())
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\ud800" escape
        raise MessageError("url is not valid Unicode text") from None
    if size > MAX_URL_LENGTH:
        raise MessageError(f"url is over {MAX_URL_LENGTH} bytes")
    if is_device_url(url):  # a camera's live stream, pulled by the edge over 1v1
        try:
            parse_device_url(url)
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        return url
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


def edge_key_bytes(text: str) -> bytes:
    """The raw public key an ``edge_key`` field carries (strict unpadded base64url of 32
    bytes, the rule of `xp2p.auth.b64url_decode`), or MessageError."""
    message = "edge_key is not a base64url Ed25519 public key"
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise MessageError(message)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise MessageError(message) from None
    if len(raw) != EDGE_KEY_BYTES:
        raise MessageError(message)
    return raw


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
    # A str first: a JSON list or object is unhashable, and the set lookup would raise.
    if not isinstance(value, str) or value not in {n.value for n in NatType}:
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
        edge_key_bytes(_str(doc, "edge_key"))
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
    # ASCII digits only (str.isdigit() takes "²", which int() refuses), and at most the 20
    # of 2**64 - 1, so int() never meets its 4300-digit limit either.
    if (
        not isinstance(value, str)
        or not (value.isascii() and value.isdigit())
        or len(value) > 20
        or int(value) >= 2**64
    ):
        raise MessageError("stream_id must be a u64 as a decimal string")
    return int(value)


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
