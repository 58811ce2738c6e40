"""xp2p inside the NAT lab: a real ``xp2p cloud`` and coturn on the public network, real
``xp2p device`` processes behind the lab's routers, and lab viewers (``viewer_probe.py``).

Shared by the NAT-lab tests and ``bench/nat_matrix.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.coturn import Coturn, start_coturn
from tests.support.procs import Proc

from .lab import CLOUD_ALT_IP, CLOUD_IP, TURN_IP, NatLab, Site

HERE = Path(__file__).resolve().parent

#: TLS: the cloud listens beyond loopback, so it must (a self-signed pair the lab pins).
CLOUD_URL = f"https://{CLOUD_IP}:8080"
APP_KEY = "lab-app"
PRODUCT = "LAB"
ACCOUNTS = 12
#: Small and cheap: the lab proves connectivity, not picture quality.
PATTERN_ARGS = ("--size", "160x90", "--fps", "15", "--bitrate", "150k", "--gop", "15")


@dataclass
class LabWorld:
    lab: NatLab
    workdir: Path
    app_secret: str = field(repr=False)
    device_secrets: dict[str, str] = field(repr=False)
    cloud: Proc | None = None
    coturn: Coturn | None = None
    devices: dict[str, Proc] = field(default_factory=dict)

    def start_process(self, ns: str, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        def launcher(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
            return self.lab.popen(ns, argv, **kwargs)

        return Proc.start(name, argv, self.workdir / f"{name}.log", env, launcher)

    @property
    def cloud_ca(self) -> Path:
        """The cloud's self-signed certificate: what devices and viewers pin."""
        return self.workdir / "tls" / "cloud-cert.pem"

    @property
    def cloud_spki_sha256(self) -> str:
        """Base64 SHA-256 of the cloud certificate's public key: what a browser pins with
        ``--ignore-certificate-errors-spki-list`` (only this certificate is let through)."""
        cert = x509.load_pem_x509_certificate(self.cloud_ca.read_bytes())
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    @property
    def grant_key(self) -> Path:
        """The cloud's grant-signing public key, pinned by every lab device."""
        return self.workdir / "grant.pub"

    # ---- the public side ------------------------------------------------------------

    def start_cloud(self) -> Proc:
        config = self.workdir / "cloud.toml"
        lines = [
            f'host = "{CLOUD_IP}"',
            f'public_host = "{CLOUD_IP}"',
            "port = 8080",
            "stun_port = 3478",
            "stun_alt_port = 3479",
            f'stun_alt_host = "{CLOUD_ALT_IP}"',
            "connect_timeout = 8.0",
            "[[apps]]",
            f'key = "{APP_KEY}"',
            f'secret = "{self.app_secret}"',
            'products = ["*"]',
        ]
        for name, secret in self.device_secrets.items():
            lines += ["[[devices]]", f'product_id = "{PRODUCT}"', f'device_name = "{name}"']
            lines.append(f'secret = "{secret}"')
        if self.coturn is not None:
            urls = ", ".join(f'"{u}"' for u in self.coturn.urls("udp", "tcp"))
            lines += ["[[turn]]", f"urls = [{urls}]", f'shared_secret = "{self.coturn.secret}"']
        # The lab's "public" net is TEST-NET-3, which the edge refuses unless listed.
        lines += ["[edge]", f'allowed_sources = ["http://{CLOUD_IP}:8081"]']
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        argv = [sys.executable, "-m", "xp2p", "cloud", "--config", str(config)]
        argv += ["--tls-self-signed", str(self.cloud_ca.parent)]
        argv += ["--export-grant-key", str(self.grant_key)]
        self.cloud = self.start_process(self.lab.public, "cloud", argv, {})
        self.cloud.wait_line(r"grant-signing public key written")
        return self.cloud

    def start_coturn(self) -> Coturn:
        self.coturn = start_coturn(
            self.workdir / "coturn",
            listen_ip=TURN_IP,
            port=3478,
            secret=secrets.token_urlsafe(18),
            launcher=lambda argv, **kw: self.lab.popen(self.lab.public, argv, **kw),
        )
        return self.coturn

    # ---- cameras and viewers --------------------------------------------------------

    def start_device(self, site: Site, name: str) -> Proc:
        argv = [sys.executable, "-m", "xp2p", "device", f"{PRODUCT}/{name}", "--cloud", CLOUD_URL]
        argv += ["--cloud-ca", str(self.cloud_ca), "--grant-key", str(self.grant_key)]
        env = {"XP2P_DEVICE_SECRET": self.device_secrets[name]}
        proc = self.start_process(site.host, f"device-{name}", [*argv, *PATTERN_ARGS], env)
        self.devices[name] = proc
        proc.wait_line(r"signed in to")
        return proc

    def stop_device(self, name: str) -> None:
        self.devices.pop(name).stop()

    def viewer_argv(self, devices: list[str], **options: Any) -> list[str]:
        argv = [sys.executable, str(HERE / "viewer_probe.py"), "--cloud", CLOUD_URL]
        argv += ["--app-key", APP_KEY, "--cloud-ca", str(self.cloud_ca)]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return [*argv, *(f"{PRODUCT}/{d}" for d in devices)]

    def start_viewer(self, site: Site, name: str, devices: list[str], **options: Any) -> Proc:
        env = {"XP2P_APP_SECRET": self.app_secret}
        return self.start_process(site.host, name, self.viewer_argv(devices, **options), env)

    def start_scenario(self, site: Site, scenario: str, device: str, seconds: float) -> Proc:
        """A ``scenario.py`` viewer; read its events with ``Proc.events()``."""
        argv = [sys.executable, str(HERE / "scenario.py"), scenario, f"{PRODUCT}/{device}"]
        argv += ["--cloud", CLOUD_URL, "--app-key", APP_KEY, "--seconds", str(seconds)]
        argv += ["--cloud-ca", str(self.cloud_ca)]
        env = {"XP2P_APP_SECRET": self.app_secret}
        return self.start_process(site.host, f"scenario-{scenario}-{device}", argv, env)

    def run_viewer(
        self, site: Site, devices: list[str], timeout: float = 120.0, **options: Any
    ) -> list[dict[str, Any]]:
        """Run a lab viewer to completion; its JSON results, one per connection attempt."""
        env = {**os.environ, "XP2P_APP_SECRET": self.app_secret}
        done = subprocess.run(
            ["ip", "netns", "exec", site.host, *self.viewer_argv(devices, **options)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not results:
            raise AssertionError(
                f"viewer in {site.host} failed ({done.returncode}):\n{done.stderr}"
            )
        return results

    def mint_viewer_token(self, devices: list[str], timeout: float = 30.0) -> dict[str, Any]:
        """What an app's backend on the public network does for a browser: a viewer token
        for these devices, minted with the app secret (the secret in the environment, never
        argv). ``{"token": ..., "expiresAt": ...}``, the SDK's ``getViewerToken`` shape."""
        argv = [sys.executable, "-c", _MINT, CLOUD_URL, APP_KEY, str(self.cloud_ca)]
        done = subprocess.run(
            ["ip", "netns", "exec", self.lab.public, *argv, *devices],
            capture_output=True,
            text=True,
            env={**os.environ, "XP2P_APP_SECRET": self.app_secret},
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(f"minting a viewer token failed: {done.stderr[-2000:]}")
        minted: dict[str, Any] = json.loads(done.stdout)
        return minted

    def stop(self) -> None:
        for proc in self.devices.values():
            proc.stop()
        self.devices.clear()
        if self.cloud is not None:
            self.cloud.stop()
        if self.coturn is not None:
            self.coturn.stop()


#: ``mint_viewer_token``'s program: argv CLOUD_URL APP_KEY CA PRODUCT/DEVICE...
_MINT = """
import asyncio, json, os, sys
from xp2p.trust import CloudTrust
from xp2p.viewer.cloud_client import CloudClient

async def main():
    url, key, ca, *devices = sys.argv[1:]
    trust = CloudTrust(ca_file=ca)
    async with CloudClient(url, key, os.environ["XP2P_APP_SECRET"], trust=trust) as backend:
        grant = await backend.mint_viewer_token(devices=[tuple(d.split("/", 1)) for d in devices])
    print(json.dumps({"token": grant.token, "expiresAt": grant.expires_at}))

asyncio.run(main())
"""


def new_world(lab: NatLab, workdir: Path, *, turn: bool = True) -> LabWorld:
    """Cloud (and coturn) up on the lab's public network, with ``ACCOUNTS`` device accounts
    named ``cam1``...; start cameras with ``start_device``."""
    workdir.mkdir(parents=True, exist_ok=True)
    world = LabWorld(
        lab,
        workdir,
        app_secret=secrets.token_urlsafe(18),
        device_secrets={f"cam{i}": secrets.token_urlsafe(18) for i in range(1, ACCOUNTS + 1)},
    )
    try:
        if turn:
            world.start_coturn()
        world.start_cloud()
    except BaseException:
        world.stop()
        raise
    return world
