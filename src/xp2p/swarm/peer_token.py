"""The peer token: the edge's Ed25519-signed word that a viewer is in a room (part of the
contract in `xp2p.swarm.edge_routes`).

``<base64url(json {room, peer_id, fingerprint, exp})>.<base64url(Ed25519 signature by the
edge key over the first part's ASCII)>``, valid ``edge_routes.TOKEN_TTL`` s. The edge hands
one out with every join and a fresh one over the WebSocket before it expires; the WebSocket
takes it as ``Authorization: Bearer``. A viewer accepting a peer link checks that the
offer's grant is a valid, unexpired token for its room and not its own peer_id
(``verify_peer_token(..., room=, not_peer=)``); the opener pins the acceptor's certificate
against the neighbour list's fingerprint. The edge's public key travels as `edge_key_text`
in the join answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from xp2p.auth import b64url_decode, b64url_encode

from .edge_messages import edge_key_bytes
from .edge_routes import MAX_TOKEN_LENGTH, is_peer_id

_TOKEN_DOMAIN = b"xp2p swarm peer token v1\x00"


class TokenError(ValueError):
    """A peer token was refused; ``reason`` is one of malformed, bad_signature, expired,
    wrong_room, own_peer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def edge_key_text(key: Ed25519PublicKey) -> str:
    return b64url_encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def parse_edge_key(text: str) -> Ed25519PublicKey:
    """The key a join answer's ``edge_key`` names; MessageError if it is not one."""
    return Ed25519PublicKey.from_public_bytes(edge_key_bytes(text))


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
    exp_ok = isinstance(exp, int) and not isinstance(exp, bool)
    if not (isinstance(r, str) and isinstance(p, str) and is_peer_id(p)) or not (
        isinstance(f, str) and exp_ok
    ):
        raise TokenError("malformed", "peer token fields are missing or mistyped")
    assert isinstance(exp, int)
    token = PeerToken(r, p, f, exp)
    if token.exp + leeway < now:
        raise TokenError("expired", "peer token has expired")
    if room is not None and token.room != room:
        raise TokenError("wrong_room", "peer token is for another room")
    if not_peer is not None and token.peer_id == not_peer:
        raise TokenError("own_peer", "peer token is this peer's own")
    return token
