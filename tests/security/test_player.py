"""Attacks on the local player and on camera source credentials (issue 10, items 1 and 13),
through real ``xp2p demo`` and ``xp2p device`` processes.

Item 1: a web page the user visits drives the player on 127.0.0.1 with DNS rebinding
(``Host: attacker.example``), no-cors fetches (``Sec-Fetch-Site: cross-site``, or a foreign
``Origin``), guessed URLs (no or a wrong token) and other cameras of the app's scope; a burst
of cross-site ``/playback/`` requests used to open one link each. Item 13: the camera's RTSP
password shows in ``ps`` and, when it holds ``@`` or ``/``, in the log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.ffprobe import FFPROBE
from tests.support.procs import Proc, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.multiprocess


def _xp2p(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    return Proc.start(name, [sys.executable, "-m", "xp2p", *args], log, env)


def _offers(proc: Proc) -> int:
    """Links the viewer asked the cloud for (each refused request that got through would be one)."""
    return len(re.findall(r"offer from app \S+ to DEMO/", proc.text()))


def _device_links(proc: Proc) -> int:
    return len(re.findall(r"link \d+ from app .* up", proc.text()))


@pytest.mark.timeout(90)
async def test_a_web_page_cannot_drive_the_player_and_the_printed_url_still_plays(
    tmp_path: Path, procs: list[Proc]
) -> None:
    demo = _xp2p(
        "demo",
        ["demo", "--port", "0", "--size", "320x180", "--bitrate", "300k"],
        tmp_path / "demo.log",
    )
    procs.append(demo)
    # The player's line ("Open" is the web app's address: tests/multiprocess/test_demo*.py).
    url = demo.wait_line(r"  player \(ffplay, VLC, mpv\): (http://\S+)").group(1)
    parts = urlsplit(url)
    token = dict(q.split("=", 1) for q in parts.query.split("&"))["token"]
    assert len(token) >= 22  # >= 128 bits in URL-safe base64
    base = f"http://{parts.netloc}"
    port = parts.port
    playback = f"{base}/playback/DEMO/cam1.flv?start_time=1700000000&end_time=1700000060"

    refused: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:

        async def status(target: str, headers: dict[str, str] | None = None) -> int:
            async with http.get(target, headers=headers or {}) as response:
                assert "Traceback" not in await response.text()
                return response.status

        # Each attack, even holding the right token, is refused with its own status.
        cases = [
            ("DNS rebinding", url, {"Host": f"attacker.example:{port}"}, 421),
            ("foreign Origin", url, {"Origin": "https://attacker.example"}, 403),
            ("Origin null", url, {"Origin": "null"}, 403),
            ("no-cors fetch", url, {"Sec-Fetch-Site": "cross-site"}, 403),
            ("no token", url.replace(f"&token={token}", ""), {}, 403),
            ("wrong token", url.replace(token, secrets.token_urlsafe(32)), {}, 403),
            ("page without token", f"{base}/", {}, 403),
            ("another camera", url.replace("DEMO/cam1", "DEMO/cam2"), {}, 404),
        ]
        for what, target, headers, want in cases:
            assert await status(target, headers) == want, what

        # A page's burst of /playback/ requests (no token: a page cannot read it) opens nothing.
        burst_headers = [
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
            {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"},
            {"Host": f"rebound.attacker.example:{port}"},
        ]
        statuses = await asyncio.gather(
            *(status(playback, burst_headers[n % 3]) for n in range(30))
        )
        for code in statuses:
            refused[str(code)] = refused.get(str(code), 0) + 1
        assert refused == {"403": 20, "421": 10}
        # Even with the token a page cannot start playbacks cross-site.
        assert await status(f"{playback}&token={token}", burst_headers[0]) == 403
        assert _offers(demo) == 0 and _device_links(demo) == 0, demo.text()

    # The printed URL, as a player opens it (no Origin, no Sec-Fetch-*), still plays.
    if FFPROBE is not None:
        probe = await asyncio.create_subprocess_exec(
            *[FFPROBE, "-v", "error", "-read_intervals", "%+1", "-show_streams", "-of", "json"],
            url,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(probe.communicate(), 60)
        assert probe.returncode == 0, err.decode()
        codecs = {s["codec_type"]: s["codec_name"] for s in json.loads(out)["streams"]}
        assert codecs == {"video": "h264", "audio": "aac"}
        assert _offers(demo) == 1, demo.text()

    assert demo.stop() == 0
    text = demo.text()
    assert "Traceback" not in text
    # 39 refusals, one log line per kind (Host, Origin, Sec-Fetch-Site, token, device).
    assert len(re.findall(r"refused a request", text)) <= 5, text
    # The token is printed for the user (the player/ffplay lines), never logged.
    leaking = [line for line in text.splitlines() if token in line]
    assert leaking and all(
        re.match(r"(  player \(ffplay, VLC, mpv\): |  e\.g\. ffplay )", line) for line in leaking
    )
    print(f"burst: 30 cross-site /playback/ requests, refused {refused}, links opened 0")


def test_a_player_beyond_loopback_needs_the_public_flag(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xp2p", "demo", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--player-public" in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "xp2p", "demo", "--allow-origin", "https://x.example/path"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "allow_origin" in bad.stderr


# -- item 13: camera credentials --------------------------------------------------------------

PASSWORD = "p@ss/w0rd:x%40"  # "@" and "/" used to leak through the half-redaction
#: every form the password could show in: raw, percent-encoded, the tail after its "@"
PASSWORD_FORMS = (PASSWORD, "p%40ss%2Fw0rd", "ss/w0rd", "w0rd:x")


class Camera:
    """An HTTP-FLV camera that wants Basic auth: it records the credentials it was sent."""

    def __init__(self) -> None:
        self.authorised: list[str] = []
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="cam"'})
        self.authorised.append(base64.b64decode(auth[6:]).decode())
        return web.Response(status=404, text="no stream here")  # the device then gives up


def _grant_key_args(tmp_path: Path) -> list[str]:
    """``--grant-key FILE``, which ``xp2p device`` requires (item 3 pins the key): any key
    will do, as this device never reaches a cloud."""
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = tmp_path / "grant-key.pem"
    path.write_bytes(pem)
    return ["--grant-key", str(path)]


@pytest.mark.timeout(60)
async def test_a_camera_password_from_a_file_reaches_the_camera_but_not_ps_or_the_log(
    tmp_path: Path, procs: list[Proc]
) -> None:
    camera = Camera()
    app = web.Application()
    app.router.add_get("/live.flv", camera.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    credentials = tmp_path / "camera-credentials"
    credentials.write_text(f"admin:{PASSWORD}\n")
    credentials.chmod(0o600)
    grant = _grant_key_args(tmp_path)
    common = ["device", "DEMO/cam1", "--cloud", f"http://127.0.0.1:{free_port()}", *grant]
    env = {"XP2P_DEVICE_SECRET": "device-secret-0123456789abcdef"}
    source = f"http://127.0.0.1:{port}/live.flv"
    try:
        device = _xp2p(
            "device",
            [*common, "--source", source, "--source-credentials-file", str(credentials)],
            tmp_path / "device.log",
            env,
        )
        procs.append(device)
        # The same password typed into --source (percent-encoded, as a URL needs it): it
        # works, with a warning that ps shows it.
        typed_url = source.replace("//", f"//admin:{quote(PASSWORD, safe='')}@")
        typed = _xp2p(
            "typed",
            [*common, "--source", typed_url],
            tmp_path / "typed.log",
            env,
        )
        procs.append(typed)
        await wait_until(lambda: len(camera.authorised) >= 2, timeout=30, what="camera auth")
        # Both reached the camera with the password intact ("@", "/", ":" and "%40" too).
        assert camera.authorised[:2] == [f"admin:{PASSWORD}"] * 2

        cmdline = (
            await asyncio.to_thread(Path(f"/proc/{device.popen.pid}/cmdline").read_bytes)
        ).decode()
        assert not any(form in cmdline for form in PASSWORD_FORMS), cmdline
        await wait_until(
            lambda: (
                re.search(r"channel DEMO/cam1/ch0: .*(failed|cannot)", device.text()) is not None
                and "visible in ps" in typed.text()
            ),
            timeout=30,
            what="both devices to report the source",
        )
        for proc in (device, typed):
            proc.stop()
            text = proc.text()
            assert "Traceback" not in text, text
            assert not any(form in text for form in PASSWORD_FORMS), text
            assert f"http://***@127.0.0.1:{port}/live.flv" in text, text
        assert "visible in ps" not in device.text()
    finally:
        await runner.cleanup()
