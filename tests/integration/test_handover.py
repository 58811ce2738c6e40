"""A 1v1 stream that survives a network change: the link re-offers through the real cloud,
runs ICE again and moves QUIC to the new path; the same FLV request carries on.

The move test runs in a network namespace of its own (``xh-ho-<pid>``, root only): the viewer
gathers on 10.77.0.2 of a veth interface; mid-stream 10.77.0.3 appears and 10.77.0.2 goes,
as when a phone leaves one Wi-Fi for another. Everything else stays on the namespace's
loopback, so the host's interfaces and other tests never see it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import parse
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p.link import LinkConfig, handover
from xp2p.link.ice import IceParameters
from xp2p.viewer import P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudClient, CloudError

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
ROOT = Path(__file__).resolve().parents[2]
GOP_MS = 1000  # tests.support.stack.PATTERN: gop 25 at 25 fps


class TimedRecorder:
    """The data callback's bytes with the loop time each chunk came at."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.times: list[float] = []
        self.notifies: list[str] = []

    def on_msg(self, event: str, subtype: str, detail: Any) -> None:
        if event == "notify":
            self.notifies.append(subtype)

    def on_data(self, chunk: bytes) -> None:
        self.data += chunk
        self.times.append(time.monotonic())

    def gap_after(self, at: float) -> float:
        """The longest wait between chunks from ``at`` on (the interruption)."""
        times = [at] + [t for t in self.times if t > at]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def check_continuity(data: bytes) -> dict[str, Any]:
    """One FLV header, timestamps that never go back, and the longest video gap in ms."""
    headers, tags = parse(data)
    video = [t for t in tags if t.is_video and not t.is_sequence_header]
    stamps = [t.timestamp for t in tags if not t.is_script]
    back = sum(1 for a, b in itertools.pairwise(stamps) if b < a)
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(video)]
    return {
        "headers": len(headers),
        "backwards": back,
        "max_video_gap_ms": max(gaps, default=0),
        "video_tags": len(video),
    }


async def stream_and_move(
    stack: Stack, module: P2PModule, move: Any, *, after_bytes: int = 80_000
) -> dict[str, Any]:
    """Start a 1v1 stream, call ``move()`` mid-stream, and report what the viewer saw."""
    rec = TimedRecorder()
    await module.start_p2p_service("cam", DEVICE, msg_callback=rec.on_msg)
    await module.start_stream("cam", rec.on_data)
    await wait_until(lambda: len(rec.data) >= after_bytes, timeout=20, what="stream started")
    link = module._service("cam").link
    assert link.mover is not None
    before = len(rec.data)
    changed_at = time.monotonic()
    await move(link)
    await wait_until(
        lambda: any(ok for _, _, ok in link.mover.history), timeout=10, what="a handover"
    )
    moved_at = time.monotonic()
    await wait_until(lambda: len(rec.data) >= before + after_bytes, timeout=15, what="more bytes")
    await module.stop_stream("cam")
    report = check_continuity(bytes(rec.data))
    report.update(
        interruption=rec.gap_after(changed_at),
        handover_seconds=moved_at - changed_at,
        history=link.mover.history,
        handovers=link.handovers,
        link_alive=not link.closed,
        notifies=rec.notifies,
        path=link.path,
    )
    return report


def assert_survived(report: dict[str, Any]) -> None:
    assert report["link_alive"], report
    assert report["headers"] == 1, report
    assert report["backwards"] == 0, report
    assert report["max_video_gap_ms"] <= GOP_MS + 40, report  # at most one GOP lost
    assert report["interruption"] < 2.0, report
    assert report["notifies"].count("request") == 1, report  # no second start_stream


async def test_move_on_request_keeps_the_stream(stack: Stack, module: P2PModule) -> None:
    """``link.move()`` (what the module calls on a network change) on a working path: a new
    ICE pair through the cloud, and the stream goes on without a hitch."""

    async def move(link: Any) -> None:
        assert await link.move("test")

    report = await stream_and_move(stack, module, move)
    assert_survived(report)
    assert report["handovers"] == 1


