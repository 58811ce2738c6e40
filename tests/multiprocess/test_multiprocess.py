"""Real `xp2p` processes: cloud, device and watcher; ffprobe decodes the player URL."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import Proc, free_port

pytestmark = pytest.mark.multiprocess

FFPROBE = shutil.which("ffprobe")


def _xp2p(name: str, args: list[str], env: dict[str, str], log: Path) -> Proc:
    return Proc.start(name, [sys.executable, "-m", "xp2p", *args], log, env)


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
@pytest.mark.timeout(120)
def test_ffprobe_decodes_h264_from_the_player(tmp_path: Path, procs: list[Proc]) -> None:
    http_port, stun_port, player_port = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    config = tmp_path / "cloud.toml"
    config.write_text(f"""
host = "127.0.0.1"
port = {http_port}
stun_port = {stun_port}

[[apps]]
key = "test-app"
secret = "app-secret-0123456789abcdef"

[[devices]]
product_id = "DEMO"
device_name = "cam1"
secret = "device-secret-0123456789abcdef"
""")
    cloud_url = f"http://127.0.0.1:{http_port}"
    grant_key = tmp_path / "grant.pub"
    cloud = _xp2p(
        "cloud",
        ["cloud", "--config", str(config), "--export-grant-key", str(grant_key)],
        {},
        tmp_path / "cloud.log",
    )
    procs.append(cloud)
    cloud.wait_line(r"grant-signing public key written")
    device = _xp2p(
        "device",
        [
            *("device", "DEMO/cam1", "--cloud", cloud_url, "--grant-key", str(grant_key)),
            *("--size", "320x180", "--bitrate", "300k"),
        ],
        {"XP2P_DEVICE_SECRET": "device-secret-0123456789abcdef"},
        tmp_path / "dev.log",
    )
    procs.append(device)
    device.wait_line(r"signed in to")
    watch = _xp2p(
        "watch",
        [
            "watch",
            "DEMO/cam1",
            "--cloud",
            cloud_url,
            "--app-key",
            "test-app",
            "--port",
            str(player_port),
        ],
        {"XP2P_APP_SECRET": "app-secret-0123456789abcdef"},
        tmp_path / "watch.log",
    )
    procs.append(watch)
    url = watch.wait_line(r"Open (http://\S+)").group(1)
    assert re.fullmatch(
        rf"http://127\.0\.0\.1:{player_port}/live/DEMO/cam1\.flv\?quality=high&token=[\w-]{{43}}",
        url,
    ), url

    probe = subprocess.run(
        [
            FFPROBE or "ffprobe",
            "-v",
            "error",
            "-read_intervals",
            "%+2",
            "-show_streams",
            "-show_frames",
            "-select_streams",
            "v",
            "-of",
            "json",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    (video,) = result["streams"]
    assert video["codec_name"] == "h264"
    assert (video["width"], video["height"]) == (320, 180)
    frames = result["frames"]
    assert len(frames) >= 10
    assert frames[0]["key_frame"] == 1 and frames[0]["pict_type"] == "I"

    # The player closed: the pull stops (seed playerStopPull) and the watcher says so.
    watch.wait_line(r"pull stopped", timeout=15)
    for proc in (watch, device, cloud):
        assert proc.stop() == 0, proc.text()
    for proc in (watch, device, cloud):
        text = proc.text()
        assert "Traceback" not in text, text
        assert "app-secret-0123456789abcdef" not in text
        assert "device-secret-0123456789abcdef" not in text


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
@pytest.mark.timeout(120)
def test_watch_url_serves_a_1vn_stream_like_a_device(tmp_path: Path, procs: list[Proc]) -> None:
    """``xp2p watch --url`` (issue 12 item 1): a 1vN stream, joined through the cloud's edge,
    on the local player as ``/live/stream/NAME.flv``; ffprobe decodes it from a keyframe."""
    http_port, stun_port = free_port(), free_port(socket.SOCK_DGRAM)
    origin_port, player_port = free_port(), free_port()
    config = tmp_path / "cloud.toml"
    config.write_text(f"""
host = "127.0.0.1"
port = {http_port}
stun_port = {stun_port}

[[apps]]
key = "test-app"
secret = "app-secret-0123456789abcdef"

[edge]
allowed_sources = ["http://127.0.0.1:{origin_port}"]
""")
    cloud_url = f"http://127.0.0.1:{http_port}"
    origin = _xp2p(
        "origin",
        ["origin", "--port", str(origin_port), "--name", "lobby", "--size", "320x180"],
        {},
        tmp_path / "origin.log",
    )
    procs.append(origin)
    stream = origin.wait_line(r"xp2p origin serving (http://\S+)").group(1)
    cloud = _xp2p("cloud", ["cloud", "--config", str(config)], {}, tmp_path / "cloud.log")
    procs.append(cloud)
    cloud.wait_line(r"1vN edge:")
    watch = _xp2p(
        "watch",
        [
            *("watch", "--url", stream, "--cloud", cloud_url, "--app-key", "test-app"),
            *("--port", str(player_port)),
        ],
        {"XP2P_APP_SECRET": "app-secret-0123456789abcdef"},
        tmp_path / "watch.log",
    )
    procs.append(watch)
    url = watch.wait_line(r"Open (http://\S+)").group(1)
    assert url.startswith(f"http://127.0.0.1:{player_port}/live/stream/lobby.flv?"), url
    probe = subprocess.run(
        [
            *(FFPROBE or "ffprobe", "-v", "error", "-read_intervals", "%+2"),
            *("-show_streams", "-show_frames", "-select_streams", "v", "-of", "json", url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr + watch.text()
    result = json.loads(probe.stdout)
    (video,) = result["streams"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 180)
    assert len(result["frames"]) >= 10 and result["frames"][0]["key_frame"] == 1
    watch.wait_line(r"stream/lobby connected \(swarm\)", timeout=5)
    for proc in (watch, cloud, origin):
        assert proc.stop() == 0, proc.text()
        assert "Traceback" not in proc.text()
        assert "app-secret-0123456789abcdef" not in proc.text()


@pytest.mark.timeout(60)
def test_cloud_logs_json_lines_and_serves_metrics(tmp_path: Path, procs: list[Proc]) -> None:
    """``xp2p cloud --log-format json``: every log line a JSON object (the status lines the
    command prints for a person stay text on stdout); ``/metrics`` from this machine."""
    http_port, stun_port = free_port(), free_port(socket.SOCK_DGRAM)
    cloud = _xp2p(
        "cloud",
        [
            *("cloud", "--log-format", "json", "--port", str(http_port)),
            *("--stun-port", str(stun_port)),
        ],
        {},
        tmp_path / "cloud.log",
    )
    procs.append(cloud)
    cloud.wait_line(rf"metrics: http://127\.0\.0\.1:{http_port}/metrics \(Prometheus; this machine")
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    assert "xp2p_devices_online 0.0" in body
    cloud.wait_line(r'"logger": "aiohttp.access"|"message": "cloud listening', timeout=10)
    assert cloud.stop() == 0
    logged = [line for line in cloud.text().splitlines() if line.startswith("{")]
    assert logged, cloud.text()
    for line in logged:
        doc = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(doc)
    assert any(json.loads(line)["message"].startswith("cloud listening") for line in logged)
