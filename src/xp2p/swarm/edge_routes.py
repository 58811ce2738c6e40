"""The edge's API for swarm viewers: its routes, their limits and the ids they carry (pure).

This docstring is the contract between the edge (``xp2p.cloud.edge``) and the viewer's swarm
client, together with `xp2p.swarm.edge_messages` (the JSON bodies and frames named below) and
`xp2p.swarm.peer_token` (the token that admits a peer); change them only together with both
sides. docs/protocol.md describes the same for other implementations.

The edge runs inside ``xp2p cloud`` (same aiohttp app, extra routes) and standalone as
``xp2p edge`` (same code). HTTP requests are app-signed exactly like the app API
(`xp2p.viewer.cloud_client.CloudClient`, `xp2p.auth.sign_request`: HMAC over method, raw path
and query, timestamp, nonce, body hash). Every error is JSON with an HTTP status; the body is
the app API's ``{"error": {"code", "message"}}`` (what CloudClient turns into
``CloudError(status, code)``) with the same ``code`` and ``message`` repeated at top level
(`xp2p.swarm.edge_messages.error_body`).

- ``POST /api/v1/swarm/join`` body `JoinRequest` ``{"url": "<http(s) FLV URL>", "upload":
  bool, "fingerprint": "<viewer link cert fingerprint>", "nat_type": "<NatType value>"}``
  → 200 `JoinResponse` ``{"room", "peer_id", "stream_id": "<u64 decimal>", "edge_key":
  "<base64url raw Ed25519 public key>", "token", "seed": bool, "neighbours": [{"peer_id",
  "fingerprint", "nat_type"}], "ice_servers": [...as the app session's...], "chunk_ms"}``.
  Errors: 400 ``bad_request`` (not http(s), over 2048 bytes, bad field), 403
  ``source_refused`` ("source refused": the source is not a public address nor an allowed
  origin, here or after a redirect), 403 ``room_forbidden`` (the room is another app's),
  429 ``room_quota`` (the app holds its share of rooms), 502 ``source_unreachable``
  ("source unavailable": no FLV from the source, for whatever reason; the detail stays in
  the edge's log), 503 ``too_many_rooms``. The peer is only counted once its WebSocket is
  open; a join whose WS does not open within the edge's ``join_grace`` (at most
  `JOIN_GRACE`) seconds is forgotten, and a room counts against ``max_rooms`` only once a
  viewer's WebSocket opened in it (the WS is refused 503 ``too_many_rooms`` otherwise).
  An optional ``?room=<room id>`` query (checked against the url's) lets a load balancer
  route the join by room too.
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
  ``{"type":"error"}`` and, past `MAX_WS_ERRORS` of them (one forgiven a minute), a close.
  Edge → peer (`parse_edge_message`):
  ``neighbours`` {neighbours} (whenever the list changes, and at once on connect),
  ``seed`` {seed}, ``offer`` {from, request_id, offer}, ``answer`` {from, request_id,
  answer}, ``reject`` {from, request_id, reason}, ``state`` {state} (stalled/ended/live
  again), ``token`` {token} (a fresh one before the old expires), ``error`` {code, message}.
  Peer → edge (`parse_peer_message`): ``offer`` {to, request_id, offer}, ``answer`` {to,
  request_id, answer}, ``reject`` {to, request_id, reason}, ``stats`` {p2p_bytes,
  cdn_bytes, uploaded_bytes, stalls, neighbours (connected neighbours, a count)} about every
  2 s, cumulative since join; ``need_neighbours`` {exclude: [peer_ids]}. A frame addressed
  to a peer that is not in this room gets ``{"type":"error","code":"unknown_peer"}``; one
  to a peer that is not its neighbour (either's list, as the tracker assigned them)
  ``not_neighbour``. A peer sends at most `SIGNAL_BURST` signals at once and
  `SIGNAL_RATE` a second (beyond: ``rate_limited``), and a signal for a peer whose channel
  is backed up is dropped (``peer_busy``); these count as bad frames of the SENDER. A
  ``stats`` report beyond what is possible since the join (any byte figure over
  `MAX_REPORT_RATE` x seconds + `REPORT_SLACK`) is refused ``bad_stats`` and not taken.
  ``request_id`` is a string of 1-64 characters or a non-negative integer, echoed as is.
- ``GET /api/v1/swarm/stats`` (app-signed) → ``{"rooms": [`RoomStats`]}``: room, url,
  online, cdn_bytes, p2p_bytes, stalls, requests_ok, requests_failed, edge_egress_copies
  (cdn_bytes over the bytes the edge has cut: about 1 when the swarm works). Only the
  rooms the asking app may join are listed, and ``url`` is `redact_url`'s (no userinfo,
  no query values).
- Peer token: see `xp2p.swarm.peer_token`; valid `TOKEN_TTL` s, refreshed over the WS when
  less than `TOKEN_REFRESH` s are left.
- Room id (`room_id`): first 22 chars of base64url(sha256(`normalise_url`(url))). All
  requests of a room must reach the same edge instance: clients pick the edge by
  consistent hashing of the room id over the edge list, or the operator routes
  ``/api/v1/swarm/rooms/{room}/*`` by room.
- Peer links use the link layer: ``open_link(config, signal, fingerprint=<peer's>,
  grant=<own token>)`` on the opener, ``parse_offer`` + ``accept_link`` on the acceptor; the
  opener then sends ``POST /swarm`` whose streamed request body carries its
  `xp2p.swarm.protocol.frame`d messages and whose response body carries the acceptor's.

Standard library only: the messages that build on it are fuzzed and imported without
cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .device_url import is_device_url, parse_device_url

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
#: Keyframe chunks a /live answer lists at most (30 s of 1 s GOPs, with room).
MAX_KEYFRAMES = 64
JOIN_GRACE = 30.0
#: Signals (offer/answer/reject) one peer may send: a burst, then a rate per second.
SIGNAL_BURST = 32
SIGNAL_RATE = 10.0
#: A byte figure of a stats report is at most this rate since the join, plus the slack.
MAX_REPORT_RATE = 64 * 1024 * 1024
REPORT_SLACK = 64 * 1024 * 1024
STATS_INTERVAL = 2.0
ROOM_ID_LENGTH = 22

_PEER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROOM_RE = re.compile(r"[A-Za-z0-9_-]{22}")


def room_id(url: str) -> str:
    """The room of a source URL: of its `normalise_url` form, so that spellings that fetch
    the same stream (``HTTP://Host:80/x`` and ``http://host/x``) share one room."""
    # base64url as `xp2p.auth.b64url_encode` makes it, spelled out: auth needs cryptography.
    digest = base64.urlsafe_b64encode(hashlib.sha256(normalise_url(url).encode()).digest())
    return digest.rstrip(b"=").decode("ascii")[:ROOM_ID_LENGTH]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_url(url: str) -> str:
    """``url`` with its scheme and host in lower case, the scheme's default port dropped, an
    empty path made ``/`` and the fragment (never sent to a server) removed. Query and path
    are kept as they are: a server may tell ``?a=1&b=2`` from ``?b=2&a=1``. A URL that does
    not parse is returned as it is (the join refuses it before it matters). A device URL is
    canonical already, and case-sensitive: it stays as it is."""
    if is_device_url(url):
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return url  # no host: nothing to key, and the join refuses it
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def url_origin(url: str) -> str:
    """``scheme://host:port`` of an http(s) URL, normalised (the port always written), the
    unit `allowed_sources` lists; "" when it does not parse."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port if port is not None else _DEFAULT_PORTS[scheme]}"


def redact_url(url: str) -> str:
    """``url`` fit for logs and stats: no userinfo, no query values (names stay, so a
    reader can tell ``?token=`` sources apart), no fragment. A device URL holds no secret
    and is shown whole."""
    if is_device_url(url):
        try:
            return str(parse_device_url(url))
        except ValueError:
            return "<malformed url>"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<malformed url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    names = [field.partition("=")[0] for field in parts.query.split("&") if field]
    query = "&".join(f"{quote(unquote(n), safe='')}=" for n in names)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_room_id(text: str) -> bool:
    return _ROOM_RE.fullmatch(text) is not None


def is_peer_id(text: object) -> bool:
    return isinstance(text, str) and _PEER_ID_RE.fullmatch(text) is not None
