"""1vN viewers end to end: the real cloud with its edge, an HTTP-FLV origin, several
`P2PModule`s in one loop trading chunks over real ICE + QUIC links on loopback.

No wall-clock assertions: waits are bounded generously and only say "within this long, it
happened"; what is asserted is bytes, counters and decodability.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.stack import PATTERN
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device.http_origin import OriginServer
from xp2p.flv import FlvHeader
from xp2p.link import LinkConfig
from xp2p.media import TestPatternSource
from xp2p.swarm import Chunk, InitChunk, decode_item
from xp2p.swarm.edge_routes import room_id
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.viewer.swarm import SwarmService

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
    assert cloud.edge is not None
    cloud.edge.allow_source(url)  # a loopback origin: the edge pulls only what it is allowed
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
    await wait_until(what, timeout=timeout, interval=0.1, what=why)


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
    return check_body(data[HEADER:], {init.init_id: init}, chunks)


def check_body(body: bytes, inits: dict[int, InitChunk], chunks: dict[int, Chunk]) -> int:
    """``body`` is an init's tags, then consecutive chunks from a keyframe chunk, with each
    new init's tags before the first chunk coded against it."""
    start = next(
        (
            s
            for s, c in sorted(chunks.items())
            if c.keyframe_start
            and c.init_id in inits
            and body.startswith(inits[c.init_id].payload + c.payload)
        ),
        None,
    )
    assert start is not None, "the stream does not start at an init and a keyframe chunk"
    parts: list[bytes] = []
    current = None
    for seq, chunk in sorted(chunks.items()):
        if seq < start:
            continue
        if chunk.init_id != current:
            parts.append(inits[chunk.init_id].payload)
            current = chunk.init_id
        parts.append(chunk.payload)
    expected = b"".join(parts)
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


def tamper(mode: str, original: Callable[[int], bytes | None]) -> Callable[[int], bytes | None]:
    """What a malicious viewer serves instead of the genuine wire form of chunk ``seq``."""

    def wire(seq: int) -> bytes | None:
        data = original(seq)
        if data is None:
            return None
        if mode == "forge":  # one payload byte changed: the signature no longer holds
            i = len(data) // 2
            return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        if mode == "truncate":
            return data[: len(data) - 100]
        # Replay: a genuine chunk, of another sequence number.
        other = original(seq - 1) or original(seq + 1)
        return other if other is not None else data[:50]

    return wire


@pytest.mark.parametrize("mode", ["forge", "truncate", "replay"])
async def test_a_malicious_peer_is_banned_and_no_bad_byte_is_played(
    cloud: CloudServer, origin: OriginServer, mode: str
) -> None:
    url = origin.url
    # The first to join is the seed: everyone else asks it first.
    bad = await join(cloud, url, "bad")
    pull = bad.service._pull
    assert pull is not None and bad.stats().seed
    pull.playout.wire = tamper(mode, pull.playout.wire)  # type: ignore[method-assign]
    honest = [await join(cloud, url, f"v{i}") for i in range(3)]
    bad_id = bad.stats().peer_id
    try:
        await until(
            lambda: any(v.stats().bad_chunks > 0 for v in honest), 30, "the forgery noticed"
        )
        victims = [v for v in honest if v.stats().bad_chunks > 0]
        marks = {v.name: len(v.data) for v in honest}
        await until(
            lambda: all(len(v.data) > marks[v.name] + 50_000 for v in honest),
            30,
            "playback going on after the ban",
        )
        init, chunks = edge_items(cloud, url)
        stats = [v.stats() for v in honest]
        banned = [v.service._banned_peers() for v in victims]
        bad_counts = [v.stats().bad_chunks for v in victims]
    finally:
        await stop_all([bad, *honest])
    assert all(bad_id in b for b in banned)
    assert bad_counts == [1] * len(victims)  # banned at the first: it never sent another
    for v in honest:
        check_output(bytes(v.data), init, chunks)  # not one bad byte reached a player
    assert all(s.banned <= 1 for s in stats)


async def test_download_only_viewer_uploads_nothing_and_is_fed(
    cloud: CloudServer, origin: OriginServer
) -> None:
    url = origin.url
    viewers = [await join(cloud, url, f"v{i}") for i in range(3)]
    mobile = await join(cloud, url, "mobile", upload=False)
    try:
        await until(
            lambda: mobile.stats().p2p_bytes > 100_000 and len(mobile.data) > 100_000,
            30,
            "the mobile fed by peers",
        )
        init, chunks = edge_items(cloud, url)
        stats = mobile.stats()
        sent = sum(p.sent for p in mobile.service.pipes.values())
    finally:
        await stop_all([*viewers, mobile])
    assert stats.uploaded_bytes == 0 and not stats.seed
    check_output(bytes(mobile.data), init, chunks)
    # Its pipes carried only hellos, requests and cancels: no chunk, no announcement.
    assert sent < 20_000, sent


