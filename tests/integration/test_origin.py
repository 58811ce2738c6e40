"""`xp2p origin` (plain HTTP(S)-FLV from a LiveChannel) and the edge pulling it, its HTTPS
form and a third-party HTTP-FLV server (ffmpeg ``-listen 1``)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.edge_support import (
    APP_KEY,
    APP_SECRET,
    FFMPEG,
    FFPROBE,
    EdgeClient,
    ffprobe_frames,
)
from tests.support.procs import free_port
from xp2p.cli import build_parser
from xp2p.cloud import AppConfig, CloudConfig
from xp2p.cloud.edge import EdgeConfig, EdgeServer
from xp2p.device.http_origin import OriginServer, self_signed_certificate, server_ssl_context
from xp2p.flv import FlvReader, FlvTag
from xp2p.media import TestPatternConfig, TestPatternSource
from xp2p.swarm import Chunk, InitChunk, StreamAssembler
from xp2p.swarm import edge_routes as api
from xp2p.swarm.edge_messages import JoinResponse

PATTERN = TestPatternConfig(width=320, height=180, fps=25, bitrate=300_000, gop=25)
#: A third-party live HTTP-FLV server: ffmpeg serving one client (the URL goes last).
FFMPEG_SOURCE = (
    "-hide_banner -loglevel error -re -f lavfi -i testsrc2=size=320x180:rate=25 "
    "-f lavfi -i sine=frequency=440:sample_rate=44100 -c:v libx264 -preset ultrafast "
    "-tune zerolatency -g 25 -pix_fmt yuv420p -c:a aac -b:a 64k -f flv -listen 1"
)
needs_ffmpeg = pytest.mark.skipif(
    FFPROBE is None or FFMPEG is None, reason="ffmpeg missing: scripts/setup.sh installs it"
)


async def _read(url: str, nbytes: int, context: ssl.SSLContext | None = None) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url, ssl=context or True) as r:
        assert r.status == 200 and r.content_type == "video/x-flv"
        data = b""
        while len(data) < nbytes:
            piece = await r.content.read(65536)
            assert piece
            data += piece
        return data


def _first_items(data: bytes) -> list[FlvTag]:
    return [t for t in FlvReader().feed(data) if isinstance(t, FlvTag)]


@needs_ffmpeg
async def test_each_client_starts_with_headers_and_a_keyframe(tmp_path: Path) -> None:
    async with OriginServer(lambda: TestPatternSource(PATTERN), name="cam") as origin:
        assert origin.url.endswith("/live/cam.flv")
        first = await _read(origin.url, 120_000)
        await asyncio.sleep(1.3)  # the second client joins in a later GOP
        second = await _read(origin.url, 60_000)
        assert origin.connections == 2
    for data in (first, second):
        assert data.startswith(b"FLV")
        tags = _first_items(data)
        media = [t for t in tags if not (t.is_script or t.is_sequence_header)]
        assert tags[0].is_metadata and any(t.is_sequence_header for t in tags[:3])
        assert media[0].is_video and media[0].is_keyframe
    assert _first_items(second)[3].timestamp > 0  # from the newest keyframe, not the start
    codec, frames = await asyncio.to_thread(ffprobe_frames, first, tmp_path / "o.flv")
    assert codec == "h264" and frames > 10


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[EdgeServer, Path]]:
    cert, _ = self_signed_certificate(tmp_path / "tls")
    cloud = CloudConfig(port=0, apps=(AppConfig(APP_KEY, APP_SECRET),))
    async with EdgeServer(cloud, EdgeConfig(port=0, source_ca_file=cert)) as server:
        yield server, cert


async def test_the_edge_pulls_an_https_origin_with_its_self_signed_certificate(
    edge: tuple[EdgeServer, Path],
) -> None:
    server, cert = edge
    key = cert.with_name("origin-key.pem")
    tls = server_ssl_context(cert, key)
    async with (
        OriginServer(lambda: TestPatternSource(PATTERN), ssl_context=tls) as origin,
        aiohttp.ClientSession() as http,
    ):
        assert origin.url.startswith("https://127.0.0.1:")
        server.service.allow_source(origin.url)  # loopback: pulled only when listed
        client = EdgeClient(http, server.url)
        join = await client.join(origin.url)
        init = await client.verified(join, "init")
        assert isinstance(init, InitChunk) and init.tags()
        assert origin.connections == 1
        # Without the certificate the source is refused; the TLS reason is the log's only.
        async with EdgeServer(
            CloudConfig(port=0, apps=(AppConfig(APP_KEY, APP_SECRET),)),
            EdgeConfig(port=0, allowed_sources=(origin.url,)),
        ) as strict:
            status, doc = await EdgeClient(http, strict.url).request(
                "POST",
                api.JOIN_PATH,
                {"url": origin.url, "upload": True, "fingerprint": "F" * 43},
            )
        assert (status, doc["code"]) == (502, "source_unreachable")
        assert doc["message"] == "source unavailable"


@needs_ffmpeg
async def test_the_edge_pulls_a_third_party_ffmpeg_http_flv_server(
    edge: tuple[EdgeServer, Path], tmp_path: Path
) -> None:
    server, _ = edge
    url = f"http://127.0.0.1:{free_port()}/x.flv"
    server.service.allow_source(url)
    ffmpeg = await asyncio.create_subprocess_exec(
        FFMPEG or "ffmpeg",
        *FFMPEG_SOURCE.split(),
        url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            client = EdgeClient(http, server.url)
            body = {"url": url, "upload": True, "fingerprint": "F" * 43}
            async with asyncio.timeout(20):
                while True:  # until ffmpeg listens
                    status, doc = await client.request("POST", api.JOIN_PATH, body)
                    if status == 200:
                        break
                    assert doc["code"] == "source_unreachable"
                    await asyncio.sleep(0.3)
            join = JoinResponse.from_json(doc)
            async with asyncio.timeout(20):
                while (live := await client.live(join.room)).keyframe_seq is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            start = live.keyframe_seq
            init = await client.verified(join, "init")
            chunks = [
                await client.verified(join, f"chunks/{s}?wait=3") for s in range(start, start + 6)
            ]
    finally:
        ffmpeg.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ffmpeg.wait(), 5)
        if ffmpeg.returncode is None:
            ffmpeg.kill()
            await ffmpeg.wait()
    assert isinstance(init, InitChunk)
    assembler = StreamAssembler(join.stream_id)
    assembler.add_init(init)
    flv = b"".join(assembler.push(c) for c in chunks if isinstance(c, Chunk))
    assert assembler.stalls == 0 and flv.startswith(b"FLV")
    codec, frames = await asyncio.to_thread(ffprobe_frames, flv, tmp_path / "ff.flv")
    assert codec == "h264" and frames >= 25


def test_cli_parses_origin_and_edge() -> None:
    args = build_parser().parse_args(
        ["origin", "--port", "0", "--name", "cam", "--tls-self-signed", "--fps", "10"]
    )
    assert (args.command, args.name, args.tls_self_signed, args.fps) == ("origin", "cam", True, 10)
    args = build_parser().parse_args(
        ["edge", "--config", "c.toml", "--linger", "2", "--source-ca", "o.pem"]
    )
    assert (args.linger, args.source_ca) == (2.0, Path("o.pem"))
    args = build_parser().parse_args(["cloud", "--no-edge"])
    assert args.no_edge
