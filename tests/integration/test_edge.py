"""The 1vN edge end to end on loopback: a real origin (`xp2p origin`'s server), the edge inside
a real cloud (and standalone), requests signed as a real app, viewers' WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.edge_support import (
    APP_KEY,
    APP_SECRET,
    FFPROBE,
    EdgeClient,
    ffprobe_frames,
    flv_tags,
    next_of,
)
from xp2p.cloud import AppConfig, CloudConfig, CloudServer
from xp2p.cloud.edge import EdgeConfig, EdgeServer
from xp2p.device.http_origin import OriginServer
from xp2p.flv import FlvTag
from xp2p.media import TestPatternConfig, TestPatternSource, make_test_flv
from xp2p.swarm import Chunk, InitChunk, StreamAssembler, peer_token
from xp2p.swarm import edge_messages as messages
from xp2p.swarm import edge_routes as routes

PATTERN = TestPatternConfig(width=320, height=180, fps=25, bitrate=300_000, gop=25)
EDGE = EdgeConfig(port=0, linger=1.5, stall_timeout=1.0, give_up=30.0)


def _cloud_config() -> CloudConfig:
    return CloudConfig(port=0, stun_port=0, apps=(AppConfig(APP_KEY, APP_SECRET),))


@pytest.fixture
async def origin() -> AsyncIterator[OriginServer]:
    async with OriginServer(lambda: TestPatternSource(PATTERN)) as server:
        yield server


@pytest.fixture
async def cloud(origin: OriginServer) -> AsyncIterator[CloudServer]:
    # The origin is on loopback: the edge pulls it because its config lists it (item 2).
    edge = dataclasses.replace(EDGE, allowed_sources=(origin.url,))
    async with CloudServer(_cloud_config(), edge=edge) as server:
        yield server


@pytest.fixture
async def client(cloud: CloudServer) -> AsyncIterator[EdgeClient]:
    async with aiohttp.ClientSession() as http:
        yield EdgeClient(http, cloud.url)


async def _until(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state another task changes
            await asyncio.sleep(0.05)


async def _live_from(client: EdgeClient, room: str, chunks: int) -> messages.LiveInfo:
    """Wait for a keyframe chunk and ``chunks`` more after it; that keyframe chunk is the
    answer's ``keyframe_seq`` (newer ones may have been cut meanwhile)."""
    keyframe: int | None = None
    async with asyncio.timeout(20):
        while True:
            live = await client.live(room)
            keyframe = live.keyframe_seq if keyframe is None else keyframe
            if keyframe is not None and live.live_seq is not None:
                if live.live_seq >= keyframe + chunks:
                    return dataclasses.replace(live, keyframe_seq=keyframe)
            await asyncio.sleep(0.2)


# --- one pull, signed chunks, the stream rebuilt ------------------------------------------------


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
async def test_one_pull_for_many_viewers_and_chunks_rebuild_the_origin_stream(
    origin: OriginServer, cloud: CloudServer, client: EdgeClient, tmp_path: Path
) -> None:
    # What the origin fans out, tag for tag, recorded in process (not a second HTTP pull).
    start, recording = origin.channel.subscribe()
    served: list[FlvTag] = flv_tags(start)

    async def record() -> None:
        while batch := await recording.next_batch():
            served.extend(batch)

    recorder = asyncio.create_task(record())
    joins = await asyncio.gather(*(client.join(origin.url, upload=i % 2 == 0) for i in range(6)))
    assert len({(j.room, j.stream_id, j.edge_key) for j in joins}) == 1
    join = joins[0]
    assert join.room == routes.room_id(origin.url) and join.chunk_ms == EDGE.chunk_ms
    async with contextlib.AsyncExitStack() as stack:
        for j in joins:
            await stack.enter_async_context(client.ws(j))
        live = await _live_from(client, join.room, 8)
        assert origin.connections == 1 and origin.active == 1
        assert cloud.edge is not None and cloud.edge.rooms[join.room].stats().online == 6

        init = await client.verified(join, "init")
        assert isinstance(init, InitChunk) and init.init_id == live.init_id
        seqs = range(live.keyframe_seq or 0, (live.keyframe_seq or 0) + 8)
        chunks = [await client.verified(join, f"chunks/{seq}?wait=3") for seq in seqs]
    recording.close()
    await recorder
    assert all(isinstance(c, Chunk) for c in chunks)
    first = chunks[0]
    assert isinstance(first, Chunk) and first.keyframe_start

    assembler = StreamAssembler(join.stream_id)
    assembler.add_init(init)
    flv = b"".join(assembler.push(c) for c in chunks if isinstance(c, Chunk))
    assert assembler.stalls == 0 and assembler.skipped == 0
    tags = flv_tags(flv)
    init_tags = init.tags()
    assert [t.encode() for t in tags[: len(init_tags)]] == [t.encode() for t in init_tags]
    start_tags = {t.encode() for t in flv_tags(start)}
    assert all(t.encode() in start_tags for t in init_tags)  # the origin's own headers
    media = tags[len(init_tags) :]
    served_bytes = [t.encode() for t in served]
    at = served_bytes.index(media[0].encode())
    assert [t.encode() for t in media] == served_bytes[at : at + len(media)]

    codec, frames = await asyncio.to_thread(ffprobe_frames, flv, tmp_path / "edge.flv")
    assert codec == "h264" and frames == sum(1 for t in media if t.is_video)


