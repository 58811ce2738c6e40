"""The edge's JSON both ways: a peer's WebSocket frames and join bodies as the edge reads
them, the edge's frames, join answers and /live answers as a viewer reads them, and the peer
token a neighbour's offer carries. MessageError (TokenError for tokens) is the only refusal,
and what parses serialises to JSON that parses to the same message. ``u``: a source URL as
the edge keys, checks and logs it (`normalise_url`, `room_id`, `url_origin`, `redact_url`):
these never raise, normalising twice changes nothing, and a redacted URL keeps no userinfo
and no query value."""

from __future__ import annotations

import json
from typing import Any

import atheris
import harness
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

with atheris.instrument_imports(include=["xp2p.swarm"]):
    from xp2p.swarm.edge_messages import (
        JoinRequest,
        JoinResponse,
        LiveInfo,
        MessageError,
        Signal,
        check_source_url,
        parse_edge_message,
        parse_peer_message,
    )
    from xp2p.swarm.edge_routes import normalise_url, redact_url, room_id, url_origin
    from xp2p.swarm.peer_token import TokenError, verify_peer_token

_EDGE_KEY = Ed25519PrivateKey.generate().public_key()
_TOKEN_REASONS = ("malformed", "bad_signature", "expired", "wrong_room", "own_peer")


def _again(message: Any) -> dict[str, Any]:
    """The message's JSON, as it would travel on (the edge relays signals re-addressed)."""
    if isinstance(message, Signal):
        return message.to_json(outgoing=True)
    doc: dict[str, Any] = message.to_json()
    return doc


def _urls(url: str) -> None:
    once = normalise_url(url)
    assert normalise_url(once) == once, (url, once)
    assert room_id(url) == room_id(once) and len(room_id(url)) == 22
    origin = url_origin(url)
    assert origin == "" or origin.startswith(("http://", "https://")), origin
    redacted = redact_url(url)
    try:
        check_source_url(url)
    except MessageError:
        return  # never a room's: what its redaction looks like matters to no one
    query = redacted.partition("?")[2]
    assert all(field.endswith("=") for field in query.split("&") if field), redacted
    assert "@" not in redacted.partition("://")[2].partition("/")[0], redacted


def TestOneInput(data: bytes) -> None:
    kind, body = data[:1], data[1:]
    try:
        if kind == b"p":
            peer = parse_peer_message(body)
            if isinstance(peer, Signal):
                relayed = peer.relayed("fuzz-peer")
                assert parse_edge_message(json.dumps(_again(relayed))) == relayed
            else:
                assert parse_peer_message(json.dumps(_again(peer))) == peer
        elif kind == b"e":
            edge = parse_edge_message(body)
            assert parse_edge_message(json.dumps(_again(edge))) == edge
        elif kind == b"j":
            join = JoinRequest.from_json(body)
            assert JoinRequest.from_json(json.dumps(join.to_json())) == join
        elif kind == b"r":
            answer = JoinResponse.from_json(body)
            assert JoinResponse.from_json(json.dumps(answer.to_json())) == answer
        elif kind == b"u":
            _urls(harness.text(body))
        elif kind == b"l":
            live = LiveInfo.from_json(body)
            assert LiveInfo.from_json(json.dumps(live.to_json())) == live
        else:
            try:
                verify_peer_token(harness.text(body), _EDGE_KEY, now=0.0, room="r", not_peer="p")
            except TokenError as exc:
                assert exc.reason in _TOKEN_REASONS, exc.reason
                return
            raise AssertionError("a token verified without the edge's key")
    except MessageError as exc:
        assert isinstance(exc.code, str) and exc.code, exc


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
