"""Every snippet of README.md runs as written (issue 12 item 7): the commands as processes, the
Python as code against them. What a test must change is only what a shared machine forces:
fixed ports become free ones, and placeholders (`rec_....flv`, `https://host/live/x.flv`,
`secret`, the callbacks the snippets name) become real values. A block that is not run says
why in ``NOT_RUN``; a new block in the README fails ``test_every_block_is_run`` until a test
runs it or it is listed there."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.procs import Proc
from xp2p.viewer import AppParams, P2PModule, StreamInfo

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
XP2P = [sys.executable, "-m", "xp2p"]

#: Blocks not run here, by their first line, and why.
NOT_RUN = {
    "xp2p demo: cloud http://127.0.0.1:8080, camera DEMO/cam1 online, NAT open": (
        "output, not input: tests/multiprocess/test_demo_webapp.py reads the real demo's lines"
    ),
    "# turnserver.conf: listening-ip=203.0.113.3  relay-ip=203.0.113.3  use-auth-secret": (
        "the operator's own addresses: tests/integration/test_turn.py starts coturn with these "
        "settings (use-auth-secret, static-auth-secret, realm) and the cloud with --turn"
    ),
}


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def block(first_line: str) -> str:
    found = [text for _, text in blocks() if text.startswith(first_line)]
    assert len(found) == 1, f"README has {len(found)} blocks starting {first_line!r}"
    return found[0]


RUN = {
    "bash scripts/demo.sh",
    'host = "127.0.0.1"',
    "xp2p cloud --config cloud.toml --tls-self-signed tls",
    "from xp2p import P2PModule",
    "result = await p2p.send_command",
    'await p2p.start_p2p_service("live"',
    "xp2p origin --port 8081",
    "[edge]",
}


def test_every_block_is_run() -> None:
    for _, text in blocks():
        first = text.splitlines()[0]
        assert any(first.startswith(r) for r in RUN) or first in NOT_RUN, (
            f"README block {first!r} is neither run by tests/multiprocess/test_readme.py "
            "nor listed in its NOT_RUN with a reason"
        )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Ports:
    """The README's fixed ports, each mapped to a free one."""

    def __init__(self) -> None:
        self.map = {
            8080: free_port(),
            3478: free_port(socket.SOCK_DGRAM),
            8081: free_port(),
            8443: free_port(),
        }

    def __call__(self, text: str) -> str:
        for old, new in self.map.items():
            text = re.sub(rf"\b{old}\b", str(new), text)
        return text