async def test_edge_key_is_the_clouds_grant_key(cloud: CloudServer, origin: OriginServer) -> None:
    async with aiohttp.ClientSession() as http:
        join = await EdgeClient(http, cloud.url).join(origin.url)
    assert peer_token.parse_edge_key(join.edge_key) == cloud.grant_public_key


# --- linger, stalls, sources that are not FLV ---------------------------------------------------


async def test_room_stops_pulling_linger_after_the_last_viewer_leaves(
    origin: OriginServer, cloud: CloudServer, client: EdgeClient
) -> None:
    first = [await client.join(origin.url) for _ in range(2)]
    async with client.ws(first[0]), client.ws(first[1]):
        await _until(lambda: origin.active == 1)
    await asyncio.sleep(0.3)  # well inside the 1.5 s linger: still pulling
    assert origin.active == 1 and cloud.edge is not None and first[0].room in cloud.edge.rooms
    await _until(lambda: origin.active == 0)
    assert first[0].room not in cloud.edge.rooms
    status, doc = await client.request("GET", f"{routes.API}/rooms/{first[0].room}/live")
    assert (status, doc["code"]) == (404, "unknown_room")
    again = await client.join(origin.url)  # a new pull, a new stream session
    assert origin.connections == 2 and again.stream_id != first[0].stream_id


class FlakySource:
    """An HTTP-FLV server that sends its whole FLV at once, then falls silent (a stall)."""

    def __init__(self, data: bytes, *, content_type: str = "video/x-flv") -> None:
        self.data = data
        self.content_type = content_type
        self.connections = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        await response.prepare(request)
        await response.write(self.data)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return response

    async def __aenter__(self) -> FlakySource:
        app = web.Application()
        app.router.add_get("/x.flv", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/x.flv"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_stalled_source_is_reported_and_pulled_again(
    cloud: CloudServer, client: EdgeClient
) -> None:
    data = await asyncio.to_thread(make_test_flv, 2.0, PATTERN)
    async with FlakySource(data) as source:
        assert cloud.edge is not None
        cloud.edge.allow_source(source.url)
        join = await client.join(source.url)
        async with client.ws(join) as ws:
            assert (await next_of(ws, "state"))["state"] in ("starting", "live")
            before = await _live_from(client, join.room, 2)
            assert (await next_of(ws, "state"))["state"] == "stalled"
            assert (await client.live(join.room)).state == "stalled"
            assert (await next_of(ws, "state"))["state"] == "live"
        after = await client.live(join.room)
    assert source.connections >= 2
    assert after.stream_id == before.stream_id and after.init_id == 1
    assert after.live_seq is not None and before.live_seq is not None
    assert after.live_seq > before.live_seq
    # The reconnected stream goes on after the last chunk of the first pull, at a keyframe.
    assert after.keyframe_seq is not None and after.keyframe_seq > before.live_seq
    resumed = await client.verified(join, f"chunks/{after.keyframe_seq}")
    assert isinstance(resumed, Chunk) and resumed.keyframe_start and resumed.init_id == 1


