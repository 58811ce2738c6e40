"""Device CPU per viewer-minute serving live video over xp2p links, beside plain HTTP-FLV/TCP.

Three processes (the machine has 2 cores):

* this one: the cloud (sign-in, grants, signalling; not measured) and the orchestration;
* the device (``--role device``): a ``DeviceAgent`` whose channel is a ``FileSource`` looping
  a pre-made 1280x720 4 Mbit/s FLV (made once with ``make_test_flv`` and cached, so no encoder
  runs), plus an aiohttp HTTP-FLV server in the same process that subscribes to the same
  ``LiveChannel`` and writes what a link viewer gets (GOP-cache start, then every batch);
* the viewers (``--role viewer``): one process holding N viewers at once, N P2PModules (one
  link each) or N aiohttp connections; each counts the bytes it receives.

The device's CPU is ``getrusage(RUSAGE_SELF)`` (all its threads) over a fixed window. With no
viewers that is the source (remux thread + pacing) and the idle agent, reported as its own
rows; a case's cost per viewer-minute is (window CPU - idle CPU) / (N x window minutes).
Each case starts its viewers, lets them pass the GOP burst, then measures; cases alternate
link and TCP for each N so slow drift hits both alike.

    python -m bench.serve_cpu [--quick] [--json PATH] [--window S] [--viewers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Row,
    log,
    print_rows,
    print_table,
    serve_live_channel,
    standard_arguments,
    write_json,
)

HERE = Path(__file__).resolve()
WIDTH, HEIGHT, FPS, BITRATE, GOP = 1280, 720, 25, 4_000_000, 50
FILE_SECONDS = 20
WINDOW, QUICK_WINDOW = 30.0, 6.0
#: After viewers start, before measuring (the GOP-cache burst is not steady state).
WARMUP, QUICK_WARMUP = 3.0, 2.0
CASES = ("link", "tcp")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu(name_prefix: str) -> float:
    """CPU of this process's threads whose name starts with ``name_prefix`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if not thread.name.startswith(name_prefix) or thread.native_id is None:
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def make_flv() -> Path:
    """The looped 4 Mbit/s file, encoded once per machine (x264 ultrafast)."""
    from xp2p.media import TestPatternConfig, make_test_flv

    path = Path(tempfile.gettempdir()) / "xp2p-bench" / f"live_{HEIGHT}p_{BITRATE // 1000}k.flv"
    if not path.exists():
        log(f"making {path} ({FILE_SECONDS} s of {WIDTH}x{HEIGHT} at {BITRATE / 1e6:g} Mbit/s)")
        config = TestPatternConfig(width=WIDTH, height=HEIGHT, fps=FPS, bitrate=BITRATE, gop=GOP)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(make_test_flv(FILE_SECONDS, config))
        partial.rename(path)
    return path


# ---- child plumbing: one JSON object per line each way --------------------------------------


async def read_commands() -> Any:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield json.loads(line)


