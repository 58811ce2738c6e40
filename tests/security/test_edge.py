"""Attacks on the 1vN edge (issue 10, items 2, 6, 7 and 12), against the real servers on
loopback and, where memory is the point, a real ``xp2p edge`` process.

Item 2: a signed join makes the edge fetch internal URLs (loopback in every spelling, the
private and link-local ranges, the cloud's own ``/healthz``, a redirect into loopback) and its
errors say what answered; another app reads the room. Item 6: joins that never open their
WebSocket take every room slot; a hostile source (FLV with frozen timestamps) grows the edge's
memory. Item 7: a burst of offers to one peer id closes the victim's channel; a stats report of
2^62 bytes enters the room's statistics. Item 12: stats show other apps' rooms and source URLs
with their tokens, logs carry them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.edge_support import APP_KEY, APP_SECRET, EdgeClient, next_of
from tests.support.procs import Proc, free_port
from tests.support.waiting import wait_until
from xp2p.auth import sign_request
from xp2p.cloud import AppConfig, CloudConfig, CloudServer
from xp2p.cloud.config import ConfigError
from xp2p.cloud.edge import EdgeConfig, EdgeServer
from xp2p.cloud.edge.policy import SourcePolicy
from xp2p.device.http_origin import OriginServer
from xp2p.flv import FlvHeader, FlvTag
from xp2p.media import TestPatternConfig, TestPatternSource
from xp2p.swarm import edge_messages as messages
from xp2p.swarm import edge_routes as routes

PATTERN = TestPatternConfig(width=160, height=96, fps=10, bitrate=100_000, gop=10)
OTHER_KEY, OTHER_SECRET = "other-app", "other-app-secret-16+"
SHARED_KEY, SHARED_SECRET = "shared-app", "shared-app-secret-16+"
BODY = {"upload": True, "fingerprint": "F" * 43, "nat_type": "open"}


class Canary:
    """An HTTP server on loopback that counts whoever reaches it (it must stay at 0), and a
    redirect to wherever the test says."""

    def __init__(self) -> None:
        self.hits = 0
        self.redirect_to = ""
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _any(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/redirect":
            raise web.HTTPFound(self.redirect_to)
        self.hits += 1
        return web.json_response({"internal": "secret"})

    async def __aenter__(self) -> Canary:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class AppClient(EdgeClient):
    """EdgeClient signing as another app."""

    def __init__(self, http: aiohttp.ClientSession, base: str, key: str, secret: str) -> None:
        super().__init__(http, base)
        self.key, self.secret = key, secret

    async def request(
        self, method: str, path: str, body: object = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        headers = sign_request(self.key, self.secret, method, path, data)
        async with self.http.request(method, self.base + path, data=data, headers=headers) as r:
            payload = await r.read()
            if r.content_type == "application/json":
                return r.status, json.loads(payload)
            return r.status, payload


def _apps() -> tuple[AppConfig, ...]:
    return (
        AppConfig(APP_KEY, APP_SECRET, ("DEMO",)),
        AppConfig(OTHER_KEY, OTHER_SECRET, ("OTHER",)),
        AppConfig(SHARED_KEY, SHARED_SECRET, ("DEMO",)),
    )


@pytest.fixture
async def origin() -> AsyncIterator[OriginServer]:
    async with OriginServer(lambda: TestPatternSource(PATTERN)) as server:
        yield server


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with Canary() as server:
        yield server


@pytest.fixture
async def cloud(origin: OriginServer, canary: Canary) -> AsyncIterator[CloudServer]:
    edge = EdgeConfig(
        linger=0.5,
        allowed_sources=(origin.url, f"http://127.0.0.1:{canary.port}"),
        source_products=((origin.url, "DEMO"),),
    )
    config = CloudConfig(port=0, stun_port=0, apps=_apps())
    async with CloudServer(config, edge=edge) as server:
        yield server


# --- item 2: SSRF ------------------------------------------------------------------------------


async def test_internal_sources_are_refused_and_errors_map_nothing(
    cloud: CloudServer, canary: Canary, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xp2p.edge")
    probe = free_port()  # nothing listens: only the refusal can answer
    cloud_port = int(cloud.url.rsplit(":", 1)[1])
    urls = [
        f"http://{host}:{probe}/x.flv"
        for host in (
            "127.0.0.1", "localhost", "0x7f000001", "2130706433", "[::1]", "[::ffff:127.0.0.1]",
            "10.0.0.1", "169.254.169.254", "224.0.0.1", "100.64.0.1", "0.0.0.0",
        )
    ]  # fmt: skip
    urls.append(f"http://127.0.0.1:{cloud_port}/healthz")  # the cloud's own
    urls.append(f"http://localhost:{canary.port}/x.flv")  # the canary, but not as listed
    canary.redirect_to = f"http://127.0.0.1:{free_port()}/x.flv"
    async with aiohttp.ClientSession() as http:
        client = EdgeClient(http, cloud.url)
        answers = [await client.request("POST", routes.JOIN_PATH, {"url": u, **BODY}) for u in urls]
        # The listed origin redirects to loopback elsewhere, and to a TEST-NET host: refused
        # at the redirect (the target is checked like a first URL).
        redirects: list[tuple[int, Any]] = []
        for target in (canary.redirect_to, "http://192.0.2.1/x.flv", "http://169.254.169.254/"):
            canary.redirect_to = target
            redirects.append(
                await client.request(
                    "POST",
                    routes.JOIN_PATH,
                    {"url": f"http://127.0.0.1:{canary.port}/redirect?{len(redirects)}", **BODY},
                )
            )
    refused = (403, "source_refused", "source refused")
    for url, (status, doc) in zip(urls, answers, strict=True):
        assert (status, doc["code"], doc["message"]) == refused, url
    for status, doc in redirects:
        assert (status, doc["code"], doc["message"]) == refused
    assert canary.hits == 0
    assert cloud.edge is not None
    await wait_until(lambda: not cloud.edge or not cloud.edge.rooms, 5, what="rooms freed")
    text = caplog.text
    assert "refused" in text and "redirect 1 refused" in text
    assert " object at 0x" not in text and "ClientConnectorError(" not in text
    print(f"\nSSRF: {len(urls) + len(redirects)} joins sent, all 403; canary hits {canary.hits}")


async def test_dns_rebinding_reaches_nothing_at_the_connect(
    cloud: CloudServer, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check saw a public answer; the connect resolves the name again and gets
    127.0.0.1 (``localhost`` stands for the rebinding name): the edge's resolver drops it."""

    async def saw_public(self: SourcePolicy, url: str) -> None:
        return None

    monkeypatch.setattr(SourcePolicy, "check", saw_public)
    url = f"http://localhost:{canary.port}/x.flv"
    async with aiohttp.ClientSession() as http:
        client = EdgeClient(http, cloud.url)
        status, doc = await client.request("POST", routes.JOIN_PATH, {"url": url, **BODY})
        assert (status, doc["code"], doc["message"]) == (
            502,
            "source_unreachable",
            "source unavailable",
        )
        assert canary.hits == 0
        # Control: listed, the same name reaches the canary (so the resolver did resolve it).
        assert cloud.edge is not None
        cloud.edge.allow_source(url)
        status, doc = await client.request("POST", routes.JOIN_PATH, {"url": url, **BODY})
    assert status == 502 and canary.hits == 1  # reached; it answers JSON, not FLV


