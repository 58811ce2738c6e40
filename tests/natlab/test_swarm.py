"""1vN through the lab's NATs: an origin and the cloud's edge on the public network, viewers
behind full-cone, port-restricted and symmetric routers (peer links relayed by coturn where
hole punching cannot work). Every viewer plays a decodable stream and they feed each other."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.support.ffprobe import FFPROBE, decodes_h264
from tests.support.procs import Proc

from .lab import CLOUD_IP, NatKind, NatLab
from .world import APP_KEY, CLOUD_URL, LabWorld

pytestmark = [
    pytest.mark.natlab,
    pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs it"),
]
VIEWER = Path(__file__).resolve().parent.parent / "support" / "swarm_viewer.py"
SECONDS = 25.0


@pytest.mark.timeout(240)
def test_viewers_behind_nats_feed_each_other(lab: NatLab, world: LabWorld, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "xp2p", "origin", "--host", CLOUD_IP, "--port", "8081"]
    argv += ["--size", "320x180", "--bitrate", "300k"]
    origin = world.start_process(lab.public, "origin", argv, {})
    try:
        origin.wait_line(r"serving http://")
        source = f"http://{CLOUD_IP}:8081/live/test.flv"
        until = time.time() + SECONDS
        sites = {
            "full": (lab.add_site(NatKind.FULL_CONE), 2),
            "port": (lab.add_site(NatKind.PORT_RESTRICTED), 1),
            "sym": (lab.add_site(NatKind.SYMMETRIC), 1),
        }
        viewers: list[Proc] = []
        for name, (site, count) in sites.items():
            args = [sys.executable, str(VIEWER), "--cloud", CLOUD_URL, "--app-key", APP_KEY]
            args += ["--cloud-ca", str(world.cloud_ca)]
            args += ["--url", source, "--until", f"{until:.3f}", "--name", name]
            args += ["--viewers", str(count), "--out", str(tmp_path / f"{name}.json")]
            args += ["--flv-dir", str(tmp_path)]
            viewers.append(
                world.start_process(
                    site.host, f"swarm-{name}", args, {"XP2P_APP_SECRET": world.app_secret}
                )
            )
        for proc in viewers:
            assert proc.popen.wait(SECONDS + 90) == 0, proc.text()[-3000:]
    finally:
        origin.stop()
    results = [
        v for name in sites for v in json.loads((tmp_path / f"{name}.json").read_text())["viewers"]
    ]
    assert len(results) == 4
    assert not [r for r in results if "error" in r], results
    assert sum(r["p2p_bytes"] for r in results if not r["seed"]) > 0, "nobody fed anybody"
    for result in results:
        assert decodes_h264(tmp_path / f"{result['viewer']}.flv")
