"""Chromium as a viewer (issue 11 item 6): the JavaScript SDK over WebRTC beside HTTP-FLV.

Headless Chromium plays a camera through the SDK (``XP2PModule`` over a WebRTC data channel
into ``createLivePlayer({push})``) and, in the same run and the same page, the same camera's
stream as HTTP-FLV (``createLivePlayer({url})`` on the local player, ``xp2p.player.server``,
whose pull of the camera is warm: the ideal HTTP server next to the camera). Measured:

* **first frame after startStream** (HTTP-FLV: after the player is created, which fetches) and
  **page load to first frame** (``performance.now()`` of the first decoded frame: from the
  navigation's start; the page imports the SDK, gets a viewer token from its app backend,
  connects, starts the stream), at RTT 0, 50 and 100 ms, runs alternating, medians;
* **live latency** (newest buffered media time minus playing time, the player's stats) at 1
  and 10 minutes (medians of the 10 s before each), and **stalls** (``waiting`` events after
  the first frame, not while seeking) in 10 minutes of a 4 Mbit/s 1280x720 stream at 1 %
  loss, both at RTT 50 ms, on two paths at once (so 10 minutes in all);
* **device CPU per viewer**: the camera in its own process, its CPU time (``/proc``) over a
  fixed window with N Chromium viewers and with N Python (QUIC) viewers, minus the camera
  with no viewer, per viewer-minute.

Where things run: each Chromium sits in its own network namespace (prefix ``xpbb-``), joined
to the machine by a veth pair (198.51.100.64/30 and .68/30, TEST-NET); the cloud, the app's
site, the players and the cameras run in the machine's own namespace. What the namespace
*receives* over its veth is delayed by the whole RTT (and dropped at the loss rate) by the
NFQUEUE delayer (tests/natlab/delayer.py: this kernel has no netem), so every path between
Chromium and a camera (WebRTC's UDP, HTTP-FLV's TCP) has the RTT, and nothing else on the
machine does. The page and the cloud are reached on the namespace's own loopback, relayed to
the machine's through Unix sockets: signalling stays near, as in bench/first_frame.py (and
the cloud may stay on plain HTTP on loopback). Loss applies to what Chromium receives (the
stream's direction), not to what it sends.

The cameras loop pre-made FLV files (no encoder running): 640x360@25 800 kbit/s GOP 50 for
the first frames and the latency, and 1280x720@25 ~4 Mbit/s GOP 50 (bench/serve_cpu.py's
file) for the stalls and the CPU. Needs root (namespaces, iptables) and NetfilterQueue.

    sudo .venv/bin/python -m bench.browser [--quick] [--json PATH] [--runs N]
        [--rtt 0,50,100] [--long S] [--long-rtt MS] [--loss 0.01] [--viewers 1,2] [--window S]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench._common import Row, log, median, print_rows, print_table, standard_arguments, write_json

HERE = Path(__file__).resolve().parent
DELAYER = HERE.parent / "tests" / "natlab" / "delayer.py"
PREFIX = "xpbb-"
PRODUCT = "DEMO"
SMALL, BIG = "cam1", "cam2"  #: the 800 kbit/s and the 4 Mbit/s camera
SMALL_PATTERN = {"width": 640, "height": 360, "fps": 25, "bitrate": 800_000, "gop": 50}
FLV = {"filename": "ipc.flv", "params": "action=live&channel=0&quality=high"}
RESULTS = HERE / "results" / "browser.json"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


# ---- the paths: a namespace per Chromium --------------------------------------------------------


@dataclass
class NetPath:
    """One Chromium's network: namespace ``xpbb-<name>``, veth ``<ns>0`` (machine side,
    ``host``) and ``<ns>1`` (inside, ``inner``), a delayer on what the inside receives."""

    name: str
    subnet: int  #: the /30 is 198.51.100.<subnet>
    queue: int
    delayer: subprocess.Popen[bytes] | None = None
    rtt_ms: float = 0.0
    loss: float = 0.0

    @property
    def ns(self) -> str:
        return PREFIX + self.name

    @property
    def host(self) -> str:
        return f"198.51.100.{self.subnet + 1}"

    @property
    def inner(self) -> str:
        return f"198.51.100.{self.subnet + 2}"

    def in_ns(self, *argv: str) -> None:
        run("ip", "netns", "exec", self.ns, *argv)

    def build(self) -> None:
        outer, inner = self.ns + "0", self.ns + "1"
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", self.ns)
        run("ip", "addr", "add", self.host + "/30", "dev", outer)
        run("ip", "link", "set", outer, "up")
        self.in_ns("ip", "addr", "add", self.inner + "/30", "dev", inner)
        self.in_ns("ip", "link", "set", inner, "up")
        self.in_ns("ip", "link", "set", "lo", "up")
        # Everything (any of the machine's addresses a camera offers) goes through the veth.
        self.in_ns("ip", "route", "add", "default", "via", self.host)
        # Wire-sized packets, so "1 % loss" is 1 % of packets for TCP and UDP alike.
        for argv in (
            ("ethtool", "-K", outer),
            ("ip", "netns", "exec", self.ns, "ethtool", "-K", inner),
        ):
            run(*argv, "gro", "off", "gso", "off", "tso", "off", check=False)

    def condition(self, rtt_ms: float, loss: float = 0.0) -> None:
        """The whole RTT on what the namespace receives (so both directions of every
        exchange see it once), and the loss there. No ``--queue-bypass``: a dead delayer
        darkens the path rather than letting an undelayed run pass."""
        self.stop_delayer()
        self.in_ns("iptables", "-t", "mangle", "-F", "PREROUTING")
        self.rtt_ms, self.loss = rtt_ms, loss
        if rtt_ms <= 0 and loss <= 0:
            return
        argv = ["ip", "netns", "exec", self.ns, sys.executable, str(DELAYER)]
        argv += ["--queue", str(self.queue), "--delay-ms", f"{rtt_ms:g}", "--loss", f"{loss:g}"]
        self.delayer = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        time.sleep(0.5)  # let it bind the queue before packets go to it
        if self.delayer.poll() is not None:
            raise RuntimeError(f"the delayer of {self.ns} exited (see its stderr)")
        rule = ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", self.ns + "1"]
        self.in_ns(*rule, "-j", "NFQUEUE", "--queue-num", str(self.queue))

    def stop_delayer(self) -> None:
        if self.delayer is not None and self.delayer.poll() is None:
            self.delayer.terminate()
            try:
                self.delayer.wait(5)
            except subprocess.TimeoutExpired:
                self.delayer.kill()
                self.delayer.wait()
        self.delayer = None

    def teardown(self) -> None:
        self.stop_delayer()
        run("ip", "netns", "del", self.ns, check=False)  # takes the veth pair with it


def delete_leftovers() -> None:
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split(" ")[0]
        if name.startswith(PREFIX):
            run("ip", "netns", "del", name, check=False)
    for line in run("ip", "-br", "link", check=False).stdout.splitlines():
        iface = line.split(" ")[0].split("@")[0]
        if iface.startswith(PREFIX):
            run("ip", "link", "del", iface, check=False)


@contextlib.contextmanager
def paths(*items: NetPath) -> Iterator[tuple[NetPath, ...]]:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"signal {signum}")  # unwinds through the finally below

    previous = signal.signal(signal.SIGTERM, on_term)
    delete_leftovers()
    try:
        for item in items:
            item.build()
        yield items
    finally:
        for item in items:
            item.teardown()
        delete_leftovers()
        signal.signal(signal.SIGTERM, previous)


# ---- loopback relayed into a namespace through Unix sockets -------------------------------------


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def join(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))


async def relay_role(ports: list[int], folder: str) -> None:
    """Inside a namespace: 127.0.0.1:PORT -> ``folder/PORT.sock`` (the machine's side)."""

    def handler(port: int) -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                other = await asyncio.open_unix_connection(f"{folder}/{port}.sock")
            except OSError:
                writer.close()
                return
            await join((reader, writer), other)

        return serve

    for port in ports:
        await asyncio.start_server(handler(port), "127.0.0.1", port)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_unix(folder: str, ports: list[int]) -> list[asyncio.AbstractServer]:
    """The machine's side: ``folder/PORT.sock`` -> 127.0.0.1:PORT."""

    def handler(port: int) -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                other = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await join((reader, writer), other)

        return serve

    return [await asyncio.start_unix_server(handler(p), f"{folder}/{p}.sock") for p in ports]


# ---- child processes ----------------------------------------------------------------------------


class Child:
    """A child speaking JSON lines; its first line is its ready answer."""

    def __init__(self, argv: list[str], setup: dict[str, Any] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if setup is not None:
            self.proc.stdin.write(json.dumps(setup) + "\n")
            self.proc.stdin.flush()
        self.name = " ".join(argv[-3:])

    async def wait_ready(self) -> None:
        """Its first line (read off the loop: the cloud it signs in to runs in this loop)."""
        assert self.proc.stdout is not None
        if not await asyncio.to_thread(self.proc.stdout.readline):
            raise RuntimeError(f"{self.name} exited before it was ready (see its stderr)")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads) from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def small_flv() -> Path:
    from xp2p.media import TestPatternConfig, make_test_flv

    path = Path(tempfile.gettempdir()) / "xp2p-bench" / "live_360p_800k.flv"
    if not path.exists():
        log(f"making {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(make_test_flv(20, TestPatternConfig(**SMALL_PATTERN)))  # type: ignore[arg-type]
        partial.rename(path)
    return path


async def device_role() -> None:
    """One camera: a ``DeviceAgent`` looping a pre-made FLV, until stdin closes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
    from xp2p.media import FileSource

    setup = json.loads(sys.stdin.readline())
    file = setup["file"]
    agent = DeviceAgent(
        DeviceConfig(
            cloud_url=setup["cloud_url"],
            product_id=PRODUCT,
            device_name=setup["device_name"],
            device_secret=setup["secret"],
            grant_public_key=Ed25519PublicKey.from_public_bytes(bytes.fromhex(setup["grant"])),
            channels={0: ChannelConfig(default=lambda: FileSource(file))},
            max_viewers=8,
        )
    )
    await agent.start()
    try:
        await agent.wait_signed_in(timeout=15)
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await agent.close()


# ---- the page -----------------------------------------------------------------------------------

#: The bench's page: it starts importing the SDK at once and waits for its settings
#: (``window.benchStart(arg)``, from the driver right after DOMContentLoaded: the player's
#: token never goes into a URL), then plays through the SDK or from the HTTP-FLV URL.
#: ``window.bench`` holds what it measured.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>xp2p browser bench</title></head>
<body><video muted playsinline></video>
<script src="/sdk/mpegts.js"></script>
<script type="module">
const bench = window.bench = {
  startedAt: null, connectMs: null, firstFrameAt: null, stalls: 0, stallMs: 0, bytes: 0,
  samples: [], error: null,
};
const settings = new Promise((resolve) => { window.benchStart = resolve; });
const sdkLoaded = import('/sdk/index.js');
const video = document.querySelector('video');
let waitingSince = null;
video.addEventListener('waiting', () => {
  // A stall: the element ran out of media while playing (a jump's seek is not one).
  if (bench.firstFrameAt === null || video.seeking || waitingSince !== null) return;
  bench.stalls += 1;
  waitingSince = performance.now();
});
video.addEventListener('playing', () => {
  if (waitingSince !== null) bench.stallMs += performance.now() - waitingSince;
  waitingSince = null;
});
try {
  const [sdk, arg] = await Promise.all([sdkLoaded, settings]);
  if (arg.mode === 'flv') {
    bench.startedAt = performance.now();
    window.benchPlayer = sdk.createLivePlayer(video, { url: arg.flvUrl });
  } else {
    const p2p = window.benchP2P = new sdk.XP2PModule();
    const getViewerToken = async () => {
      const body = JSON.stringify({ devices: [arg.device] });
      const r = await fetch('/token', { method: 'POST', body });
      if (!r.ok) throw new Error(`the app backend answered ${r.status}`);
      return r.json();
    };
    await p2p.init({ appParams: { cloudUrl: arg.cloudUrl, getViewerToken } });
    const asked = performance.now();
    await p2p.startP2PService('cam', { productId: arg.device[0], deviceName: arg.device[1] }, {
      msgCallback: () => {},
    });
    bench.connectMs = performance.now() - asked;
    const player = window.benchPlayer = sdk.createLivePlayer(video, { push: true });
    bench.startedAt = performance.now();
    await p2p.startStream('cam', {
      flv: arg.flv,
      dataCallback: (data) => { bench.bytes += data.byteLength; player.push(data); },
    });
  }
  const timer = setInterval(() => {
    const stats = window.benchPlayer.stats();
    if (bench.firstFrameAt === null && stats.firstFrameAt !== null) {
      bench.firstFrameAt = stats.firstFrameAt;
    }
    if (bench.firstFrameAt !== null && bench.samples.length < 5000) {
      bench.samples.push([(performance.now() - bench.firstFrameAt) / 1000, stats.latency]);
    }
    if (stats.error) bench.error = stats.error;
  }, 500);
  window.benchStop = () => { clearInterval(timer); };
} catch (err) {
  bench.error = String(err && err.message || err);
}
</script></body></html>
"""

#: Waits in the page for the first decoded frame (or an error, or `arg.timeout` ms).
WAIT_FIRST = """async (arg) => {
  const deadline = performance.now() + arg.timeout;
  for (;;) {
    const b = window.bench;
    const stats = window.benchPlayer ? window.benchPlayer.stats() : null;
    if (stats && stats.firstFrameAt !== null && stats.width > 0) {
      b.firstFrameAt = stats.firstFrameAt;
      return { ...b, samples: undefined, width: stats.width, decoded: stats.decodedFrames };
    }
    if (b.error || performance.now() > deadline) {
      return { ...b, samples: undefined, timedOut: true };
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}"""

#: What the page measured so far, with the player's stats.
READ = """() => {
  const stats = window.benchPlayer ? window.benchPlayer.stats() : {};
  return { ...window.bench, stats };
}"""

#: Ends the page's links (so the camera frees them at once) and its player.
END = """async () => {
  if (window.benchStop) window.benchStop();
  if (window.benchPlayer) window.benchPlayer.destroy();
  if (window.benchP2P) window.benchP2P.destroy();
  return true;
}"""


# ---- the machine's side: cloud, site, players, cameras ------------------------------------------


@dataclass
class World:
    cloud: Any
    site: Any
    players: dict[str, Any]  #: path name -> PlayerServer on that path's address
    modules: list[Any]
    devices: dict[str, Child]
    relays: list[Child] = field(default_factory=list)
    unix: list[asyncio.AbstractServer] = field(default_factory=list)
    folder: str = ""

    def flv_url(self, path: str, device: str) -> str:
        return str(self.players[path].live_url(f"{PRODUCT}/{device}"))


class BenchSite:
    """tests/browser/sdk_site.SdkSite (the app's site: SDK files, token backend) with the
    bench's page at ``/``."""

    @staticmethod
    def make() -> Any:
        from aiohttp import web
        from tests.browser.sdk_site import SdkSite

        class Site(SdkSite):
            async def _page(self, request: web.Request) -> web.Response:
                return web.Response(body=PAGE, content_type="text/html")

        return Site()


@contextlib.asynccontextmanager
async def world(items: Sequence[NetPath]) -> AsyncIterator[World]:
    from bench.serve_cpu import make_flv
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import AppConfig, CloudConfig
    from xp2p.cloud.config import DeviceConfig as DeviceAccount
    from xp2p.player.server import PlayerServer
    from xp2p.viewer import AppParams, P2PModule

    files = {SMALL: small_flv(), BIG: make_flv()}
    site = BenchSite.make()
    await site.start()
    base = CloudConfig.demo(port=0, stun_port=0, connect_timeout=5.0)
    app = base.apps[0]
    config = replace(
        base,
        apps=(AppConfig(app.key, app.secret, cors_origins=(site.url,)),),
        devices=(*base.devices, DeviceAccount(PRODUCT, BIG, secrets.token_urlsafe(24))),
    )
    cloud = CloudServer(config)
    await cloud.start()
    site.attach(cloud.url, app.key, app.secret)
    folder = tempfile.mkdtemp(prefix="xpbb-")
    w = World(cloud, site, {}, [], {}, folder=folder)
    try:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        grant = cloud.grant_public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        for account in config.devices:
            setup = {
                "cloud_url": cloud.url,
                "device_name": account.device_name,
                "secret": account.secret,
                "grant": grant,
                "file": str(files[account.device_name]),
            }
            w.devices[account.device_name] = Child(
                [sys.executable, "-m", "bench.browser", "--role", "device"], setup
            )
        for child in w.devices.values():
            await child.wait_ready()
        for item in items:
            module = P2PModule()
            await module.init(AppParams(cloud.url, app.key, app.secret))
            w.modules.append(module)
            player = PlayerServer(
                module,
                host=item.host,
                devices=[f"{PRODUCT}/{SMALL}", f"{PRODUCT}/{BIG}"],
                allow_origins=[site.url],
                public=True,
            )
            await player.start()
            w.players[item.name] = player
        ports = [int(site.url.rsplit(":", 1)[1]), int(cloud.url.rsplit(":", 1)[1])]
        w.unix = await serve_unix(folder, ports)
        for item in items:
            argv = ["ip", "netns", "exec", item.ns, sys.executable, "-m", "bench.browser"]
            argv += ["--role", "relay", "--ports", ",".join(map(str, ports)), "--folder", folder]
            w.relays.append(Child(argv))
            await w.relays[-1].wait_ready()
        yield w
    finally:
        for child in (*w.relays, *w.devices.values()):
            child.close()
        for server in w.unix:
            server.close()
        for player in w.players.values():
            await player.stop()
        for module in w.modules:
            await module.destroy()
        await cloud.stop()
        await site.stop()
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)


def chromium_in(item: NetPath) -> Any:
    from tests.browser.chromium import Chromium

    return Chromium(timeout=60, command_prefix=["ip", "netns", "exec", item.ns])


async def open_bench_page(chromium: Any, w: World, arg: dict[str, Any]) -> int:
    page, status = await chromium.open(w.site.url + "/")
    if status != 200:
        raise RuntimeError(f"the bench page answered {status}")
    await chromium.eval(page, "(arg) => { window.benchStart(arg); return true; }", arg)
    return int(page)


def page_arg(w: World, item: NetPath, mode: str, device: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "cloudUrl": w.cloud.url,
        "device": [PRODUCT, device],
        "flv": FLV,
        "flvUrl": w.flv_url(item.name, device) if mode == "flv" else None,
    }


async def end_page(chromium: Any, page: int) -> None:
    with contextlib.suppress(Exception):
        await chromium.eval(page, END)
    await chromium.close_page(page)


# ---- 1. first frames ----------------------------------------------------------------------------


async def first_frames(
    chromium: Any, w: World, item: NetPath, rtts: Sequence[float], runs: int
) -> dict[tuple[float, str], list[dict[str, Any]]]:
    results: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for rtt in rtts:
        item.condition(rtt)
        for n in range(runs + 1):  # run 0: warm-up (the player's pull, Chromium's caches)
            for mode in ("p2p", "flv") if n % 2 == 0 else ("flv", "p2p"):
                page = await open_bench_page(chromium, w, page_arg(w, item, mode, SMALL))
                try:
                    got = await chromium.eval(page, WAIT_FIRST, {"timeout": 20_000})
                finally:
                    await end_page(chromium, page)
                if got.get("timedOut"):
                    raise RuntimeError(f"{mode} at RTT {rtt:g}: no first frame: {got}")
                got["afterStart"] = got["firstFrameAt"] - got["startedAt"]
                log(
                    f"rtt {rtt:g} {mode} run {n}: after start {got['afterStart']:.0f} ms, "
                    f"page load {got['firstFrameAt']:.0f} ms, connect {got['connectMs']}"
                )
                if n:
                    results.setdefault((rtt, mode), []).append(got)
    item.condition(0)
    return results


# ---- 2. device CPU ------------------------------------------------------------------------------


async def device_cpu(
    chromium: Any, w: World, item: NetPath, counts: Sequence[int], window: float
) -> dict[tuple[str, int], dict[str, float]]:
    from xp2p.link import LinkConfig
    from xp2p.viewer import AppParams, P2PModule, StreamInfo

    camera = w.devices[BIG]
    app = w.cloud.config.apps[0]
    results: dict[tuple[str, int], dict[str, float]] = {}

    async def measure() -> float:
        before = camera.cpu_seconds()
        await asyncio.sleep(window)
        return (camera.cpu_seconds() - before) / (window / 60)  # CPU-s per minute

    results[("idle", 0)] = {"cpu_per_min": await measure()}
    for n in counts:
        # Chromium viewers.
        pages = [
            await open_bench_page(chromium, w, page_arg(w, item, "p2p", BIG)) for _ in range(n)
        ]
        try:
            for page in pages:
                got = await chromium.eval(page, WAIT_FIRST, {"timeout": 20_000})
                if got.get("timedOut"):
                    raise RuntimeError(f"CPU case, a browser viewer got no frame: {got}")
            await asyncio.sleep(3)  # past the GOP-cache burst
            start = [(await chromium.eval(page, READ))["bytes"] for page in pages]
            cpu = await measure()
            end = [(await chromium.eval(page, READ))["bytes"] for page in pages]
        finally:
            for page in pages:
                await end_page(chromium, page)
        rate = min(e - s for s, e in zip(start, end, strict=True)) * 8 / window / 1e6
        results[("browser", n)] = {"cpu_per_min": cpu, "slowest_mbps": rate}
        log(f"cpu: {n} browser viewers {cpu:.2f} CPU-s/min, slowest {rate:.2f} Mbit/s")
        await asyncio.sleep(2)
        # Python (QUIC) viewers.
        received = [0] * n
        modules = [P2PModule(LinkConfig(host_addresses=("127.0.0.1",))) for _ in range(n)]

        def counter(i: int, received: list[int] = received) -> Any:
            def count(chunk: bytes) -> None:
                received[i] += len(chunk)

            return count

        try:
            for i, module in enumerate(modules):
                await module.init(AppParams(w.cloud.url, app.key, app.secret))
                await module.start_p2p_service(
                    "cam", StreamInfo(product_id=PRODUCT, device_name=BIG), data_callback=counter(i)
                )
            await asyncio.sleep(3)
            start = list(received)
            cpu = await measure()
            end = list(received)
        finally:
            for module in modules:
                await module.destroy()
        rate = min(e - s for s, e in zip(start, end, strict=True)) * 8 / window / 1e6
        results[("quic", n)] = {"cpu_per_min": cpu, "slowest_mbps": rate}
        log(f"cpu: {n} QUIC viewers {cpu:.2f} CPU-s/min, slowest {rate:.2f} Mbit/s")
        await asyncio.sleep(2)
    results[("idle", 1)] = {"cpu_per_min": await measure()}
    return results


# ---- 3. long sessions ---------------------------------------------------------------------------


async def long_sessions(
    browsers: dict[str, Any], w: World, plan: dict[str, tuple[NetPath, str]], seconds: float
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each of ``plan``'s paths plays its camera over p2p and HTTP-FLV, all at once."""
    opened: list[tuple[str, str, Any, int]] = []
    try:
        for label, (item, device) in plan.items():
            for mode in ("p2p", "flv"):
                chromium = browsers[item.name]
                page = await open_bench_page(chromium, w, page_arg(w, item, mode, device))
                opened.append((label, mode, chromium, page))
        for label, mode, chromium, page in opened:
            got = await chromium.eval(page, WAIT_FIRST, {"timeout": 30_000})
            if got.get("timedOut"):
                raise RuntimeError(f"{label} {mode}: no first frame: {got}")
        started = time.monotonic()
        while (left := seconds - (time.monotonic() - started)) > 0:
            await asyncio.sleep(min(60.0, left))
            for label, mode, chromium, page in opened:
                got = await chromium.eval(page, READ)
                log(
                    f"{label} {mode} at {time.monotonic() - started:.0f} s: latency "
                    f"{got['stats'].get('latency', 0):.2f} s, stalls {got['stalls']}, "
                    f"jumps {got['stats'].get('jumps')}, error {got['error']}"
                )
        await asyncio.sleep(1)  # the last samples
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for label, mode, chromium, page in opened:
            out[(label, mode)] = await chromium.eval(page, READ)
        return out
    finally:
        for _label, _mode, chromium, page in opened:
            await end_page(chromium, page)


def latency_at(samples: Sequence[Sequence[float]], at: float, span: float = 10.0) -> float:
    """Median latency over the ``span`` seconds before ``at`` (seconds after the first frame)."""
    return median([lat for t, lat in samples if at - span <= t <= at])


# ---- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    runs: int
    rtts: tuple[float, ...]
    long_s: float
    long_rtt: float
    loss: float
    viewers: tuple[int, ...]
    window: float
    marks: tuple[float, float]  #: when latency is read, seconds after the first frame


async def run_bench(plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    short, lossy = NetPath("a", 64, 41), NetPath("b", 68, 42)
    detail: dict[str, Any] = {}
    with paths(short, lossy):
        async with world((short, lossy)) as w:
            browsers = {item.name: chromium_in(item) for item in (short, lossy)}
            try:
                version = browsers["a"].version
                cpu = await device_cpu(browsers["a"], w, short, plan.viewers, plan.window)
                frames = await first_frames(browsers["a"], w, short, plan.rtts, plan.runs)
                short.condition(plan.long_rtt)
                lossy.condition(plan.long_rtt, plan.loss)
                long = await long_sessions(
                    browsers, w, {"latency": (short, SMALL), "lossy": (lossy, BIG)}, plan.long_s
                )
            finally:
                for chromium in browsers.values():
                    chromium.close()
    detail["chromium"] = version
    return summarise(plan, frames, cpu, long, detail), detail


def summarise(
    plan: Plan,
    frames: dict[tuple[float, str], list[dict[str, Any]]],
    cpu: dict[tuple[str, int], dict[str, float]],
    long: dict[tuple[str, str], dict[str, Any]],
    detail: dict[str, Any],
) -> list[Row]:
    rows: list[Row] = []
    table = []
    for rtt in plan.rtts:
        p2p, flv = frames[(rtt, "p2p")], frames[(rtt, "flv")]
        for metric, key, target in (
            ("first frame after startStream", "afterStart", rtt + 100),
            ("page load to first frame", "firstFrameAt", 4 * rtt + 500),
        ):
            value = median([r[key] for r in p2p])
            base = median([r[key] for r in flv])
            rows.append(Row(f"{metric} @ RTT {rtt:g} ms", value, "ms", base, f"<= {target:g}"))
            table.append(
                (
                    metric,
                    rtt,
                    value,
                    base,
                    value / base if base else None,
                    f"<= {target:g}",
                    "pass" if value <= target else "FAIL",
                )
            )
        rows.append(
            Row(
                f"connect (startP2PService) @ RTT {rtt:g} ms",
                median([r["connectMs"] for r in p2p]),
                "ms",
            )
        )
    print_table(
        table,
        ("metric", "rtt ms", "p2p median ms", "http-flv ms", "ratio", "target ms", "result"),
        f"First frames, medians of {plan.runs} runs per RTT and transport",
    )
    detail["first_frames"] = {
        f"{mode}@{rtt:g}": [
            {k: r[k] for k in ("afterStart", "firstFrameAt", "connectMs")} for r in runs
        ]
        for (rtt, mode), runs in frames.items()
    }
    a, b = plan.marks
    lat, lossy = long[("latency", "p2p")], long[("lossy", "p2p")]
    lat_flv, lossy_flv = long[("latency", "flv")], long[("lossy", "flv")]
    for mark in (a, b):
        rows.append(
            Row(
                f"live latency at {mark / 60:g} min @ RTT {plan.long_rtt:g} ms",
                latency_at(lat["samples"], mark),
                "s",
                latency_at(lat_flv["samples"], mark),
                "<= 1.0" if mark == b else None,
            )
        )
    rows.append(
        Row(
            f"live latency at {b / 60:g} min, 4 Mbit/s at {plan.loss:.0%} loss",
            latency_at(lossy["samples"], b),
            "s",
            latency_at(lossy_flv["samples"], b),
        )
    )
    rows.append(
        Row(
            f"stalls in {plan.long_s / 60:g} min, 4 Mbit/s at {plan.loss:.0%} loss, "
            f"RTT {plan.long_rtt:g} ms",
            float(lossy["stalls"]),
            "count",
            float(lossy_flv["stalls"]),
            "0",
        )
    )
    rows.append(
        Row("stalled time, same", lossy["stallMs"] / 1000, "s", lossy_flv["stallMs"] / 1000)
    )
    rows.append(
        Row(
            f"stalls in {plan.long_s / 60:g} min, 800 kbit/s, no loss",
            float(lat["stalls"]),
            "count",
            float(lat_flv["stalls"]),
            "0",
        )
    )
    for (label, mode), got in long.items():
        detail[f"long_{label}_{mode}"] = {
            "stalls": got["stalls"],
            "stall_s": got["stallMs"] / 1000,
            "jumps": got["stats"].get("jumps"),
            "decoded": got["stats"].get("decodedFrames"),
            "dropped": got["stats"].get("droppedFrames"),
            "error": got["error"],
            "bytes": got["bytes"],
            "samples": got["samples"][::4],
        }
    idle = (cpu[("idle", 0)]["cpu_per_min"] + cpu[("idle", 1)]["cpu_per_min"]) / 2
    detail["cpu"] = {f"{k}{n}": v for (k, n), v in cpu.items()}
    for n in plan.viewers:
        per = {kind: (cpu[(kind, n)]["cpu_per_min"] - idle) / n for kind in ("browser", "quic")}
        rows.append(
            Row(
                f"device CPU per viewer, {n} viewer(s), 4 Mbit/s (browser; baseline QUIC)",
                per["browser"],
                "CPU-s/viewer-min",
                per["quic"],
            )
        )
    rows.append(Row("device CPU with no viewer", idle, "CPU-s/min"))
    return rows


def main() -> None:
    parser = standard_arguments(__doc__ or "")
    parser.add_argument("--runs", type=int, default=10, help="runs per RTT and transport (10)")
    parser.add_argument("--rtt", default="0,50,100", help="RTTs of the first frames, ms")
    parser.add_argument("--long", type=float, default=600.0, help="long sessions, s (600)")
    parser.add_argument("--long-rtt", type=float, default=50.0, help="their RTT, ms (50)")
    parser.add_argument("--loss", type=float, default=0.01, help="the lossy one's loss (0.01)")
    parser.add_argument("--viewers", default="1,2", help="viewer counts of the CPU case (1,2)")
    parser.add_argument("--window", type=float, default=30.0, help="CPU window, s (30)")
    parser.add_argument("--role", choices=("device", "relay"), help=argparse_hidden())
    parser.add_argument("--ports", help=argparse_hidden())
    parser.add_argument("--folder", help=argparse_hidden())
    args = parser.parse_args()
    if args.role == "device":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(device_role())
        return
    if args.role == "relay":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay_role([int(p) for p in args.ports.split(",")], args.folder))
        return
    if os.geteuid() != 0:
        sys.exit("bench.browser needs root (network namespaces, iptables): run it with sudo")
    rtts = tuple(float(r) for r in args.rtt.split(","))
    if args.quick:
        plan = Plan(2, rtts, 40.0, args.long_rtt, args.loss, (1,), 8.0, (20.0, 40.0))
    else:
        plan = Plan(
            args.runs,
            rtts,
            args.long,
            args.long_rtt,
            args.loss,
            tuple(int(n) for n in args.viewers.split(",")),
            args.window,
            (min(60.0, args.long), args.long),
        )
    began = time.monotonic()
    rows, detail = asyncio.run(run_bench(plan))
    print_rows(rows, f"Chromium {detail['chromium']} through the SDK; baseline HTTP-FLV")
    path = args.json or (None if args.quick else str(RESULTS))
    if path:
        write_json(
            path, "browser", rows, plan=plan.__dict__, seconds=time.monotonic() - began, **detail
        )
        log(f"wrote {path}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
