"""1vN viewers end to end: the real cloud with its edge, an HTTP-FLV origin, several
`P2PModule`s in one loop trading chunks over real ICE + QUIC links on loopback.

No wall-clock assertions: waits are bounded generously and only say "within this long, it
happened"; what is asserted is bytes, counters and decodability.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from xp2p import ErrorCode, XP2PError
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device.http_origin import OriginServer
from xp2p.flv import FlvHeader
from xp2p.link import LinkConfig
from xp2p.media import TestPatternSource
from xp2p.swarm import Chunk, InitChunk, decode_item
from xp2p.swarm.edge_api import room_id
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.viewer.swarm import SwarmService

from .conftest import PATTERN

LOOPBACK = LinkConfig(host_addresses=("127.0.0.1",))
FFPROBE = shutil.which("ffprobe")
HEADER = len(FlvHeader().encode())


class Viewer:
    """One app: a module, its swarm service and what its callbacks received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.module = P2PModule(link_config=LOOPBACK)
        self.events: list[tuple[str, str, Any]] = []
        self.data = bytearray()

    def on_msg(self, event: str, subtype: str, detail: Any) -> None:
        self.events.append((event, subtype, detail))

    def on_data(self, chunk: bytes) -> None:
        self.data += chunk

    def subtypes(self) -> list[str]:
        return [s for e, s, _ in self.events if e == "notify"]

    @property
    def service(self) -> SwarmService:
        service = self.module._services[self.name]
        assert isinstance(service, SwarmService)
        return service

    def stats(self) -> Any:
        return self.module.get_swarm_stats(self.name)


@pytest.fixture
async def cloud() -> AsyncIterator[CloudServer]:
    server = CloudServer(CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def origin() -> AsyncIterator[OriginServer]:
    server = OriginServer(lambda: TestPatternSource(PATTERN), name="swarm")
    await server.start()
    yield server
    await server.stop()


def app_params(cloud: CloudServer) -> AppParams:
    app = cloud.config.apps[0]
    return AppParams(cloud.url, app.key, app.secret)


async def join(
    cloud: CloudServer, url: str, name: str, *, stream: bool = True, **info: Any
) -> Viewer:
    viewer = Viewer(name)
    await viewer.module.init(app_params(cloud))
    await viewer.module.start_p2p_service(
        name,
        StreamInfo(url=url, **info),
        msg_callback=viewer.on_msg,
        data_callback=viewer.on_data if stream else None,
    )
    return viewer


async def until(what: Callable[[], bool], timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"not within {timeout} s: {why}"
        await asyncio.sleep(0.1)


def edge_items(cloud: CloudServer, url: str) -> tuple[InitChunk, dict[int, Chunk]]:
    """Everything the edge has cut for the room (it keeps 30 s, longer than a test)."""
    assert cloud.edge is not None
    store = cloud.edge.rooms[room_id(url)].store
    assert store.init_data is not None
    init, _ = decode_item(store.init_data)
    assert isinstance(init, InitChunk)
    chunks: dict[int, Chunk] = {}
    first, last = store.first_seq, store.live_seq
    assert first is not None and last is not None
    for seq in range(first, last + 1):
        _, data = store.lookup(seq)
        if data is not None:
            chunk, _ = decode_item(data)
            assert isinstance(chunk, Chunk)
            chunks[seq] = chunk
    return init, chunks


def check_output(data: bytes, init: InitChunk, chunks: dict[int, Chunk]) -> int:
    """``data`` is the FLV header, the init and consecutive chunks from a keyframe chunk,
    byte for byte as the edge cut them (the last one may be cut short): the join seq."""
    assert data[:HEADER] == init.header.encode()
    body = data[HEADER:]
    assert body.startswith(init.payload), "init tags missing after the FLV header"
    body = body[len(init.payload) :]
    start = next(
        (s for s, c in sorted(chunks.items()) if c.keyframe_start and body.startswith(c.payload)),
        None,
    )
    assert start is not None, "the stream does not start at a keyframe chunk of the edge"
    expected = b"".join(c.payload for s, c in sorted(chunks.items()) if s >= start)
    assert len(body) > 0 and expected.startswith(body[: len(expected)]), "bytes differ"
    assert len(body) <= len(expected)
    return start


def ffprobe_frames(data: bytes) -> int:
    if FFPROBE is None:
        pytest.skip("ffprobe is not installed")
    with tempfile.NamedTemporaryFile(suffix=".flv") as f:
        f.write(data)
        f.flush()
        out = subprocess.run(
            [FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0",
             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", f.name],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    return int(out.stdout.strip().split(",")[0])


async def stop_all(viewers: list[Viewer]) -> None:
    for v in viewers:
        await v.module.destroy()


# ---- tests --------------------------------------------------------------------------------


async def test_viewers_feed_each_other_and_play_the_edges_bytes(
    cloud: CloudServer, origin: OriginServer
) -> None:
    url = origin.url
    viewers = [await join(cloud, url, f"v{i}") for i in range(4)]
    try:
        await until(lambda: all(len(v.data) > 200_000 for v in viewers), 40, "video at all")
        await until(
            lambda: all(v.stats().p2p_bytes > 0 for v in viewers if not v.stats().seed),
            20,
            "non-seeds fed by peers",
        )
        stats = [v.stats() for v in viewers]
        init, chunks = edge_items(cloud, url)
    finally:
        await stop_all(viewers)
    assert sum(s.seed for s in stats) >= 1
    for v, s in zip(viewers, stats, strict=True):
        check_output(bytes(v.data), init, chunks)
        assert s.bad_chunks == 0 and s.neighbours >= 1
        assert ffprobe_frames(bytes(v.data)) > 25
        notified = v.subtypes()
        assert notified[0] == "connected"
        assert notified.index("request") < notified.index("parsed")
        assert "swarm" in notified
    p2p = sum(s.p2p_bytes for s in stats)
    cdn = sum(s.cdn_bytes for s in stats)
    print(f"p2p share {p2p / (p2p + cdn):.2f} ({p2p} p2p, {cdn} cdn bytes)", stats)
    assert p2p > 0


async def test_bad_url_is_a_bad_param(cloud: CloudServer) -> None:
    viewer = Viewer("x")
    await viewer.module.init(app_params(cloud))
    try:
        with pytest.raises(XP2PError) as info:
            await viewer.module.start_p2p_service("x", StreamInfo(url="ftp://example.com/x.flv"))
        assert info.value.code == ErrorCode.BAD_PARAM
        with pytest.raises(XP2PError) as info:
            await viewer.module.start_p2p_service("x", StreamInfo(url="http://127.0.0.1:9/x.flv"))
        assert info.value.code == ErrorCode.START_STREAM_FAILED
        assert not viewer.module.has_service("x")
    finally:
        await viewer.module.destroy()
