"""The viewer's HTTP and WebSocket client of a swarm edge (`xp2p.swarm.edge_routes`).

HTTP requests are app-signed like the app API; the control WebSocket is authenticated by the
peer token alone. Every failure is a `CloudError` (``status`` 0 when the edge could not be
reached or did not answer in time), so callers handle edge and cloud failures alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from xp2p.swarm import Chunk, InitChunk, decode_item
from xp2p.swarm.edge_messages import JoinRequest, JoinResponse, LiveInfo, MessageError
from xp2p.swarm.edge_routes import API, JOIN_PATH, MAX_CHUNK_WAIT, MAX_WS_FRAME
from xp2p.swarm.wire import MAX_PAYLOAD, ChunkFormatError, ChunkProof
from xp2p.viewer.cloud_client import CloudError, SignedClient

#: A wire item is the payload plus a header and a proof of well under a KiB.
MAX_ITEM_BYTES = MAX_PAYLOAD + 1024
MAX_JSON_BYTES = 256 * 1024


def pick_edge(edge_urls: tuple[str, ...], room: str) -> str:
    """Rendezvous hashing of the room id over the edges: every viewer of a room reaches the
    same edge (the contract requires it), and removing one edge moves only its rooms."""
    if len(edge_urls) == 1:
        return edge_urls[0]
    return max(edge_urls, key=lambda url: hashlib.sha256(f"{url}\n{room}".encode()).digest())


class EdgeClient(SignedClient):
    """One viewer's client of one edge; owns its aiohttp session."""

    server = "the edge"

    # ---- API ------------------------------------------------------------------------

    async def join(self, request: JoinRequest) -> JoinResponse:
        status, raw = await self._request("POST", JOIN_PATH, json.dumps(request.to_json()).encode())
        try:
            return JoinResponse.from_json(_json(status, raw))
        except MessageError as exc:
            raise CloudError(status, "bad_response", f"malformed join answer: {exc}") from None

    async def live(self, room: str) -> LiveInfo:
        status, raw = await self._request("GET", f"{_room(room)}/live")
        try:
            return LiveInfo.from_json(_json(status, raw))
        except MessageError as exc:
            raise CloudError(status, "bad_response", f"malformed live answer: {exc}") from None

    async def init(self, room: str) -> tuple[InitChunk, ChunkProof, bytes]:
        """The current init chunk, its proof and its wire form (not yet verified)."""
        status, raw = await self._request("GET", f"{_room(room)}/init", limit=MAX_ITEM_BYTES)
        item, proof = _item(status, raw)
        if not isinstance(item, InitChunk):
            raise CloudError(status, "bad_response", "the edge's init is not an init chunk")
        return item, proof, raw

    async def chunk(
        self, room: str, seq: int, wait: float = 0.0
    ) -> tuple[Chunk, ChunkProof, bytes]:
        """Chunk ``seq``, its proof and wire form (not yet verified); CloudError 404
        ``not_yet`` or 410 ``gone`` when the edge has not cut it or no longer keeps it."""
        path = f"{_room(room)}/chunks/{seq}"
        wait = min(max(wait, 0.0), MAX_CHUNK_WAIT)
        if wait > 0:
            path += f"?wait={wait:g}"
        status, raw = await self._request(
            "GET", path, limit=MAX_ITEM_BYTES, timeout=self.timeout + wait
        )
        item, proof = _item(status, raw)
        if not isinstance(item, Chunk):
            raise CloudError(status, "bad_response", "the edge's chunk is an init chunk")
        return item, proof, raw

    async def control(self, room: str, peer_id: str, token: str) -> aiohttp.ClientWebSocketResponse:
        """The room's control WebSocket (closing it leaves the room)."""
        path = f"{_room(room)}/ws?peer_id={quote(peer_id, safe='')}"
        try:
            return await self.session.ws_connect(
                URL(self.base_url + path, encoded=True),
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                heartbeat=10.0,
                max_msg_size=MAX_WS_FRAME,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise CloudError(exc.status, "ws_refused", f"control channel refused: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CloudError(0, "unreachable", f"cannot reach the edge: {exc}") from None

    # ---- transport ------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        limit: int = MAX_JSON_BYTES,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        status, raw = await self._fetch(method, path, body, limit=limit, timeout=timeout)
        if status >= 400:
            raise _error(status, raw)
        return status, raw


def _room(room: str) -> str:
    return f"{API}/rooms/{quote(room, safe='')}"


def _json(status: int, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise CloudError(status, "bad_response", "the edge's answer is not a JSON object")
    return doc


def _item(status: int, raw: bytes) -> tuple[Chunk | InitChunk, ChunkProof]:
    try:
        return decode_item(raw)
    except ChunkFormatError as exc:
        raise CloudError(status, "bad_response", f"malformed chunk from the edge: {exc}") from None


def _error(status: int, raw: bytes) -> CloudError:
    """The edge's error body: ``{"error": {"code", "message"}}`` and/or top-level fields."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        inner = doc.get("error")
        source = inner if isinstance(inner, dict) else doc
        code, message = source.get("code"), source.get("message")
        if isinstance(code, str):
            return CloudError(status, code, message if isinstance(message, str) else "")
    return CloudError(status, "bad_response", f"HTTP {status} without an error body")