async def test_a_failing_listed_source_says_only_unavailable(
    cloud: CloudServer, canary: Canary
) -> None:
    async with aiohttp.ClientSession() as http:
        client = EdgeClient(http, cloud.url)
        status, doc = await client.request(
            "POST", routes.JOIN_PATH, {"url": f"http://127.0.0.1:{canary.port}/x.flv", **BODY}
        )
    # The canary answered JSON ("not FLV (application/json)" before): now nothing of it.
    assert (status, doc["code"], doc["message"]) == (
        502,
        "source_unreachable",
        "source unavailable",
    )
    assert "json" not in json.dumps(doc) and "internal" not in json.dumps(doc)


async def test_a_room_is_its_apps_and_stats_are_scoped_and_redacted(
    cloud: CloudServer, origin: OriginServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    private = f"http://user:pa%40ss@127.0.0.1:{origin.port}{origin.path}?token=SECRET-TOKEN"
    # The same listed origin (so the same product, DEMO), with userinfo and a query token.
    async with aiohttp.ClientSession() as http:
        owner = EdgeClient(http, cloud.url)
        other = AppClient(http, cloud.url, OTHER_KEY, OTHER_SECRET)
        shared = AppClient(http, cloud.url, SHARED_KEY, SHARED_SECRET)
        demo = await owner.join(origin.url)  # the origin's rooms are product DEMO's
        secret_room = await owner.join(private)  # its product too: same origin
        # OTHER is not allowed DEMO: no join, no chunks, no live info, no stats.
        status, doc = await other.request("POST", routes.JOIN_PATH, {"url": origin.url, **BODY})
        assert (status, doc["code"]) == (403, "room_forbidden")
        for what in ("live", "init", "chunks/0"):
            status, doc = await other.item(demo.room, what)
            assert (status, doc["code"]) == (403, "room_forbidden"), what
        status, doc = await other.request("GET", routes.STATS_PATH)
        assert status == 200 and doc["rooms"] == []
        # SHARED is allowed DEMO: it joins the same room.
        again = messages.JoinResponse.from_json(
            (await shared.request("POST", routes.JOIN_PATH, {"url": origin.url, **BODY}))[1]
        )
        assert again.room == demo.room
        status, doc = await owner.request("GET", routes.STATS_PATH)
    urls = {room["url"] for room in doc["rooms"]}
    assert secret_room.room in {room["room"] for room in doc["rooms"]}
    assert f"http://127.0.0.1:{origin.port}{origin.path}?token=" in urls
    assert "SECRET-TOKEN" not in json.dumps(doc) and "pa%40ss" not in json.dumps(doc)
    assert "SECRET-TOKEN" not in caplog.text and "pa%40ss" not in caplog.text
    assert "<Room" not in caplog.text and " object at 0x" not in caplog.text


# --- item 6: rooms that never open, a hostile source ------------------------------------------


async def test_joins_that_never_open_their_websocket_do_not_take_a_viewers_slot(
    origin: OriginServer,
) -> None:
    edge = EdgeConfig(
        port=0,
        max_rooms=5,
        max_rooms_per_app=5,
        join_grace=1.0,
        linger=0.2,
        allowed_sources=(origin.url,),
    )
    cloud = CloudConfig(port=0, apps=_apps())
    async with EdgeServer(cloud, edge) as server, aiohttp.ClientSession() as http:
        attacker = AppClient(http, server.url, OTHER_KEY, OTHER_SECRET)
        for i in range(5):  # five rooms, never a WebSocket
            status, _ = await attacker.request(
                "POST", routes.JOIN_PATH, {"url": f"{origin.url}?n={i}", **BODY}
            )
            assert status == 200
        status, doc = await attacker.request(
            "POST", routes.JOIN_PATH, {"url": f"{origin.url}?n=6", **BODY}
        )
        assert (status, doc["code"]) == (429, "room_quota")
        viewer = EdgeClient(http, server.url)
        join = await viewer.join(f"{origin.url}?viewer")
        async with viewer.ws(join) as ws:
            assert (await next_of(ws, "neighbours"))["neighbours"] == []
            # The five expire after join_grace and free everything they held.
            await wait_until(lambda: len(server.service.rooms) == 1, 10, what="pending rooms gone")
            assert not ws.closed
    print("\nrooms: 5 never-opened joins + 1 quota refusal; the viewer's room opened")


def _hostile_flv(total: int) -> list[bytes]:
    """FLV whose every tag has timestamp 0 (frozen), ``total`` bytes in 256 KiB writes."""
    header = FlvTag(9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x00\x01\x00\x00")
    frame = FlvTag(9, 0, b"\x27\x01\x00\x00\x00" + os.urandom(60_000)).encode()
    pieces = [FlvHeader().encode() + header.encode()]
    batch = frame * 4
    while sum(len(p) for p in pieces) < total:
        pieces.append(batch)
    return pieces


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
async def test_a_hostile_source_leaves_the_edge_rss_bounded(tmp_path: Path) -> None:
    total = 64 * 1024 * 1024
    pieces = _hostile_flv(total)
    sent = 0
    source_port, edge_port = free_port(), free_port()
    done = asyncio.Event()

    async def serve(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "video/x-flv"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            sent += len(piece)
        done.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return response

    app = web.Application()
    app.router.add_get("/x.flv", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", source_port).start()
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = 0\nstun_port = 0\n'
        f'[[apps]]\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
        f"[edge]\nport = {edge_port}\nmax_room_bytes = 8388608\nmax_buffer_bytes = 16777216\n"
        f'stall_timeout = 60.0\nallowed_sources = ["http://127.0.0.1:{source_port}"]\n'
    )
    config.chmod(0o600)
    argv = [sys.executable, "-m", "xp2p", "edge", "--config", str(config)]
    edge = Proc.start("edge", argv, tmp_path / "edge.log")
    try:
        edge.wait_line(r"listening on")
        url = f"http://127.0.0.1:{edge_port}"
        async with aiohttp.ClientSession() as http:
            client = EdgeClient(http, url)
            before = _rss(edge.popen.pid)
            join = await client.join(f"http://127.0.0.1:{source_port}/x.flv")
            async with client.ws(join):
                async with asyncio.timeout(90):
                    await done.wait()

                async def settled() -> bool:
                    live = await client.live(join.room)
                    # ~1 MiB chunks: 3/4 of the stream cut, far past what may be kept
                    return (live.live_seq or 0) >= (total >> 20) * 3 // 4

                await wait_until(settled, 60, 0.2, what="the edge read the hostile stream")
                after = _rss(edge.popen.pid)
                status, _ = await client.item(join.room, "chunks/0")
                assert status == 410  # the oldest went: the room holds a bounded tail
    finally:
        edge.stop()
        await runner.cleanup()
    grown = after - before
    print(f"\nhostile source: sent {sent >> 20} MiB frozen-timestamp FLV; edge RSS "
          f"{before >> 20} -> {after >> 20} MiB (+{grown >> 20} MiB)")  # fmt: skip
    # 16 MiB of kept chunks, plus reading, parsing and signing buffers: 48 MiB is the bound.
    assert grown < 48 * 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- item 7: signals and stats -----------------------------------------------------------------


async def test_an_offer_flood_closes_the_sender_not_the_victim(
    cloud: CloudServer, origin: OriginServer
) -> None:
    offer = {"ufrag": "x", "pad": secrets.token_hex(480)}  # ~1 KB, valid
    async with aiohttp.ClientSession() as http:
        client = EdgeClient(http, cloud.url)
        victim = await client.join(origin.url)
        neighbour = await client.join(origin.url)  # the tracker pairs it with the victim
        stranger = await client.join(origin.url, upload=False)
        watcher = await client.join(origin.url, upload=False)  # not paired with the stranger
        async with (
            client.ws(victim) as ws_v,
            client.ws(neighbour) as ws_n,
            client.ws(stranger) as ws_s,
            client.ws(watcher) as ws_w,
        ):
            for ws, target in ((ws_n, victim.peer_id), (ws_s, watcher.peer_id)):
                for i in range(100):
                    frame = {"type": "offer", "to": target, "request_id": i, "offer": offer}
                    with contextlib.suppress(ConnectionResetError):
                        await ws.send_json(frame)
            # Each flooder's channel is closed for its own excess...
            for ws in (ws_n, ws_s):
                async with asyncio.timeout(10):
                    while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                        pass
                assert ws.close_code == 1008, msg
            # ...the victims' stay open and get at most the burst.
            got = 0
            with contextlib.suppress(TimeoutError):
                while True:
                    if (await next_of(ws_v, "offer", timeout=0.5))["from"] == neighbour.peer_id:
                        got += 1
            assert 0 < got <= routes.SIGNAL_BURST + routes.SIGNAL_RATE  # + a second's refill
            with contextlib.suppress(TimeoutError):
                await next_of(ws_w, "offer", timeout=0.3)
                raise AssertionError("a stranger's offer was relayed")
            for ws in (ws_v, ws_w):
                await ws.send_json({"type": "need_neighbours", "exclude": []})
                await next_of(ws, "neighbours")
                assert not ws.closed

            # A stats report of 2^62 bytes is refused and does not enter the room's figures.
            await ws_v.send_json({"type": "stats", "p2p_bytes": 2**62, "cdn_bytes": 0,
                                  "uploaded_bytes": 0, "stalls": 0, "neighbours": 1})  # fmt: skip
            assert (await next_of(ws_v, "error"))["code"] == "bad_stats"
            await ws_v.send_json({"type": "stats", "p2p_bytes": 1000, "cdn_bytes": 0,
                                  "uploaded_bytes": 0, "stalls": 0, "neighbours": 1})  # fmt: skip
            await ws_v.send_json({"type": "need_neighbours", "exclude": []})
            await next_of(ws_v, "neighbours")
            status, doc = await client.request("GET", routes.STATS_PATH)
    (room,) = doc["rooms"]
    assert status == 200 and room["p2p_bytes"] == 1000
    print(f"\nsignals: 2 x 100 offers of 1 KB; victim got {got} (burst {routes.SIGNAL_BURST}), "
          "both flooders closed 1008, victims open; a 2^62 B report refused")  # fmt: skip


async def test_the_standalone_edge_keeps_the_clouds_rules() -> None:
    """``xp2p edge`` answers apps under the cloud config's rules, as the cloud itself does:
    guessed signatures are throttled with 429 before any check (the source, like the key, is
    counted: the same address stays refused for the window), and plain HTTP is refused off
    loopback."""
    cloud = CloudConfig(port=0, apps=_apps(), auth_failure_limit=3, auth_failure_window=60.0)
    with pytest.raises(ConfigError, match="needs TLS"):
        EdgeServer(cloud, EdgeConfig(port=0), host="0.0.0.0")
    async with EdgeServer(cloud, EdgeConfig(port=0)) as server, aiohttp.ClientSession() as http:
        guesser = AppClient(http, server.url, OTHER_KEY, "a-wrong-secret-of-16+")
        answers = [await guesser.request("POST", routes.JOIN_PATH, BODY) for _ in range(8)]
        codes = [(status, doc["error"]["code"]) for status, doc in answers]
        assert codes[:3] == [(401, "bad_signature")] * 3
        assert set(codes[3:]) == {(429, "too_many_failures")}
