"""1vN with real processes: ``xp2p origin``, ``xp2p cloud`` (with its edge) and two viewer
processes of two viewers each, on loopback. Every viewer's stream decodes (ffprobe), every
video and audio tag it played is byte-identical to the edge's signed chunks, and viewers fed
each other."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from pathlib import Path

import pytest

from tests.support.ffprobe import FFPROBE, decodes_h264
from tests.support.procs import Proc, free_port, write_cloud_config
from xp2p.flv import FlvReader, FlvTag
from xp2p.swarm.edge_routes import room_id
from xp2p.viewer.cloud_client import CloudError
from xp2p.viewer.swarm.edge_client import EdgeClient

pytestmark = pytest.mark.multiprocess
VIEWER = Path(__file__).resolve().parent.parent / "support" / "swarm_viewer.py"
APP_KEY = "swarm-test-app"
SECONDS = 20.0


def _tags(data: bytes) -> list[FlvTag]:
    reader = FlvReader()
    tags = [t for t in reader.feed(data) if isinstance(t, FlvTag)]
    return tags


async def _edge_tags(cloud: str, secret: str, url: str) -> dict[tuple[int, int], bytes]:
    """(timestamp, tag type) -> tag data, over every chunk the edge still keeps."""
    edge = EdgeClient(cloud, APP_KEY, secret)
    room = room_id(url)
    out: dict[tuple[int, int], bytes] = {}
    try:
        live = await edge.live(room)
        assert live.live_seq is not None
        for seq in range(live.live_seq, -1, -1):
            try:
                chunk, _proof, _raw = await edge.chunk(room, seq)
            except CloudError as exc:
                assert exc.status == 410, exc
                break
            for tag in chunk.tags():
                out[(tag.timestamp, tag.tag_type)] = tag.data
    finally:
        await edge.close()
    return out


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
@pytest.mark.timeout(180)
def test_viewer_processes_feed_each_other_and_play_the_edges_bytes(
    tmp_path: Path, procs: list[Proc]
) -> None:
    secret = secrets.token_urlsafe(18)
    http_port, origin_port = free_port(), free_port()
    # The origin is on loopback: the edge pulls it only because the config lists it.
    config = write_cloud_config(
        tmp_path / "cloud.toml",
        http_port,
        APP_KEY,
        secret,
        edge_sources=[f"http://127.0.0.1:{origin_port}"],
    )
    xp2p = [sys.executable, "-m", "xp2p"]
    origin = Proc.start(
        "origin",
        [*xp2p, "origin", "--port", str(origin_port), "--size", "320x180", "--bitrate", "300k"],
        tmp_path / "origin.log",
    )
    procs.append(origin)
    cloud = Proc.start("cloud", [*xp2p, "cloud", "--config", str(config)], tmp_path / "cloud.log")
    procs.append(cloud)
    origin.wait_line(r"serving http://")
    cloud.wait_line(r"listening on")
    source = f"http://127.0.0.1:{origin_port}/live/test.flv"
    cloud_url = f"http://127.0.0.1:{http_port}"
    until = time.time() + SECONDS
    env = {"XP2P_APP_SECRET": secret}
    viewers = []
    for i in range(2):
        argv = [sys.executable, str(VIEWER), "--cloud", cloud_url, "--app-key", APP_KEY]
        argv += ["--url", source, "--until", f"{until:.3f}", "--name", f"p{i}", "--viewers", "2"]
        argv += ["--out", str(tmp_path / f"p{i}.json"), "--flv-dir", str(tmp_path)]
        viewers.append(Proc.start(f"viewers{i}", argv, tmp_path / f"p{i}.log", env))
        procs.append(viewers[-1])
    for proc in viewers:
        assert proc.popen.wait(SECONDS + 60) == 0, proc.text()

    results = [
        v for i in range(2) for v in json.loads((tmp_path / f"p{i}.json").read_text())["viewers"]
    ]
    assert len(results) == 4
    assert not [r for r in results if "error" in r], results
    assert sum(r["p2p_bytes"] for r in results if not r["seed"]) > 0, "nobody fed anybody"
    edge = asyncio.run(_edge_tags(cloud_url, secret, source))
    for result in results:
        flv = tmp_path / f"{result['viewer']}.flv"
        tags = _tags(flv.read_bytes())
        media = [t for t in tags if t.tag_type in (8, 9)]
        assert media and media[0].is_video and media[0].is_keyframe
        compared = [t for t in media if (t.timestamp, t.tag_type) in edge]
        assert len(compared) > len(media) // 3, "too little overlap with the edge's chunks"
        assert all(edge[(t.timestamp, t.tag_type)] == t.data for t in compared)
        assert decodes_h264(flv)
