"""``xp2p cloud --db`` with ``xp2p admin`` as real processes (issue 13 items 1 and 2): an
operator provisions a camera and an app while the cloud runs, the camera signs in from its
provisioning file alone, the app reaches it; a rotated key disconnects the old camera; the
registry outlives the cloud's restart. No secret appears in any output but where it is
handed over (the app's secret, once; the provisioning file, mode 0600)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.support.procs import Proc, free_port
from xp2p.cloud.secret_box import new_key

pytestmark = pytest.mark.multiprocess

ADMIN_TOKEN = "operator-admin-token-0123456789"
SEED_SECRET = "seed-app-secret-0123456789"


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xp2p", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.timeout(180)
def test_provision_a_camera_and_an_app_while_the_cloud_runs(
    tmp_path: Path, procs: list[Proc]
) -> None:
    http_port, stun_port = free_port(), free_port(socket.SOCK_DGRAM)
    cloud_url = f"http://127.0.0.1:{http_port}"
    # The grant key devices pin must outlive the cloud's restart: a file, as in production.
    grant = tmp_path / "grant.pem"
    grant.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    config = tmp_path / "cloud.toml"
    config.write_text(f"""
grant_key_file = "{grant}"
host = "127.0.0.1"
port = {http_port}
stun_port = {stun_port}

[[apps]]
key = "seed-app"
secret = "{SEED_SECRET}"
""")
    registry_key = new_key()
    cloud_env = {"XP2P_ADMIN_TOKEN": ADMIN_TOKEN, "XP2P_REGISTRY_KEY": registry_key}
    db = f"sqlite:///{tmp_path / 'registry.db'}"

    def start_cloud(name: str) -> Proc:
        cloud = Proc.start(
            name,
            [sys.executable, "-m", "xp2p", "cloud", "--config", str(config), "--db", db],
            tmp_path / f"{name}.log",
            cloud_env,
        )
        procs.append(cloud)
        cloud.wait_line(r"admin API: http://")
        return cloud

    cloud = start_cloud("cloud")
    admin = {"XP2P_ADMIN_TOKEN": ADMIN_TOKEN}
    where = ["--cloud", cloud_url]

    made = run(
        ["admin", "device", "add", "DEMO/cam7", "--out", str(tmp_path / "cam7.json"), *where], admin
    )
    assert made.returncode == 0, made.stderr
    provisioning = tmp_path / "cam7.json"
    assert stat.S_IMODE(provisioning.stat().st_mode) == 0o600
    doc = json.loads(provisioning.read_text())
    assert (doc["product_id"], doc["device_name"], doc["cloud_url"]) == ("DEMO", "cam7", cloud_url)

    app = run(["admin", "app", "add", "phone-app", "--product", "DEMO", *where], admin)
    assert app.returncode == 0, app.stderr
    secret = app.stdout.strip().rsplit("XP2P_APP_SECRET=", 1)[1]
    listed = run(["admin", "app", "list", *where], admin)
    assert "phone-app  enabled  products=DEMO" in listed.stdout and secret not in listed.stdout
    devices = run(["admin", "device", "list", *where], admin)
    assert "DEMO/cam7  enabled  key" in devices.stdout

    camera = Proc.start(
        "cam7",
        [sys.executable, "-m", "xp2p", "device", "--provisioning", str(provisioning),
         "--size", "320x180", "--bitrate", "300k"],
        tmp_path / "cam7.log",
        {},
    )  # fmt: skip
    procs.append(camera)
    camera.wait_line(r"device DEMO/cam7 signed in to")
    state = ["cmd", "DEMO/cam7", "get_device_st", "type=live", *where, "--app-key", "phone-app"]
    reply = run(state, {"XP2P_APP_SECRET": secret})
    assert reply.returncode == 0, reply.stderr
    assert json.loads(reply.stdout)[0]["status"] == "0"

    # Negatives: no token, a wrong one, an unknown device: the cloud's code on stderr, exit 1.
    assert (
        "set $XP2P_ADMIN_TOKEN"
        in run(["admin", "app", "list", *where], {"XP2P_ADMIN_TOKEN": ""}).stderr
    )
    wrong = run(["admin", "app", "list", *where], {"XP2P_ADMIN_TOKEN": "x" * 30})
    assert wrong.returncode == 1 and "admin_token_invalid: wrong admin token" in wrong.stderr
    unknown = run(["admin", "device", "disable", "DEMO/nope", *where], admin)
    assert unknown.returncode == 1 and "unknown_device: no device DEMO/nope" in unknown.stderr

    # The key rotated: the camera running on the old key is disconnected and refused.
    rotated = run(
        ["admin", "device", "rotate", "DEMO/cam7", "--out", str(tmp_path / "new.json"), *where],
        admin,
    )
    assert rotated.returncode == 0, rotated.stderr
    cloud.wait_line(r"device DEMO/cam7: its credentials changed; closing its session", 10)
    cloud.wait_line(r"device sign-in refused for 'DEMO'/'cam7'", 20)
    camera.stop()

    # The cloud restarted: the registry (the app, its secret, the new key) is still there.
    assert cloud.stop() == 0
    cloud = start_cloud("cloud2")
    camera = Proc.start(
        "cam7-new",
        [sys.executable, "-m", "xp2p", "device", "--provisioning", str(tmp_path / "new.json"),
         "--size", "320x180", "--bitrate", "300k"],
        tmp_path / "cam7-new.log",
        {},
    )  # fmt: skip
    procs.append(camera)
    camera.wait_line(r"device DEMO/cam7 signed in to")
    reply = run(state, {"XP2P_APP_SECRET": secret})
    assert reply.returncode == 0, reply.stderr
    for proc in (camera, cloud):
        text = proc.text()
        assert "Traceback" not in text
        for hidden in (secret, SEED_SECRET, ADMIN_TOKEN, registry_key, doc["device_key"]):
            assert hidden not in text