async def test_a_source_that_is_not_flv_is_a_502(cloud: CloudServer, client: EdgeClient) -> None:
    assert cloud.edge is not None
    async with FlakySource(b"<html>hello</html>" * 10, content_type="text/html") as source:
        cloud.edge.allow_source(source.url)
        status, doc = await client.request(
            "POST", routes.JOIN_PATH, {"url": source.url, "upload": True, "fingerprint": "F" * 43}
        )
    # What answered stays in the edge's log: the joiner learns nothing about it (item 2).
    assert (status, doc["code"]) == (502, "source_unreachable")
    assert doc["error"]["code"] == "source_unreachable"
    assert doc["message"] == "source unavailable"
    assert not cloud.edge.rooms  # nothing left behind
    cloud.edge.allow_source("http://127.0.0.1:9")
    status, doc = await client.request(
        "POST", routes.JOIN_PATH, {"url": "http://127.0.0.1:9/x.flv", "upload": True,
                                "fingerprint": "F" * 43},
    )  # fmt: skip
    assert (status, doc["code"]) == (502, "source_unreachable")
    assert doc["message"] == "source unavailable"


# --- bad input ----------------------------------------------------------------------------------


async def test_bad_requests_get_specific_errors(origin: OriginServer, client: EdgeClient) -> None:
    def body(url: object, **extra: object) -> dict[str, object]:
        return {"url": url, "upload": True, "fingerprint": "F" * 43, **extra}

    cases: list[tuple[object, int, str, str]] = [
        (body("ftp://127.0.0.1/x.flv"), 400, "bad_request", "http:// or https://"),
        (body("http://127.0.0.1/" + "x" * 2100), 400, "bad_request", "over 2048 bytes"),
        (body("http://[::1/x.flv"), 400, "bad_request", "malformed"),
        (body(origin.url, upload="yes"), 400, "bad_request", "upload"),
        (body(origin.url, nat_type="martian"), 400, "bad_request", "nat_type"),
        ({"url": origin.url, "upload": True}, 400, "bad_request", "fingerprint"),
    ]
    for doc, status, code, words in cases:
        got, answer = await client.request("POST", routes.JOIN_PATH, doc)
        assert (got, answer["code"]) == (status, code), (doc, answer)
        assert words in answer["message"]
    got, answer = await client.request(
        "POST", routes.JOIN_PATH + f"?room={'A' * 22}", body(origin.url)
    )
    assert (got, answer["code"]) == (400, "bad_request") and "query" in answer["message"]
    routed = routes.JOIN_PATH + f"?room={routes.room_id(origin.url)}"
    assert (await client.request("POST", routed, body(origin.url)))[0] == 200
    got, answer = await client.request("POST", routes.JOIN_PATH, raw=b"\xff{not json")
    assert (got, answer["code"], answer["message"]) == (400, "bad_request", "not valid JSON")
    async with client.http.post(client.base + routes.JOIN_PATH, json=body(origin.url)) as r:
        assert (r.status, (await r.json())["code"]) == (401, "missing_auth")

    join = await client.join(origin.url)
    rooms = f"{routes.API}/rooms"
    for path, status, code in [
        (f"{rooms}/{'A' * 22}/live", 404, "unknown_room"),
        (f"{rooms}/not-a-room/live", 400, "bad_request"),
        (f"{rooms}/{join.room}/chunks/x1", 400, "bad_request"),
        (f"{rooms}/{join.room}/chunks/{2**64}", 400, "bad_request"),
        (f"{rooms}/{join.room}/chunks/1?wait=9", 400, "bad_request"),
        (f"{rooms}/{join.room}/chunks/123456789?wait=3", 404, "not_yet"),
    ]:
        got, answer = await client.request("GET", path)
        assert (got, answer["code"]) == (status, code), (path, answer)


async def test_standalone_edge_and_too_many_rooms(origin: OriginServer) -> None:
    config = EdgeConfig(port=0, max_rooms=1, allowed_sources=(origin.url,))
    async with EdgeServer(_cloud_config(), config) as edge, aiohttp.ClientSession() as http:
        client = EdgeClient(http, edge.url)
        first = await client.join(origin.url)
        ws = await client.ws(first)  # the room counts once a viewer's WebSocket is open
        status, doc = await client.request(
            "POST", routes.JOIN_PATH, {"url": origin.url + "?other", "upload": False,
                                    "fingerprint": "F" * 43},
        )  # fmt: skip
        assert (status, doc["code"]) == (503, "too_many_rooms")
        async with http.get(edge.url + "/nowhere") as r:
            assert (r.status, (await r.json())["code"]) == (404, "not_found")
        await ws.close()
    assert origin.connections == 1


