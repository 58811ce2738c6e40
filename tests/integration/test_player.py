"""The local player: HTTP-FLV clients share one pull; the last one leaving stops it."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.stack import Stack
from xp2p.flv import FlvHeader, FlvReader, FlvTag
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
    async with aiohttp.ClientSession() as http:
        async with http.get(player.url + "/") as page:
            text = await page.text()
            assert page.status == 200 and "DEMO/cam1" in text and "ffplay" in text
        async with http.get(player.url + "/live/DEMO/cam1.flv?quality=ultra") as bad:
            assert bad.status == 400 and "quality" in await bad.text()
        async with http.get(player.url + "/live/DEMO/nosuch.flv") as missing:
            assert missing.status == 502
            assert "-2001" in await missing.text()


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