async def test_upload_cap_is_honoured(cloud: CloudServer, origin: OriginServer) -> None:
    url = origin.url
    cap = 20_000  # bytes/s, well under the stream's ~40 kB/s
    seed = await join(cloud, url, "seed", upload_rate_cap=cap)
    started = time.monotonic()
    viewers = [await join(cloud, url, f"v{i}") for i in range(2)]
    try:
        await until(lambda: all(len(v.data) > 150_000 for v in viewers), 40, "video")
        uploaded = seed.stats().uploaded_bytes
        elapsed = time.monotonic() - started
    finally:
        await stop_all([seed, *viewers])
    # An upper bound only (a slow machine sends less, never more): the cap plus the
    # queue's backlog allowance and one chunk in flight.
    assert uploaded <= cap * (elapsed + 0.6) + 60_000, (uploaded, elapsed)


async def test_a_viewer_that_vanishes_costs_the_others_no_stall(
    cloud: CloudServer, origin: OriginServer
) -> None:
    url = origin.url
    viewers = [await join(cloud, url, f"v{i}") for i in range(4)]
    try:
        await until(
            lambda: all(v.stats().p2p_bytes > 0 or v.stats().seed for v in viewers), 30, "p2p"
        )
        # The seed, which feeds everyone, dies without a word: its links go silent (no
        # QUIC close), then its control channel drops as a killed process's would.
        gone = next(v for v in viewers if v.stats().seed)
        rest = [v for v in viewers if v is not gone]
        stalls = {v.name: v.stats().stalls for v in rest}
        for pipe in list(gone.service.pipes.values()):
            pipe.link._shutdown("crashed")
        await gone.module.stop_p2p_service(gone.name)
        marks = {v.name: len(v.data) for v in rest}
        await until(
            lambda: all(len(v.data) > marks[v.name] + 150_000 for v in rest), 40, "playing on"
        )
        init, chunks = edge_items(cloud, url)
        after = {v.name: v.stats() for v in rest}
    finally:
        await stop_all(viewers)
    for v in rest:
        assert after[v.name].stalls == stalls[v.name], after[v.name]
        check_output(bytes(v.data), init, chunks)
    assert any(s.seed for s in after.values())  # the edge made another seed


def notified_states(viewer: Viewer) -> list[str]:
    return [d["state"] for e, s, d in viewer.events if s == "swarm_state"]


async def test_a_source_stall_is_reported_and_viewers_go_on(cloud: CloudServer) -> None:
    origin = OriginServer(lambda: TestPatternSource(PATTERN), name="swarm")
    await origin.start()
    url = origin.url
    viewers = [await join(cloud, url, f"v{i}") for i in range(3)]
    try:
        await until(lambda: all(len(v.data) > 100_000 for v in viewers), 30, "video")
        first_init, _ = edge_items(cloud, url)
        await origin.stop()  # the source goes away...
        await until(
            lambda: all("stalled" in notified_states(v) for v in viewers), 20, "stall notified"
        )
        origin = OriginServer(lambda: TestPatternSource(PATTERN), name="swarm", port=origin.port)
        await origin.start()  # ...and comes back: the edge reconnects, same room
        await until(
            lambda: all(notified_states(v)[-1:] == ["live"] for v in viewers), 30, "live again"
        )
        marks = {v.name: len(v.data) for v in viewers}
        await until(
            lambda: all(len(v.data) > marks[v.name] + 100_000 for v in viewers), 30, "playing"
        )
        init, chunks = edge_items(cloud, url)
    finally:
        await stop_all(viewers)
        await origin.stop()
    assert init.init_id > first_init.init_id  # the new source's headers, announced anew
    for v in viewers:
        assert v.data[:HEADER] == init.header.encode()
        body = bytes(v.data[HEADER:])
        check_body(body, {first_init.init_id: first_init, init.init_id: init}, chunks)
        assert ffprobe_frames(bytes(v.data)) > 50


