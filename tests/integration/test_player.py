"""The local player: HTTP-FLV clients share one pull; the last one leaving stops it."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.stack import Stack
from xp2p.flv import FlvHeader, FlvReader, FlvTag
from xp2p.player.access import AccessConfigError
from xp2p.player.server import PlayerServer
from xp2p.viewer import P2PModule
from xp2p.viewer.service import Service


@pytest.fixture
async def player(stack: Stack, module: P2PModule) -> AsyncIterator[PlayerServer]:
    server = PlayerServer(module, devices=["DEMO/cam1"])
    await server.start()
    yield server
    await server.stop()


async def read_flv(response: aiohttp.ClientResponse, want: int) -> list[FlvHeader | FlvTag]:
    data = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        data += chunk
        if len(data) >= want:
            break
    return FlvReader().feed(bytes(data))


def starts_decodable(items: list[FlvHeader | FlvTag]) -> bool:
    tags = [i for i in items if isinstance(i, FlvTag)]
    first_video = next(t for t in tags if t.is_video and not t.is_sequence_header)
    return (
        isinstance(items[0], FlvHeader)
        and any(t.is_video and t.is_sequence_header for t in tags)
        and first_video.is_keyframe
    )


async def test_two_players_share_one_pull_and_both_start_on_a_keyframe(
    player: PlayerServer, module: P2PModule
) -> None:
    url = player.live_url("DEMO/cam1")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as first:
            assert first.status == 200
            assert first.headers["Content-Type"] == "video/x-flv"
            assert starts_decodable(await read_flv(first, 30_000))
            async with http.get(url) as second:  # joins the running pull
                assert starts_decodable(await read_flv(second, 30_000))
            assert module.has_service("player:DEMO/cam1")
            async with http.get(player.live_url("DEMO/cam1", "standard")) as other_quality:
                assert other_quality.status == 409
            service = module._services["player:DEMO/cam1"]
            assert isinstance(service, Service) and service._pull is not None
            pull = service._pull
    # Last player gone: the pull stops but the link lingers for a quick reopen.
    await asyncio.wait({pull}, timeout=5)
    assert not service.streaming
    assert module.has_service("player:DEMO/cam1")


async def test_page_lists_devices_and_bad_requests_are_clear(player: PlayerServer) -> None:
    token = f"token={player.token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(player.page_url) as page:
            text = await page.text()
            assert page.status == 200 and "DEMO/cam1" in text and "ffplay" in text
            assert page.headers["Referrer-Policy"] == "no-referrer"
        async with http.get(player.url + f"/live/DEMO/cam1.flv?quality=ultra&{token}") as bad:
            assert bad.status == 400 and "quality" in await bad.text()
        async with http.get(player.url + f"/live/DEMO/nosuch.flv?{token}") as missing:
            assert missing.status == 404  # not a device this player was started for
            assert "device" in await missing.text()
        async with http.get(player.url + "/") as no_token:
            assert no_token.status == 403 and "token" in await no_token.text()


async def test_a_device_it_serves_that_is_offline_is_a_clear_502(
    stack: Stack, module: P2PModule
) -> None:
    server = PlayerServer(module, devices=["DEMO/nosuch"])
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.live_url("DEMO/nosuch")) as missing:
                assert missing.status == 502
                assert "-2001" in await missing.text()
    finally:
        await server.stop()


async def test_a_configured_origin_may_use_the_player_and_others_may_not(
    stack: Stack, module: P2PModule
) -> None:
    server = PlayerServer(module, devices=["DEMO/cam1"], allow_origins=["https://App.example"])
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            allowed = {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}
            async with http.get(server.page_url, headers=allowed) as page:
                assert page.status == 200
                assert page.headers["Access-Control-Allow-Origin"] == "https://app.example"
            for headers in (
                {"Origin": "https://evil.example"},
                {"Origin": "null"},
                {"Sec-Fetch-Site": "same-site"},
            ):
                async with http.get(server.page_url, headers=headers) as refused:
                    assert refused.status == 403, headers
                    assert "Access-Control-Allow-Origin" not in refused.headers
            own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
            async with http.get(server.page_url, headers=own) as page:
                assert page.status == 200
        assert server.refused == {"Origin": 2, "Sec-Fetch-Site": 1}
    finally:
        await server.stop()


async def test_listening_beyond_loopback_needs_the_public_flag(
    module: P2PModule, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(AccessConfigError, match=r"host.*--player-public"):
        PlayerServer(module, host="0.0.0.0")
    with pytest.raises(AccessConfigError, match="allow_origin"):
        PlayerServer(module, allow_origins=["https://app.example/path"])
    public = PlayerServer(module, host="0.0.0.0", public=True, devices=["DEMO/cam1"])
    with caplog.at_level(logging.WARNING, logger="xp2p.player"):
        await public.start()
    try:
        assert "beyond this machine" in caplog.text and public.token not in caplog.text
        async with aiohttp.ClientSession() as http:
            page = f"http://127.0.0.1:{public.port}/"
            async with http.get(page, headers={"Host": "viewer.lan"}) as no_token:
                assert no_token.status == 403  # any Host, but the token still guards
            async with http.get(f"{page}?token={public.token}") as ok:
                assert ok.status == 200
    finally:
        await public.stop()


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe missing (scripts/setup.sh)")
async def test_ffprobe_decodes_the_player_stream(player: PlayerServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-read_intervals",
        "%+1",
        "-show_streams",
        "-of",
        "json",
        player.live_url("DEMO/cam1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    codecs = {s["codec_type"]: s["codec_name"] for s in json.loads(out)["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"}


async def test_playbacks_beyond_the_cap_get_503_before_any_link(
    stack: Stack, module: P2PModule
) -> None:
    server = PlayerServer(module, devices=["DEMO/cam1"], max_playbacks=2)
    await server.start()
    try:
        server.playbacks = 2  # two players are already playing recordings back
        async with aiohttp.ClientSession() as http:
            async with http.get(server.playback_url("DEMO/cam1", 1700000000, 1700000060)) as busy:
                assert busy.status == 503 and "playbacks" in await busy.text()
        assert not [s for s in module._services if s.startswith("playback:")]
        assert server.refused == {"busy": 1}
    finally:
        await server.stop()