async def test_forged_and_replayed_reoffers_are_refused(stack: Stack, module: P2PModule) -> None:
    """A re-offer needs the link's own key: a stranger's (right ref, wrong key) is refused,
    an old one replayed is refused, and the link stays where it is."""
    rec = TimedRecorder()
    await module.start_p2p_service("cam", DEVICE, msg_callback=rec.on_msg)
    link = module._service("cam").link
    assert link.handover_key is not None
    cloud = CloudClient(stack.cloud.url, stack.config.apps[0].key, stack.config.apps[0].secret)
    ice = IceParameters("ufrag", "p" * 22, ("1 1 udp 2130706431 127.0.0.1 9 typ host",))
    try:
        forged = handover.build(b"k" * 32, handover.Direction.OFFER, 1, ice, "unknown")
        forged["handover"]["ref"] = handover.link_ref(link.handover_key)
        with pytest.raises(CloudError) as refused:
            await cloud.connect("DEMO", "cam1", forged)
        assert refused.value.code == "device_refused"
        assert "proof does not match" in str(refused.value)

        genuine = handover.build(link.handover_key, handover.Direction.OFFER, 5, ice, "unknown")
        answer = await cloud.connect("DEMO", "cam1", genuine)
        handover.verify(link.handover_key, handover.Direction.ANSWER, handover.parse(answer))
        with pytest.raises(CloudError) as replayed:
            await cloud.connect("DEMO", "cam1", genuine)
        assert "not newer" in str(replayed.value)

        unknown = handover.build(b"z" * 32, handover.Direction.OFFER, 1, ice, "unknown")
        with pytest.raises(CloudError) as nolink:
            await cloud.connect("DEMO", "cam1", unknown)
        assert "names no link" in str(nolink.value)
    finally:
        await cloud.close()
    assert not link.closed and link.handovers == 0


# ---- the viewer's address goes away: a network namespace of our own ---------------------

NS = f"xh-ho-{os.getpid()}"
DUMMY = "xhv0"


def _ns(*cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", NS, *cmd], check=True, capture_output=True)


def _lab_possible() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


@pytest.fixture
def namespace() -> Any:
    reason = _lab_possible()
    if reason is not None:
        pytest.skip(reason)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        _ns("ip", "link", "set", "lo", "up")
        # A veth pair stands in for the machine's network card (this kernel has no dummy).
        _ns("ip", "link", "add", DUMMY, "type", "veth", "peer", "name", DUMMY + "p")
        _ns("ip", "link", "set", DUMMY, "up")
        _ns("ip", "link", "set", DUMMY + "p", "up")
        _ns("ip", "addr", "add", "10.77.0.1/24", "dev", DUMMY)
        _ns("ip", "addr", "add", "10.77.0.2/24", "dev", DUMMY)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


async def moving_viewer_scenario() -> dict[str, Any]:
    """Runs inside the namespace (``python -c``): a cloud, a device on 10.77.0.1, a viewer on
    10.77.0.2 that moves to 10.77.0.3."""
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig
    from xp2p.device import DeviceAgent

    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0)
    server = CloudServer(config)
    await server.start()
    stack = Stack(server, config, device=None)  # type: ignore[arg-type]
    device = DeviceAgent(stack.device_config(link=LinkConfig(host_addresses=("10.77.0.1",))))
    await device.start()
    await device.wait_signed_in(10)
    module = P2PModule(LinkConfig(host_addresses=("10.77.0.2", "10.77.0.3")))
    await module.init(stack.app_params)

    async def move(link: Any) -> None:
        # The new network first, then the old one goes: the viewer notices on its own.
        _run("ip", "addr", "add", "10.77.0.3/24", "dev", DUMMY)
        _run("ip", "addr", "del", "10.77.0.2/24", "dev", DUMMY)

    try:
        report = await stream_and_move(stack, module, move)
    finally:
        await module.destroy()
        await device.close()
        await server.stop()
    return report


def _run(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


def test_viewer_address_change_moves_the_link(namespace: str) -> None:
    code = (
        "import asyncio, json; from tests.integration.test_handover import moving_viewer_scenario"
        " as s; print('REPORT ' + json.dumps(asyncio.run(s())))"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    print(report)
    assert_survived(report)
    assert report["history"][0][0] == "local address gone", report
    assert "10.77.0.3" in report["path"], report
