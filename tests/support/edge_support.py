"""What the edge and origin tests share: an app-signed client of the edge, FLV helpers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from xp2p.auth import sign_request
from xp2p.flv import FlvReader, FlvTag
from xp2p.swarm import Chunk, InitChunk, decode_item, peer_token, verify
from xp2p.swarm import edge_messages as messages
from xp2p.swarm import edge_routes as routes

APP_KEY = "edge-app"
APP_SECRET = "edge-app-secret-16+"
FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")
FINGERPRINT = "F" * 43
PROBE_ARGS = "-v error -select_streams v:0 -count_frames -of json -show_entries".split()
PROBE_ARGS.append("stream=codec_name,nb_read_frames")


class EdgeClient:
    """One app's signed requests to an edge, answers as (status, JSON or bytes)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        headers = sign_request(APP_KEY, APP_SECRET, method, path, data)
        async with self.http.request(method, self.base + path, data=data, headers=headers) as r:
            payload = await r.read()
            if r.content_type == "application/json":
                return r.status, json.loads(payload)
            return r.status, payload

    async def join(
        self, url: str, *, upload: bool = True, nat: str = "open"
    ) -> messages.JoinResponse:
        status, doc = await self.request(
            "POST",
            routes.JOIN_PATH,
            {"url": url, "upload": upload, "fingerprint": FINGERPRINT, "nat_type": nat},
        )
        assert status == 200, doc
        return messages.JoinResponse.from_json(doc)

    async def live(self, room: str) -> messages.LiveInfo:
        status, doc = await self.request("GET", f"{routes.API}/rooms/{room}/live")
        assert status == 200, doc
        return messages.LiveInfo.from_json(doc)

    async def item(self, room: str, what: str) -> tuple[int, Any]:
        return await self.request("GET", f"{routes.API}/rooms/{room}/{what}")

    async def verified(self, join: messages.JoinResponse, what: str) -> Chunk | InitChunk:
        status, data = await self.item(join.room, what)
        assert status == 200, data
        item, proof = decode_item(data)
        assert verify(item, proof, peer_token.parse_edge_key(join.edge_key))
        assert item.stream_id == join.stream_id
        return item

    def ws(self, join: messages.JoinResponse) -> Any:
        path = f"{routes.API}/rooms/{join.room}/ws"
        return self.http.ws_connect(
            self.base + path,
            params={"peer_id": join.peer_id},
            headers={"Authorization": f"Bearer {join.token}"},
        )


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10.0) -> Any:
    """The next frame of type ``kind`` (others are skipped)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        doc = json.loads(msg.data)
        if doc["type"] == kind:
            return doc


def flv_tags(data: bytes) -> list[FlvTag]:
    reader = FlvReader()
    return [t for t in reader.feed(data) if isinstance(t, FlvTag)]


def ffprobe_frames(data: bytes, path: Path) -> tuple[str, int]:
    """(video codec, decoded video frames) of an FLV file; fails on any decode error."""
    path.write_bytes(data)
    result = subprocess.run(
        [FFPROBE or "ffprobe", *PROBE_ARGS, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stderr.strip() == "", result.stderr
    stream = json.loads(result.stdout)["streams"][0]
    return stream["codec_name"], int(stream["nb_read_frames"])
