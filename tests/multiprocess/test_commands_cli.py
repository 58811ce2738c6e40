"""``xp2p cmd`` as a real process against a cloud and device running in the test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.multiprocess


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


async def xp2p_cmd(stack: Stack, *args: str, secret: str | None = None) -> Run:
    app = stack.config.apps[0]
    env = {**os.environ, "XP2P_APP_SECRET": app.secret if secret is None else secret}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xp2p",
        "cmd",
        "DEMO/cam1",
        *args,
        "--cloud",
        stack.cloud.url,
        "--app-key",
        app.key,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert app.secret not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run


@pytest.mark.timeout(180)
async def test_xp2p_cmd_prints_replies_and_exits_by_result(stack: Stack) -> None:
    ok = await xp2p_cmd(stack, "get_device_st", "type=live")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == [{"status": "0", "appConnectNum": "0"}]
    assert ok.stdout.startswith("[\n  {\n")  # pretty

    ptz = json.dumps({"topic": "ptz", "data": {"cmd": "ptz_up_press"}, "message_id": 1})
    user, keyframe, unknown = await asyncio.gather(
        xp2p_cmd(stack, "--user", ptz),
        xp2p_cmd(stack, "request_keyframe", "--channel", "0"),
        xp2p_cmd(stack, "format_disk", "--timeout", "5"),
    )
    assert (user.returncode, json.loads(user.stdout)) == (0, {"apex": "no"})
    simulator = stack.device.routes.state.ptz
    assert simulator is not None and simulator.heads[0].moving == "up"
    assert (keyframe.returncode, json.loads(keyframe.stdout)) == (0, {"status": "0"})
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "failure (status 406, errcode 406): unknown command 'format_disk'" in unknown.stderr

    missing = await xp2p_cmd(stack, "get_device_st", "--channel", "9")
    assert missing.returncode == 1 and "errcode 404): no channel 9" in missing.stderr


@pytest.mark.timeout(180)
async def test_xp2p_cmd_errors(stack: Stack) -> None:
    usage, bad_secret, slow = await asyncio.gather(
        xp2p_cmd(stack, "get_device_st", "--user", "x"),
        xp2p_cmd(stack, "get_device_st", secret="wrong-secret"),
        xp2p_cmd(stack, "--user", "x", "--timeout", "0"),
    )
    assert usage.returncode == 2 and "either a COMMAND or --user" in usage.stderr
    assert bad_secret.returncode == 4 and "cloud sign-in failed" in bad_secret.stderr
    assert slow.returncode == 2 and "positive number of seconds" in slow.stderr

    @stack.device.user_command
    async def never(channel: int, command: str) -> str:
        await asyncio.Event().wait()  # never answers: the CLI's --timeout has to end it
        return "late"

    timeout = await xp2p_cmd(stack, "--user", "x", "--timeout", "0.5")
    assert timeout.returncode == 3 and "timeout" in timeout.stderr
    assert "no reply within 0.5 s" in timeout.stderr


def test_xp2p_cmd_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    from xp2p.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["cmd", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "get_device_st",
        "--user",
        "--channel",
        "--timeout",
        "exit status",
        "XP2P_APP_SECRET",
    ):
        assert needle in text, needle
