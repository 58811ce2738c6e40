"""Cloud load: many cameras signed in, a burst of sign-ins, and a steady rate of connects.

``python -m bench.cloud_load [--cameras N] [--rates 600,1000] [--quick] [--json PATH]``

One cloud node in a child process (``--node``), N simulated cameras in two load-generator
processes (``--gen``): real WebSocket sign-ins with HMAC proofs to the challenge, the
xp2pInfo report, the server's heartbeat pings answered, and every offer answered at once. The
cameras sign in all at once, as after a cloud restart, each from one of 64 loopback source
addresses (a real fleet comes from many). A third process (``--connects``) sends app-signed
``POST /connect`` requests at a steady rate to random cameras: the cloud checks the signature
and nonce, relays the offer to the camera's socket and the answer back; its latency is what a
viewer waits for signalling, minus the network.

Reported: sign-ins/s of the burst and the first attempts refused; the node's RSS per camera
and CPU per 1,000 idle cameras (10 s of heartbeats); per rate, connects/s achieved, p50 and
p99 latency, errors; tracebacks in the node's log. Baseline, same run: the node's RSS and CPU
with no camera. The machine's CPU use over each phase is recorded: the node, the generators
and the connect process share its two cores, so a phase at 100 % measures the machine.
Several nodes behind Redis (issue 13 item 3) are not built yet: one node only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import Row, log, print_rows, standard_arguments, write_json

ROOT = Path(__file__).resolve().parents[1]
APP_KEY, APP_SECRET = "load-app", "load-app-secret-0123456789"
SOURCES = 64
GENERATORS = 2


def device_secret(i: int) -> str:
    return hashlib.sha256(f"load-camera-{i}".encode()).hexdigest()[:32]


def device_name(i: int) -> str:
    return f"cam{i:06d}"


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200_000 if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- the node ---------------------------------------------------------------------------------


async def run_node(cameras: int) -> None:
    from xp2p.cloud import AppConfig, CloudConfig, CloudServer, DeviceConfig

    config = CloudConfig(
        port=0,
        stun_port=0,
        apps=(AppConfig(APP_KEY, APP_SECRET),),
        devices=tuple(
            DeviceConfig("LOAD", device_name(i), device_secret(i)) for i in range(cameras)
        ),
        # An operator's settings for a fleet: one app makes all the load here.
        request_rate=1_000_000.0,
        request_burst=1_000_000,
        nonce_quota=10_000_000,
        max_connections_per_source=1_000_000,
    )
    if os.environ.get("XP2P_LOAD_GC") == "off":  # an experiment: is the p99 the collector's?
        import gc

        gc.disable()
    cloud = CloudServer(config, web_dir=None)
    await cloud.start()
    print(json.dumps({"url": cloud.url, "pid": os.getpid()}), flush=True)
    await asyncio.Event().wait()


# ---- cameras ----------------------------------------------------------------------------------


async def run_generator(first: int, count: int, url: str) -> None:
    import aiohttp

    from xp2p.auth import device_proof

    ws_url = url.replace("http", "ws", 1) + "/api/v1/device/ws"
    connectors = [
        aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.{1 + s // 250}.{1 + s % 250}", 0))
        for s in range(SOURCES)
    ]
    sessions = [aiohttp.ClientSession(connector=c) for c in connectors]
    refused = retried = 0
    signed = asyncio.Event()
    done = 0
    sockets: list[Any] = []

    async def camera(i: int) -> None:
        nonlocal refused, retried, done
        name = device_name(i)
        attempt = 0
        while True:
            try:
                ws = await sessions[i % SOURCES].ws_connect(ws_url, heartbeat=None, timeout=30)
                challenge = json.loads((await ws.receive(timeout=30)).data)
                nonce = bytes.fromhex(challenge["nonce"])
                await ws.send_json(
                    {
                        "type": "auth",
                        "product_id": "LOAD",
                        "device_name": name,
                        "proof": device_proof(device_secret(i), nonce, "LOAD", name),
                        "nonce": os.urandom(16).hex(),
                    }
                )
                welcome = json.loads((await ws.receive(timeout=30)).data)
                if welcome.get("type") != "welcome":
                    raise ConnectionError(welcome.get("code", "no welcome"))
                await ws.send_json({"type": "xp2p_info", "xp2p_info": f"XP2Pload-{i}%2.4.0"})
                break
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError):
                if attempt == 0:
                    refused += 1
                retried += 1
                attempt += 1
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        sockets.append(ws)
        done += 1
        if done == count:
            signed.set()
        async for msg in ws:  # offers, answered at once; pings are answered by aiohttp
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            if doc.get("type") == "offer":
                answer = {"v": 1, "ok": True}
                reply = {"type": "answer", "request_id": doc["request_id"], "answer": answer}
                await ws.send_str(json.dumps(reply))

    started = time.monotonic()
    tasks = [asyncio.create_task(camera(i)) for i in range(first, first + count)]
    await signed.wait()
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {"signed_in": count, "seconds": elapsed, "refused": refused, "retried": retried}
        ),
        flush=True,
    )
    await asyncio.gather(*tasks)


# ---- connects ---------------------------------------------------------------------------------


async def run_connects(url: str, cameras: int, rate: float, seconds: float) -> None:
    import aiohttp

    from xp2p.auth import sign_request

    latencies: list[float] = []
    errors: dict[str, int] = {}
    body = json.dumps({"offer": {"v": 1, "transport": "quic"}}).encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> None:
            path = f"/api/v1/devices/LOAD/{device_name(random.randrange(cameras))}/connect"
            headers = sign_request(APP_KEY, APP_SECRET, "POST", path, body)
            headers["Content-Type"] = "application/json"
            t0 = time.monotonic()
            try:
                async with http.post(url + path, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                        return
            except (aiohttp.ClientError, OSError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.monotonic() - t0)

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate) - n
            for _ in range(due):
                tasks.append(asyncio.create_task(one()))
            n += max(0, due)
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    print(
        json.dumps(
            {"sent": n, "ok": len(latencies), "seconds": elapsed, "latencies": latencies,
             "errors": errors}
        ),
        flush=True,
    )  # fmt: skip


# ---- the parent -------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of a process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat", encoding="ascii") as f:
        values = [float(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def child(*argv: str, log_file: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cloud_load", *argv],
        stdout=subprocess.PIPE,
        stderr=open(log_file, "w") if log_file else subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def read_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("{"):
            return dict(json.loads(line))
        if not line and proc.poll() is not None:
            raise RuntimeError(f"a child exited {proc.returncode}")
    raise TimeoutError("no answer from a child")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(cameras: int, rates: list[float], connect_seconds: float, workdir: Path) -> dict[str, Any]:
    node = child("--node", str(cameras), log_file=workdir / "node.log")
    procs = [node]
    result: dict[str, Any] = {"cameras": cameras}
    try:
        info = read_line(node, 120)
        url, pid = info["url"], info["pid"]
        time.sleep(2)
        cpu0, rss0 = proc_stat(pid)
        time.sleep(5)
        cpu1, _ = proc_stat(pid)
        result["empty_rss"] = rss0
        result["empty_cpu_share"] = (cpu1 - cpu0) / 5
        log(f"node up, {rss0 / 1e6:.1f} MB RSS with no camera; burst of {cameras} sign-ins")
        share = cameras // GENERATORS
        busy0 = machine_busy()
        started = time.monotonic()
        gens = []
        for g in range(GENERATORS):
            count = share if g < GENERATORS - 1 else cameras - share * g
            gens.append(child("--gen", str(g * share), str(count), url))
        procs += gens
        reports = [read_line(g, 600) for g in gens]
        burst = time.monotonic() - started
        busy1 = machine_busy()
        result["burst_seconds"] = burst
        result["burst_busy"] = (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
        result["refused_first"] = sum(r["refused"] for r in reports)
        result["retries"] = sum(r["retried"] for r in reports)
        log(f"all signed in after {burst:.1f} s, {result['refused_first']} first attempts refused")
        time.sleep(3)
        cpu0, rss1 = proc_stat(pid)
        time.sleep(10)
        cpu1, _ = proc_stat(pid)
        result["idle_rss"] = rss1
        result["idle_cpu_share"] = (cpu1 - cpu0) / 10
        result["connects"] = []
        for rate in rates:
            busy0 = machine_busy()
            conn = child("--connects", url, str(cameras), str(rate), str(connect_seconds))
            procs.append(conn)
            report = read_line(conn, connect_seconds + 120)
            busy1 = machine_busy()
            lat = report["latencies"]
            result["connects"].append(
                {
                    "rate": rate,
                    "achieved": report["ok"] / report["seconds"],
                    "p50_ms": percentile(lat, 0.50) * 1000,
                    "p99_ms": percentile(lat, 0.99) * 1000,
                    "errors": report["errors"],
                    "busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
                }
            )
            log(f"{rate:.0f}/s: {result['connects'][-1]}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    text = (workdir / "node.log").read_text(errors="replace")
    result["tracebacks"] = text.count("Traceback")
    result["closing_transport"] = text.count("Cannot write to closing transport")
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--node", "--gen", "--connects"):
        _raise_nofile()
        mode, args = sys.argv[1], sys.argv[2:]
        if mode == "--node":
            asyncio.run(run_node(int(args[0])))
        elif mode == "--gen":
            asyncio.run(run_generator(int(args[0]), int(args[1]), args[2]))
        else:
            asyncio.run(run_connects(args[0], int(args[1]), float(args[2]), float(args[3])))
        return 0
    parser: argparse.ArgumentParser = standard_arguments(__doc__.split("\n")[0])
    parser.add_argument("--cameras", type=int, help="simulated cameras (10000; --quick 1000)")
    parser.add_argument("--rates", default="600,1000", help="connects/s to try (600,1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate (10)")
    args = parser.parse_args()
    _raise_nofile()
    cameras = args.cameras or (1000 if args.quick else 10_000)
    rates = [float(r) for r in args.rates.split(",")]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"cloud-load-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    r = run(cameras, rates, 3.0 if args.quick else args.seconds, workdir)
    per_camera = (r["idle_rss"] - r["empty_rss"]) / cameras / 1024
    rows = [
        Row("cameras", float(cameras), "cameras", None, ">= 50000"),
        Row("sign-in burst", cameras / r["burst_seconds"], "sign-ins/s", None),
        Row("first attempts refused", float(r["refused_first"]), "sign-ins", None, "0"),
        Row("machine busy in the burst", r["burst_busy"] * 100, "%", None),
        Row("RSS per camera", per_camera, "KB", r["empty_rss"] / 1024, "< 10"),
        Row(
            "node CPU per 1,000 idle cameras",
            r["idle_cpu_share"] * 100 * 1000 / cameras,
            "% core",
            r["empty_cpu_share"] * 100,
        ),
    ]
    for c in r["connects"]:
        tag = f"{c['rate']:.0f}/s"
        rows += [
            Row(f"connects at {tag}", c["achieved"], "connects/s", None, c["rate"]),
            Row(f"relay p50 at {tag}", c["p50_ms"], "ms", None),
            Row(f"relay p99 at {tag}", c["p99_ms"], "ms", None, "< 20"),
            Row(f"errors at {tag}", float(sum(c["errors"].values())), "requests", None, "0"),
            Row(f"machine busy at {tag}", c["busy"] * 100, "%", None),
        ]
    rows.append(Row("tracebacks in the node's log", float(r["tracebacks"]), "", None, "0"))
    print_rows(rows, f"cloud load, one node ({cameras} cameras; baseline: the empty node)")
    if args.json:
        write_json(args.json, "cloud_load", rows, result=r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
