"""NAT classification in the lab: a real ``xp2p cloud`` with its four STUN sockets on the
public network (203.0.113.1 and .2), and behind each kind of lab router a host whose
``P2PModule.init`` must name that router's behaviour exactly.

The lab here has a prefix of its own, so that it never tears down a lab another test run on
this machine is using.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .lab import CLOUD_ALT_IP, CLOUD_IP, NatKind, NatLab, unavailable_reason

REASON = unavailable_reason()
pytestmark = [
    pytest.mark.natlab,
    pytest.mark.skipif(REASON is not None, reason=f"NAT lab unavailable: {REASON}"),
]

PREFIX = "xnc"
#: TLS: the cloud listens beyond loopback, so it must (a self-signed pair the probe pins).
CLOUD_URL = f"https://{CLOUD_IP}:8080"

#: What init must find behind each router: nat_type, mapping, filtering.
EXPECTED = {
    NatKind.FULL_CONE: ("full-cone", "endpoint-independent", "endpoint-independent"),
    NatKind.RESTRICTED_CONE: ("restricted-cone", "endpoint-independent", "address-dependent"),
    NatKind.PORT_RESTRICTED: (
        "port-restricted",
        "endpoint-independent",
        "address-and-port-dependent",
    ),
    # --random-fully: a new port for every destination, so tests II and III differ too.
    NatKind.SYMMETRIC: ("symmetric", "address-and-port-dependent", "address-and-port-dependent"),
    NatKind.UDP_BLOCKED: ("udp-blocked", "unknown", "unknown"),
}

#: Runs in a lab host: init a module against the lab cloud, print what it found as JSON.
PROBE = """
import asyncio, json, os, sys
from pathlib import Path
from xp2p.trust import CloudTrust
from xp2p.viewer import AppParams, P2PModule

async def main():
    events = []
    module = P2PModule()
    trust = CloudTrust(ca_file=Path(sys.argv[3]))
    params = AppParams(sys.argv[1], sys.argv[2], os.environ["XP2P_APP_SECRET"], cloud_trust=trust)
    await module.init(params, event_handler=lambda e, d: events.append([e, d]))
    behaviour = module.nat_behaviour
    print(json.dumps({
        "nat_type": module.nat_type,
        "behaviour": behaviour.to_json() if behaviour else None,
        "events": events,
    }))
    await module.destroy()

asyncio.run(main())
"""


@dataclass
class LabCloud:
    app_key: str
    app_secret: str
    cloud_ca: Path


@pytest.fixture(scope="module")
def nat_lab() -> Iterator[NatLab]:
    built = NatLab(PREFIX).up()
    try:
        yield built
    finally:
        built.down()


@pytest.fixture(scope="module")
def lab_cloud(nat_lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCloud]:
    log = Path(tmp_path_factory.mktemp("natclass")) / "cloud.log"
    argv = [sys.executable, "-m", "xp2p", "cloud", "--host", CLOUD_IP, "--port", "8080"]
    argv += ["--stun-port", "3478", "--stun-alt-port", "3479", "--stun-alt-host", CLOUD_ALT_IP]
    argv += ["--print-secrets"]  # demo accounts: the probe needs the app's secret
    argv += ["--tls-self-signed", str(log.parent / "tls")]
    with log.open("wb") as out:
        proc = nat_lab.popen(
            nat_lab.public, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        text = _wait_for(log, proc, r"listening on")
        key = re.search(r"app key (\S+)", text)
        secret = re.search(r"XP2P_APP_SECRET=(\S+)", text)
        assert key and secret, text
        yield LabCloud(key.group(1), secret.group(1), log.parent / "tls" / "cloud-cert.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(log: Path, proc: subprocess.Popen[bytes], pattern: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            raise AssertionError(f"xp2p cloud exited {proc.returncode}:\n{text}")
        time.sleep(0.1)
    raise AssertionError(f"xp2p cloud did not start:\n{log.read_text(errors='replace')}")


def _probe_from(ns: str, cloud: LabCloud) -> dict[str, Any]:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            PROBE,
            CLOUD_URL,
            cloud.app_key,
            str(cloud.cloud_ca),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "XP2P_APP_SECRET": cloud.app_secret},
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"probe in {ns} failed:\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@pytest.mark.parametrize("kind", list(EXPECTED), ids=str)
def test_init_classifies_the_lab_router(
    nat_lab: NatLab, lab_cloud: LabCloud, kind: NatKind
) -> None:
    # A fresh site per kind: one probe only, since the restricted cone's permissions are kept
    # per host for 30 s, and the first probe's mapping tests to the other IP would open it.
    site = nat_lab.add_site(kind)
    found = _probe_from(site.host, lab_cloud)
    nat_type, mapping, filtering = EXPECTED[kind]
    behaviour = found["behaviour"]
    assert (found["nat_type"], behaviour["mapping"], behaviour["filtering"]) == (
        nat_type,
        mapping,
        filtering,
    ), found
    assert behaviour["local"].startswith(site.host_ip + ":")
    if kind == NatKind.UDP_BLOCKED:
        assert behaviour["mapped"] is None
        assert [e for e, _ in found["events"]] == ["natError"]
        assert found["events"][0][1]["code"] == -2202
    else:
        assert behaviour["mapped"].startswith(site.wan_ip + ":")
        assert found["events"] == []


def test_init_on_the_public_network_is_open(nat_lab: NatLab, lab_cloud: LabCloud) -> None:
    """No NAT at all: the cloud's own namespace, where the server sees the host's address."""
    found = _probe_from(nat_lab.public, lab_cloud)
    behaviour = found["behaviour"]
    assert (found["nat_type"], behaviour["mapping"], behaviour["filtering"]) == (
        "open",
        "endpoint-independent",
        "endpoint-independent",
    ), found
    assert behaviour["mapped"] == behaviour["local"]
