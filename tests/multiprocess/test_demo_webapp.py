"""``xp2p demo`` as a newcomer runs it: one printed address, opened as a browser would open it.

The test reads the ``Open`` line, fetches the page it names (the fragment stays on this side,
as a browser keeps it), trades the fragment's code for a viewer token the way the page does
(same-origin POST) and lists the camera with that token. The default cloud port is held by
the test, so the demo must fall back to a free one and print that one.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.procs import Proc
from xp2p.cli.serve import DEMO_CLOUD_PORT
from xp2p.web_assets import APP_SRC, WEB_DIR

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """``DEMO_CLOUD_PORT`` in use (by this socket, or already by something else)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", DEMO_CLOUD_PORT))
        sock.listen()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    try:
        yield
    finally:
        sock.close()


@pytest.mark.skipif(
    not (WEB_DIR / APP_SRC / "index.html").is_file(), reason="web/app/index.html is not here"
)
@pytest.mark.timeout(90)
async def test_the_printed_address_serves_the_page_and_its_code_signs_in(
    tmp_path: Path, procs: list[Proc], default_port_taken: None
) -> None:
    demo = Proc.start(
        "demo",
        [sys.executable, "-m", "xp2p", "demo", "--port", "0", "--size", "320x180"],
        tmp_path / "demo.log",
    )
    procs.append(demo)
    address = demo.wait_line(r"\nOpen (http://\S+)\n", timeout=60).group(1)
    assert f"port {DEMO_CLOUD_PORT} is taken" in demo.text()
    parts = urlsplit(address)
    assert (parts.hostname, parts.path) == ("127.0.0.1", "/app/")
    assert parts.port != DEMO_CLOUD_PORT and not parts.query
    assert parts.fragment.startswith("login=")
    code = parts.fragment.removeprefix("login=")
    assert len(code) >= 43  # 32 random bytes
    origin = f"http://{parts.netloc}"

    async with aiohttp.ClientSession() as http:
        # What the browser fetches: the address without its fragment.
        async with http.get(f"{origin}/app/") as page:
            assert page.status == 200
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            assert await page.read() == (WEB_DIR / APP_SRC / "index.html").read_bytes()
        async with http.get(f"{origin}/sdk/player.js") as script:
            assert script.status == 200
            assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
        # What the page does with the code: a same-origin POST, then Bearer requests.
        async with http.post(
            f"{origin}/api/v1/demo/viewer-token",
            json={"code": code},
            headers={"Origin": origin},
        ) as login:
            assert login.status == 200, await login.text()
            minted = await login.json()
        assert "live" in minted["permissions"]
        bearer = {"Authorization": f"Bearer {minted['token']}"}
        async with http.get(f"{origin}/api/v1/app/devices", headers=bearer) as listed:
            assert listed.status == 200
            devices = (await listed.json())["devices"]
        assert devices == [{"product_id": "DEMO", "device_name": "cam1", "online": True}]
        # A page of another origin gets nothing for the same code.
        async with http.post(
            f"{origin}/api/v1/demo/viewer-token",
            data=json.dumps({"code": code}),
            headers={"Origin": "http://attacker.example", "Content-Type": "text/plain"},
        ) as foreign:
            assert foreign.status == 403

    assert demo.stop() == 0
    text = demo.text()
    assert "Traceback" not in text
    # The code is printed once, on the Open line, and never logged.
    assert [line for line in text.splitlines() if code in line] == [f"Open {address}"]
    assert minted["token"] not in text


def test_a_cloud_port_that_is_taken_is_an_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "xp2p", "demo", "--port", "0", "--cloud-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"127.0.0.1:{port}" in done.stderr and "--cloud-port" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_help_says_what_the_address_is() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xp2p", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    flat = " ".join(done.stdout.split())
    assert "/app/#login=CODE" in flat and "--cloud-port" in flat
    assert f"({DEMO_CLOUD_PORT}; if that is taken, any free port" in flat
