"""The CLI's viewer verbs reach a running ``xp2p demo`` with no flags: its accounts are random
per run, so the demo leaves a 0600 file saying where it is (``xp2p.cli.demo_state``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import Proc

pytestmark = pytest.mark.multiprocess


@pytest.mark.timeout(120)
def test_cmd_finds_the_running_demo(tmp_path: Path, procs: list[Proc]) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("XP2P_APP_SECRET", None)
    verb = [sys.executable, "-m", "xp2p", "cmd", "DEMO/cam1", "get_device_st", "type=live"]
    before = subprocess.run(verb, env=env, capture_output=True, text=True, timeout=60)
    assert before.returncode != 0
    assert "which app?" in before.stderr and "xp2p demo" in before.stderr
    assert "Traceback" not in before.stderr

    demo = Proc.start(
        "demo",
        [sys.executable, "-m", "xp2p", "demo", "--port", "0", "--cloud-port", "0"],
        tmp_path / "demo.log",
        env=env,
    )
    procs.append(demo)
    demo.wait_line(r"Ctrl-C stops", timeout=60)
    state = tmp_path / "run" / "xp2p" / "demo.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    doc = json.loads(state.read_text())
    assert doc["pid"] == demo.popen.pid and doc["cloud_url"] in demo.text()
    assert doc["app_secret"] not in demo.text()  # the secret is in the file, not on screen

    after = subprocess.run(verb, env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
    assert "using the running xp2p demo" in after.stderr
    assert "appConnectNum" in after.stdout

    demo.stop()
    assert not state.exists()  # removed when the demo stops