# --- the WebSocket: signalling, refusals, stats --------------------------------------------------


async def test_signalling_relays_offer_and_answer_within_a_room_only(
    origin: OriginServer, cloud: CloudServer, client: EdgeClient
) -> None:
    a = await client.join(origin.url)
    b = await client.join(origin.url)
    other = await client.join(origin.url + "?room=2")
    assert other.room != a.room
    offer = {"ufrag": "x", "candidates": ["candidate:1 1 udp 1 127.0.0.1 5000 typ host"]}
    async with client.ws(a) as ws_a, client.ws(b) as ws_b, client.ws(other) as ws_o:
        await ws_a.send_json({"type": "offer", "to": b.peer_id, "request_id": "r1", "offer": offer})
        got = await next_of(ws_b, "offer")
        assert got == {"type": "offer", "from": a.peer_id, "request_id": "r1", "offer": offer}
        await ws_b.send_json({"type": "answer", "to": a.peer_id, "request_id": "r1", "answer": {}})
        assert await next_of(ws_a, "answer") == {
            "type": "answer", "from": b.peer_id, "request_id": "r1", "answer": {},
        }  # fmt: skip
        await ws_a.send_json({"type": "reject", "to": b.peer_id, "request_id": 7, "reason": "no"})
        assert (await next_of(ws_b, "reject"))["reason"] == "no"

        # A peer of another room is not reachable from this one, nor is one's own id.
        for to in (other.peer_id, a.peer_id, "nobody"):
            await ws_a.send_json({"type": "offer", "to": to, "request_id": "r2", "offer": {}})
            error = await next_of(ws_a, "error")
            assert error["code"] == "unknown_peer" and to in error["message"]
        await ws_a.send_str("x" * (routes.MAX_WS_FRAME + 1))
        assert (await next_of(ws_a, "error"))["code"] == "frame_too_large"
        await ws_a.send_str("{garbage")
        assert (await next_of(ws_a, "error"))["message"] == "not valid JSON"
        await ws_a.send_json({"type": "teleport"})
        assert (await next_of(ws_a, "error"))["code"] == "unknown_type"
        await ws_a.send_json({"type": "stats", "p2p_bytes": -1})
        assert (await next_of(ws_a, "error"))["code"] == "bad_request"
        assert not ws_o.closed
    assert cloud.edge is not None  # the shared server is still serving
    assert (await client.live(a.room)).state in ("starting", "live")


async def test_websocket_refuses_bad_tokens(origin: OriginServer, client: EdgeClient) -> None:
    a = await client.join(origin.url)
    b = await client.join(origin.url)
    other = await client.join(origin.url + "?room=3")
    path = client.base + f"{routes.API}/rooms/{a.room}/ws"
    for peer_id, token, reason in [
        (a.peer_id, b.token, "another peer"),  # B's genuine token, A's id
        (a.peer_id, other.token, "wrong_room"),  # A's... other room's token
        (a.peer_id, a.token[:-4] + "AAAA", "bad_signature"),
        (a.peer_id, "garbage", "malformed"),
    ]:
        bearer = {"Authorization": f"Bearer {token}"}
        async with client.http.get(path, params={"peer_id": peer_id}, headers=bearer) as r:
            doc = await r.json()
            assert (r.status, doc["code"]) == (401, "bad_token") and reason in doc["message"]
    async with client.http.get(path, params={"peer_id": a.peer_id}) as r:
        doc = await r.json()
        assert (r.status, doc["code"]) == (401, "bad_token") and "Bearer" in doc["message"]
    # A token in the URL would land in access logs: refused even when genuine.
    async with client.http.get(path, params={"peer_id": a.peer_id, "token": a.token}) as r:
        doc = await r.json()
        assert (r.status, doc["code"]) == (400, "bad_request")
        assert "Authorization header" in doc["message"]