def commands(text: str) -> list[list[str]]:
    """The shell lines of a block (continuations joined, comments dropped) as argv lists,
    with their `VAR=value` prefixes kept as the first items."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def start(argv: list[str], name: str, cwd: Path, procs: list[Proc]) -> Proc:
    env = {}
    while argv and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    assert argv[0] == "xp2p", argv
    proc = Proc.start(
        name,
        XP2P + argv[1:],
        cwd / f"{name}.log",
        env=env,
        launcher=lambda a, **kw: subprocess.Popen(a, cwd=cwd, **kw),
    )
    procs.append(proc)
    return proc


async def fetch_flv(url: str, size: int = 60_000) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, response.status
        data = b""
        async for piece in response.content.iter_any():
            data += piece
            if len(data) >= size:
                return data
    raise AssertionError(f"{url} ended after {len(data)} bytes")


def ffprobe_decodes(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "h264" in out.stdout.split(), out.stdout


@pytest.mark.timeout(120)
async def test_the_demo_script_prints_its_address(tmp_path: Path, procs: list[Proc]) -> None:
    (line,) = [c for c in commands(block("bash scripts/demo.sh")) if "demo.sh" in c[1]]
    assert line == ["bash", "scripts/demo.sh"]
    # Free ports instead of 8000/8080: other tests may hold them.
    proc = Proc.start(
        "demo.sh",
        ["bash", str(ROOT / line[1]), "--port", "0", "--cloud-port", "0"],
        tmp_path / "demo.log",
    )
    procs.append(proc)
    address = proc.wait_line(r"\nOpen (http://\S+/app/#login=\S+)\n", timeout=100).group(1)
    async with aiohttp.ClientSession() as http, http.get(address.split("#")[0]) as page:
        assert page.status == 200


@pytest.mark.timeout(150)
async def test_the_three_shells_run_as_written(tmp_path: Path, procs: list[Proc]) -> None:
    ports = Ports()
    (tmp_path / "cloud.toml").write_text(ports(block('host = "127.0.0.1"')))
    cloud_line, device_line, watch_line = commands(ports(block("xp2p cloud --config cloud.toml")))
    cloud = start(cloud_line, "cloud", tmp_path, procs)
    cloud.wait_line(r"cloud listening on https://", timeout=60)
    device = start(device_line, "device", tmp_path, procs)
    device.wait_line(r"signed in to the cloud", timeout=60)
    watch = start([*watch_line, "--port", str(free_port())], "watch", tmp_path, procs)
    live = watch.wait_line(r"\nOpen (http://\S+)", timeout=60).group(1)
    ffprobe_decodes(await fetch_flv(live), tmp_path / "live.flv")


@pytest.fixture
async def plain_cloud(tmp_path: Path, procs: list[Proc]) -> AsyncIterator[dict[str, Any]]:
    """The README's config (with its [edge] table) served without TLS, as loopback allows,
    the README's camera recording, and the README's origin: what the Python snippets use."""
    ports = Ports()
    origin_line = commands(ports(block("xp2p origin --port 8081")))[0]
    origin = start(origin_line, "origin", tmp_path, procs)
    source = origin.wait_line(r"serving (http://\S+)", timeout=60).group(1)
    config = ports(block('host = "127.0.0.1"')) + "\n" + ports(block("[edge]"))
    (tmp_path / "cloud.toml").write_text(config)
    cloud_line, device_line, _ = commands(ports(block("xp2p cloud --config cloud.toml")))
    cloud_line = [a for a in cloud_line if a not in ("--tls-self-signed", "tls")]
    cloud = start(cloud_line, "cloud", tmp_path, procs)
    url = cloud.wait_line(r"cloud listening on (http://[^\s,]+)", timeout=60).group(1)
    device_line = [a.replace("https://", "http://") for a in device_line]
    i = device_line.index("--cloud-ca")
    del device_line[i : i + 2]
    device_line += ["--recordings-dir", str(tmp_path / "rec"), "--segment-seconds", "2"]
    device = start(device_line, "device", tmp_path, procs)
    device.wait_line(r"signed in to the cloud", timeout=60)
    yield {"url": url, "source": source, "tmp": tmp_path, "ports": ports}


def snippet(text: str, **replace: str) -> str:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return "async def run_snippet():\n" + textwrap.indent(text, "    ") + "\n"


async def run_snippet(code: str, where: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, f"README.md ({where})", "exec"), namespace)
    await asyncio.wait_for(namespace["run_snippet"](), 60)
    return namespace


APP_SECRET = "a long random secret"  # the README config's


@pytest.mark.timeout(180)
async def test_the_python_snippets_run(plain_cloud: dict[str, Any]) -> None:
    url = plain_cloud["url"]
    got = bytearray()
    stopping = asyncio.Event()
    events: list[Any] = []

    def on_data(chunk: bytes) -> None:
        got.extend(chunk)
        if len(got) > 100_000:
            stopping.set()

    viewer_api = block("from xp2p import P2PModule")
    await run_snippet(
        snippet(viewer_api, **{"http://127.0.0.1:8080": url}),
        "the viewer API",
        {
            "secret": APP_SECRET,
            "on_nat": lambda *a: events.append(a),
            "on_msg": lambda *a: events.append(a),
            "on_data": on_data,
            "stopping": stopping,
        },
    )
    assert got[:3] == b"FLV"
    assert any(e[1] == "connected" for e in events if len(e) == 3)

    # The extended functions, on a service as the first snippet leaves it running.
    p2p = P2PModule()
    await p2p.init(AppParams(url, "my-app", APP_SECRET))
    try:
        await p2p.start_p2p_service("cam", StreamInfo(product_id="DEMO", device_name="cam1"))
        name = await recorded_file(p2p)
        written = bytearray()
        tmp = plain_cloud["tmp"]

        async def pcm_chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield bytes(1600)  # 0.1 s of 8 kHz silence each

        progress: list[tuple[int, int]] = []
        namespace = await run_snippet(
            snippet(
                block("result = await p2p.send_command"),
                **{"rec_....flv": name, '"clips/"': repr(str(tmp / "clips") + "/")},
            ),
            "the 1v1 extended functions",
            {
                "p2p": p2p,
                "f": type("F", (), {"write": staticmethod(written.extend)})(),
                "asyncio": asyncio,
                "pcm_chunks": pcm_chunks(),
                "show": lambda done, total: progress.append((done, total)),
            },
        )
        assert "run_snippet" in namespace
        original = (tmp / "rec" / "ch0" / name).read_bytes()
        assert bytes(written) == original
        clip = tmp / "clips" / name
        assert hashlib.sha256(clip.read_bytes()).digest() == hashlib.sha256(original).digest()
        assert progress and progress[-1] == (len(original), len(original))
    finally:
        await p2p.destroy()

    # 1vN, through the cloud's edge, from the README's origin (allowed by its [edge] table).
    p2p = P2PModule()
    await p2p.init(AppParams(url, "my-app", APP_SECRET))
    swarm = bytearray()
    try:
        await run_snippet(
            snippet(
                block('await p2p.start_p2p_service("live"'),
                **{"https://host/live/x.flv": plain_cloud["source"]},
            ).replace(
                '    p2p.get_swarm_stats("live")',
                '    await wait_bytes()\n    p2p.get_swarm_stats("live")',
            ),
            "1vN",
            {
                "p2p": p2p,
                "StreamInfo": StreamInfo,
                "on_msg": lambda *a: None,
                "on_data": swarm.extend,
                "wait_bytes": lambda: wait_for_bytes(swarm, 50_000),
            },
        )
        assert swarm[:3] == b"FLV"
    finally:
        await p2p.destroy()


async def wait_for_bytes(data: bytearray, size: int) -> None:
    for _ in range(300):
        if len(data) >= size:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(data)} bytes")


async def recorded_file(p2p: P2PModule) -> str:
    """The first finished recording (the device records its live stream in 2 s segments)."""
    for _ in range(100):
        result = await p2p.send_command(
            "cam",
            "action=inner_define&channel=0&cmd=get_file_list&start_time=0&end_time=9999999999",
        )
        files = result.data.get("file_list", []) if isinstance(result.data, dict) else []
        if files:
            return str(files[0]["file_name"])
        await asyncio.sleep(0.2)
    raise AssertionError("the device recorded nothing")