async def test_viewers_survive_an_edge_restart(origin: OriginServer) -> None:
    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0)
    cloud = CloudServer(config)
    await cloud.start()
    url = origin.url
    viewers = [await join(cloud, url, f"v{i}") for i in range(3)]
    try:
        await until(lambda: all(len(v.data) > 100_000 for v in viewers), 30, "video")
        port = int(cloud.url.rsplit(":", 1)[1])
        await cloud.stop()
        await until(
            lambda: all("reconnecting" in notified_states(v) for v in viewers), 20, "noticed"
        )
        cloud = CloudServer(dataclasses.replace(config, port=port))  # a new edge key too
        await cloud.start()
        assert cloud.edge is not None
        cloud.edge.allow_source(url)
        await until(lambda: all("rejoined" in notified_states(v) for v in viewers), 30, "rejoined")
        marks = {v.name: len(v.data) for v in viewers}
        await until(
            lambda: all(len(v.data) > marks[v.name] + 100_000 for v in viewers), 30, "playing"
        )
        init, chunks = edge_items(cloud, url)
        stats = [v.stats() for v in viewers]
    finally:
        await stop_all(viewers)
        await cloud.stop()
    assert sum(s.seed for s in stats) >= 1
    for v in viewers:
        data = bytes(v.data)
        assert data.count(b"FLV\x01") == 1  # one continuous stream: no second file header
        # After the restart: the new session's init and chunks, byte for byte.
        check_body(data[data.rindex(init.payload) :], {init.init_id: init}, chunks)
        assert ffprobe_frames(data) > 50


async def test_stop_leaves_nothing_behind_and_streams_restart(
    cloud: CloudServer, origin: OriginServer
) -> None:
    url = origin.url
    viewers = [await join(cloud, url, f"v{i}") for i in range(2)]
    late = await join(cloud, url, "late", stream=False)  # in the room, not pulling
    try:
        await until(lambda: all(len(v.data) > 50_000 for v in viewers), 30, "video")
        assert late.data == b"" and not late.stats().streaming
        await late.module.start_stream("late", late.on_data)
        await until(lambda: len(late.data) > 50_000, 30, "the late pull")
        await late.module.stop_stream("late")
        assert "close" in late.subtypes()
        size = len(late.data)
        await late.module.start_stream("late", late.on_data)  # a second pull, from a keyframe
        await until(lambda: len(late.data) > size + 50_000, 30, "the second pull")
        assert bytes(late.data[size : size + 3]) == b"FLV"
        with pytest.raises(XP2PError) as info:
            await late.module.send_command("late", "action=inner_define&cmd=get_device_st")
        assert info.value.code == ErrorCode.UNSUPPORTED
    finally:
        await stop_all([*viewers, late])
    names = ("swarm-", "pipe-", "link")

    def left() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(names)]

    # Closing links may take a loop turn or two after stop; a task that outlives that is
    # a leak, and the assertion names it.
    with contextlib.suppress(AssertionError):
        await until(lambda: not left(), 5, "the swarm's tasks to end")
    assert left() == []
    assert cloud.edge is not None
    await until(
        lambda: all(r.viewers == 0 for r in cloud.edge.rooms.values()), 10, "the room empty"
    )


async def test_a_capped_swarm_feeds_itself(cloud: CloudServer, origin: OriginServer) -> None:
    """Issue 5: six viewers, upload capped at 1.5x the stream's rate. A seed that rescued old
    chunks for everyone (it holds all of them first) spent its upload on those instead of
    new ones, and the swarm fell back to the edge: non-seeds took 40-60 % from it."""
    url = origin.url
    cap = int(1.5 * PATTERN.bitrate / 8)
    viewers = [await join(cloud, url, f"v{i}", upload_rate_cap=cap) for i in range(6)]
    try:
        await until(lambda: all(len(v.data) > 150_000 for v in viewers), 40, "video")
        # Measured over a stretch of steady state, not the start (first GOPs from the edge).
        before = {v.name: v.stats() for v in viewers}
        await until(lambda: all(len(v.data) > 700_000 for v in viewers), 60, "more video")
        after = {v.name: v.stats() for v in viewers}
    finally:
        await stop_all(viewers)
    p2p = cdn = 0
    for v in viewers:
        a, b = after[v.name], before[v.name]
        assert a.stalls == b.stalls, a
        if not (a.seed or b.seed):
            p2p += a.p2p_bytes - b.p2p_bytes
            cdn += a.cdn_bytes - b.cdn_bytes
    share = p2p / max(p2p + cdn, 1)
    print(f"non-seeds' p2p share {share:.2f} ({p2p} p2p, {cdn} cdn bytes)")
    assert share > 0.75, (p2p, cdn)