def answer(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


# ---- the device process ---------------------------------------------------------------------


async def device_role() -> None:
    from aiohttp import web

    from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
    from xp2p.link import LinkConfig
    from xp2p.media import FileSource
    from xp2p.trust import load_grant_public_key

    commands = read_commands()
    setup = await anext(commands)
    agent = DeviceAgent(
        DeviceConfig(
            cloud_url=setup["cloud_url"],
            product_id=setup["product_id"],
            device_name=setup["device_name"],
            device_secret=setup["device_secret"],
            grant_public_key=load_grant_public_key(setup["grant_key"]),
            channels={0: ChannelConfig(default=lambda: FileSource(setup["flv"], loop=True))},
            link=LinkConfig(host_addresses=("127.0.0.1",)),
            max_viewers=8,
        )
    )
    await agent.start()
    await agent.wait_signed_in(15)
    live = agent.routes.channels[0].live["high"]
    if not await live.wait_ready(15):
        raise RuntimeError(f"the file source did not start: {live.failed}")

    async def live_flv(request: web.Request) -> web.StreamResponse:
        return await serve_live_channel(live, request)

    app = web.Application()
    app.router.add_get("/live.flv", live_flv)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    answer({"baseline": f"http://{host}:{port}/live.flv", "source": live.name})
    try:
        async for command in commands:
            if command["cmd"] == "quit":
                break
            answer(
                {
                    "cpu": cpu_seconds(),
                    "source_cpu": thread_cpu("xp2p-media"),
                    "wall": time.monotonic(),
                    "links": len(agent.links),
                    "subscribers": live.viewers,
                }
            )
    finally:
        await runner.cleanup()
        await agent.close()


# ---- the viewer process ---------------------------------------------------------------------


async def viewer_role() -> None:
    import aiohttp

    from xp2p.link import LinkConfig
    from xp2p.viewer import AppParams, P2PModule, StreamInfo

    commands = read_commands()
    setup = await anext(commands)
    params = AppParams(setup["cloud_url"], setup["app_key"], setup["app_secret"])
    device = StreamInfo(product_id=setup["product_id"], device_name=setup["device_name"])
    modules = [P2PModule(LinkConfig(host_addresses=("127.0.0.1",))) for _ in range(setup["max"])]
    for module in modules:
        await module.init(params)
    session = aiohttp.ClientSession()
    received: list[int] = []
    all_flowing = asyncio.Event()
    tcp_tasks: list[asyncio.Task[None]] = []
    active: list[P2PModule] = []

    def count(index: int, size: int) -> None:
        received[index] += size
        if not all_flowing.is_set() and all(received):
            all_flowing.set()

    def counter(index: int) -> Any:
        return lambda chunk: count(index, len(chunk))

    async def fetch(index: int) -> None:
        async with session.get(setup["baseline"]) as response:
            async for chunk in response.content.iter_any():
                count(index, len(chunk))

    answer({"ready": True})
    async for command in commands:
        cmd = command["cmd"]
        if cmd == "quit":
            break
        if cmd == "start":
            n = command["n"]
            received[:] = [0] * n
            all_flowing.clear()
            if command["case"] == "link":
                active = modules[:n]
                for i, module in enumerate(active):
                    await module.start_p2p_service("cam", device, data_callback=counter(i))
            else:
                tcp_tasks = [asyncio.create_task(fetch(i)) for i in range(n)]
            await asyncio.wait_for(all_flowing.wait(), 30)
        elif cmd == "stop":
            for module in active:
                await module.stop_p2p_service("cam")
            for task in tcp_tasks:
                task.cancel()
            await asyncio.gather(*tcp_tasks, return_exceptions=True)
            active, tcp_tasks = [], []
        answer({"bytes": list(received), "wall": time.monotonic(), "cpu": cpu_seconds()})
    await session.close()
    for module in modules:
        await module.destroy()


# ---- orchestration --------------------------------------------------------------------------


class Child:
    def __init__(self, process: asyncio.subprocess.Process, role: str) -> None:
        self.process = process
        self.role = role

    @classmethod
    async def start(cls, role: str, setup: dict[str, Any]) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.serve_cpu",
            "--role",
            role,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(process, role)
        await child.send(setup)  # secrets go through the pipe, never argv
        return child

    async def send(self, doc: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(doc) + "\n").encode())
        await self.process.stdin.drain()

    async def read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the {self.role} process exited ({self.process.returncode})")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        await self.send({"cmd": cmd, **fields})
        return await self.read()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.send({"cmd": "quit"})
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def measure(device: Child, viewer: Child, window: float) -> dict[str, Any]:
    d0, v0 = await device.call("mark"), await viewer.call("mark")
    await asyncio.sleep(window)
    d1, v1 = await device.call("mark"), await viewer.call("mark")
    wall = d1["wall"] - d0["wall"]
    rates = [
        (b1 - b0) * 8 / (v1["wall"] - v0["wall"]) / 1e6
        for b0, b1 in zip(v0["bytes"], v1["bytes"], strict=True)
    ]
    return {
        "cpu": d1["cpu"] - d0["cpu"],
        "source_cpu": d1["source_cpu"] - d0["source_cpu"],
        "wall": wall,
        "mbps": min(rates) if rates else 0.0,
        "viewer_cpu": v1["cpu"] - v0["cpu"],
        "subscribers": d1["subscribers"],
    }