async def test_stats_count_cdn_bytes_and_peer_reports(
    origin: OriginServer, client: EdgeClient
) -> None:
    join = await client.join(origin.url)
    async with client.ws(join) as ws:
        live = await _live_from(client, join.room, 2)
        served = 0
        for what in ("init", f"chunks/{live.keyframe_seq}", f"chunks/{live.live_seq}"):
            status, data = await client.item(join.room, what)
            assert status == 200
            served += len(data)
        report = {"type": "stats", "p2p_bytes": 5000, "cdn_bytes": served, "uploaded_bytes": 7,
                  "stalls": 1, "neighbours": 0}  # fmt: skip
        await ws.send_json(report)
        await ws.send_json({"type": "need_neighbours", "exclude": []})
        await next_of(ws, "neighbours")  # answered after the stats were taken
        status, doc = await client.request("GET", routes.STATS_PATH)
    assert status == 200
    (room,) = doc["rooms"]
    assert room["room"] == join.room and room["url"] == origin.url
    assert room["cdn_bytes"] == served and room["requests_ok"] == 3
    assert (room["online"], room["p2p_bytes"], room["stalls"]) == (1, 5000, 1)
    assert 0 < room["edge_egress_copies"] < 1


async def test_neighbours_are_uploaders_and_leavers_are_replaced(
    origin: OriginServer, client: EdgeClient
) -> None:
    uploaders = [await client.join(origin.url) for _ in range(3)]
    watcher = await client.join(origin.url, upload=False)
    assert {n.peer_id for n in watcher.neighbours} == {u.peer_id for u in uploaders}
    async with contextlib.AsyncExitStack() as stack:
        sockets = {}
        for j in [*uploaders, watcher]:
            sockets[j.peer_id] = await stack.enter_async_context(client.ws(j))
        first = await next_of(sockets[watcher.peer_id], "neighbours")
        assert len(first["neighbours"]) == 3
        late = await client.join(origin.url)
        assert watcher.peer_id not in {n.peer_id for n in late.neighbours}
        # The watcher, short of neighbours, is topped up with the new uploader at once...
        update = await next_of(sockets[watcher.peer_id], "neighbours")
        assert {n["peer_id"] for n in update["neighbours"]} == {
            *(u.peer_id for u in uploaders),
            late.peer_id,
        }
        # ...and loses the one that leaves, with no one left to replace it.
        await sockets[uploaders[0].peer_id].close()
        update = await next_of(sockets[watcher.peer_id], "neighbours")
        ids = {n["peer_id"] for n in update["neighbours"]}
        assert ids == {uploaders[1].peer_id, uploaders[2].peer_id, late.peer_id}


async def test_edge_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text(
        '[cloud]\nport = 0\n[[cloud.apps]]\nkey = "a"\nsecret = "aaaaaaaaaaaaaaaa"\n'
        '[edge]\nlinger = 3.5\nsource_ca_file = "ca.pem"\n'
    )
    config = EdgeConfig.from_toml(path)
    assert config.linger == 3.5 and config.source_ca_file == tmp_path / "ca.pem"
    assert CloudConfig.from_toml(path).apps[0].key == "a"
    path.write_text("port = 0\n[edge]\nlingr = 1\n")
    with pytest.raises(ValueError, match=r"edge\.lingr: unknown setting"):
        EdgeConfig.from_toml(path)
    assert json.dumps(messages.error_body("x", "y"))  # the error shape serialises


def test_allow_source_flag_adds_to_the_configs_list(tmp_path: Path) -> None:
    from xp2p.cli import build_parser
    from xp2p.cli.edge import edge_config

    path = tmp_path / "cloud.toml"
    path.write_text('[edge]\nallowed_sources = ["http://127.0.0.1:8081"]\n')
    args = build_parser().parse_args(
        ["edge", "--config", str(path), "--allow-source", "https://127.0.0.1:8443"]
    )
    config = edge_config(args)
    assert config.allowed_sources == ("http://127.0.0.1:8081", "https://127.0.0.1:8443")
    args = build_parser().parse_args(["edge", "--config", str(path), "--allow-source", "x"])
    with pytest.raises(SystemExit, match=r"edge\.allowed_sources"):
        edge_config(args)