async def orchestrate(
    window: float, warmup: float, counts: list[int]
) -> tuple[list[Row], dict[str, Any]]:
    from xp2p.auth import export_public_key
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig

    flv = await asyncio.to_thread(make_flv)
    file_mbps = flv.stat().st_size * 8 / FILE_SECONDS / 1e6
    cloud = CloudServer(CloudConfig.demo(port=0, stun_port=0))
    await cloud.start()
    account, app = cloud.config.devices[0], cloud.config.apps[0]
    device = viewer = None
    results: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        device = await Child.start(
            "device",
            {
                "cloud_url": cloud.url,
                "product_id": account.product_id,
                "device_name": account.device_name,
                "device_secret": account.secret,
                "grant_key": export_public_key(cloud.grant_public_key),
                "flv": str(flv),
            },
        )
        baseline = (await device.read())["baseline"]
        viewer = await Child.start(
            "viewer",
            {
                "cloud_url": cloud.url,
                "app_key": app.key,
                "app_secret": app.secret,
                "product_id": account.product_id,
                "device_name": account.device_name,
                "baseline": baseline,
                "max": max(counts),
            },
        )
        await viewer.read()
        await asyncio.sleep(warmup)
        log(f"idle device (source only), {window:g} s")
        results[("idle", 0)] = await measure(device, viewer, window)
        for n in counts:
            for case in CASES:
                log(f"{case}: {n} viewer(s), {window:g} s")
                await viewer.call("start", case=case, n=n)
                await asyncio.sleep(warmup)
                results[(case, n)] = await measure(device, viewer, window)
                await viewer.call("stop")
                await asyncio.sleep(1.0)
        log(f"idle device again, {window:g} s")
        results[("idle", 1)] = await measure(device, viewer, window)
    finally:
        for child in (viewer, device):
            if child is not None:
                await child.stop()
        await cloud.stop()
    return report(results, counts, file_mbps), {"window_s": window, "file_mbit_s": file_mbps}


def report(
    results: dict[tuple[str, int], dict[str, Any]], counts: list[int], file_mbps: float
) -> list[Row]:
    # No viewers, measured first and last; their mean is what every case pays anyway.
    idles = [results[("idle", 0)], results[("idle", 1)]]
    idle_rate = sum(r["cpu"] for r in idles) / sum(r["wall"] for r in idles)
    source_rate = sum(r["source_cpu"] for r in idles) / sum(r["wall"] for r in idles)

    def per_viewer_minute(case: str, n: int) -> float:
        r = results[(case, n)]
        return (r["cpu"] - idle_rate * r["wall"]) / (n * r["wall"] / 60)

    rows = [
        Row("looped file bitrate", file_mbps, "Mbit/s", None, None),
        Row("device CPU with no viewers (source + idle agent)", idle_rate * 60, "CPU-s/min"),
        Row("source remux thread CPU", source_rate * 60, "CPU-s/min"),
        Row(
            "idle device CPU, first vs last window",
            idles[0]["cpu"] / idles[0]["wall"] * 60,
            "CPU-s/min",
            idles[1]["cpu"] / idles[1]["wall"] * 60,
        ),
    ]
    table = []
    for n in counts:
        link, tcp = per_viewer_minute("link", n), per_viewer_minute("tcp", n)
        link_mbps, tcp_mbps = results[("link", n)]["mbps"], results[("tcp", n)]["mbps"]
        rows += [
            Row(
                f"link: device CPU per viewer-minute, {n} viewers",
                link,
                "CPU-s/viewer-min",
                tcp,
                None,
            ),
            Row(
                f"tcp: device CPU per viewer-minute, {n} viewers",
                tcp,
                "CPU-s/viewer-min",
                None,
                None,
            ),
            Row(f"link/tcp CPU ratio, {n} viewers", link / tcp if tcp > 0 else None, "x"),
            Row(f"link: slowest viewer's rate, {n} viewers", link_mbps, "Mbit/s", file_mbps),
            Row(f"tcp: slowest viewer's rate, {n} viewers", tcp_mbps, "Mbit/s", file_mbps),
        ]
        table.append((n, link, tcp, link / tcp if tcp > 0 else None, link_mbps, tcp_mbps))
    print_table(
        table,
        (
            "viewers",
            "link CPU-s/viewer-min",
            "tcp CPU-s/viewer-min",
            "ratio",
            "link Mbit/s",
            "tcp Mbit/s",
        ),
        f"device CPU per viewer-minute of a {file_mbps:.1f} Mbit/s stream "
        f"(idle device: {idle_rate * 60:.2f} CPU-s/min, not included)",
    )
    return rows


def main() -> None:
    parser = standard_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("device", "viewer"), help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, help="measured seconds per case (30; quick 6)")
    parser.add_argument("--viewers", help="viewer counts (1,2,4; quick 1,4)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.role:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(device_role() if args.role == "device" else viewer_role())
        return
    window = args.window or (QUICK_WINDOW if args.quick else WINDOW)
    warmup = QUICK_WARMUP if args.quick else WARMUP
    counts = [int(n) for n in (args.viewers or ("1,4" if args.quick else "1,2,4")).split(",")]
    started = time.monotonic()
    rows, extra = asyncio.run(orchestrate(window, warmup, counts))
    print_rows(rows, "serve_cpu")
    if args.json:
        write_json(args.json, "serve_cpu", rows, seconds=time.monotonic() - started, **extra)


if __name__ == "__main__":
    main()
