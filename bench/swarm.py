"""1vN swarm of real viewer processes on loopback: offload, edge egress, rebuffering, startup,
latency and CPU, beside the theoretical bound and a control viewer pulling from the edge.

An origin (``xp2p origin``, test pattern at ``--bitrate``) feeds the cloud's edge
(``xp2p cloud``); ``--viewers`` swarm viewers run in ``--processes`` processes
(tests/swarm_viewer.py), each uploader capped at ``--upload-factor`` x the stream's rate, and
one control viewer pulls every chunk from the edge as soon as it is cut.

* offload = p2p / (p2p + cdn) over the viewers, beside the bound
  1 - max(r, N r - sum u) / (N r) (r the stream rate, u the upload caps)
* edge egress in stream copies (the edge's own count: bytes served / bytes cut)
* rebuffer ratio (a player model: plays from the first keyframe after a 0.5 s buffer; a late
  video tag stalls it) p50/p95, and continuity (viewers with no stall)
* startup: join to the first keyframe at the data callback, p50/p95 over the viewers that join
  a live room (the room's first viewer watches alone for WARMUP s; its startup, which includes
  the source's, is its own row)
* extra latency: a keyframe's arrival at a swarm viewer minus at the control viewer, p50/p95
  (the viewers play ``lag`` = 3 s behind live by design, to give chunks time to spread)
* control overhead: what neighbours sent that was not chunk data (announcements, requests,
  framing) over the media received
* CPU per viewer (viewer processes' CPU over the run / viewers / duration)

Targets (issue 5, N = 20, upload 1.5x bitrate): offload >= 90 % (bound 95 %), no stall in 10
minutes, startup p95 <= 1 s, extra latency p95 <= 1.5 s, control overhead <= 3 %.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, write_cloud_config

from bench._common import Row, clean, log, median, p95, print_rows, standard_arguments, write_json

HERE = Path(__file__).resolve().parent

VIEWER = HERE.parent / "tests" / "support" / "swarm_viewer.py"
VIEWERS, QUICK_VIEWERS = 20, 6
FIRST = "p0-0"  #: the viewer that opens the room
#: How long the room's first viewer watches alone (longer than the default playout delay).
WARMUP = 5.0
DURATION, QUICK_DURATION = 600.0, 40.0
BITRATE = 2_000_000
APP_KEY = "bench-app"


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read(13)
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def _start(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )


def run(
    viewers: int,
    processes: int,
    duration: float,
    upload_factor: float,
    work: Path,
    playout_delay: float = 0.0,
) -> dict[str, Any]:
    secret = secrets.token_urlsafe(18)
    http_port, origin_port = free_port(), free_port()
    source = f"http://127.0.0.1:{origin_port}/live/bench.flv"
    config = write_cloud_config(
        work / "cloud.toml", http_port, APP_KEY, secret, edge_sources=[source]
    )
    cloud_url = f"http://127.0.0.1:{http_port}"
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            _start(
                [
                    sys.executable,
                    "-m",
                    "xp2p",
                    "origin",
                    "--port",
                    str(origin_port),
                    "--name",
                    "bench",
                    "--size",
                    "640x360",
                    "--fps",
                    "25",
                    "--bitrate",
                    str(BITRATE),
                    "--gop",
                    "50",
                ],
                work / "origin.log",
            )
        )
        started.append(
            _start(
                [sys.executable, "-m", "xp2p", "cloud", "--config", str(config)], work / "cloud.log"
            )
        )
        _wait_http(source)
        _wait_http(f"{cloud_url}/healthz")
        upload_cap = int(BITRATE / 8 * upload_factor)
        until = time.time() + duration
        env = {"XP2P_APP_SECRET": secret}
        common = [
            "--cloud",
            cloud_url,
            "--app-key",
            APP_KEY,
            "--url",
            source,
            "--until",
            f"{until:.3f}",
        ]
        outs = [work / "control.json"]
        started.append(
            _start(
                [
                    sys.executable,
                    str(VIEWER),
                    *common,
                    "--control",
                    "--out",
                    str(outs[0]),
                ],
                work / "control.log",
                env,
            )
        )
        workers = []
        # The room's first viewer joins alone and the others once the room has been live for
        # longer than the playout delay: joiners of a live room start at once (from an older
        # keyframe), while everyone in a room younger than the delay waits for the same
        # playhead, which would make the startup figure the room's age, not the swarm's.
        rest = viewers - 1
        per = [1] + [
            rest // processes + (1 if i < rest % processes else 0) for i in range(processes)
        ]
        per = [count for count in per if count]
        for i, count in enumerate(per):
            out = work / f"viewers{i}.json"
            outs.append(out)
            workers.append(
                _start(
                    [
                        sys.executable,
                        str(VIEWER),
                        *common,
                        "--name",
                        f"p{i}",
                        "--viewers",
                        str(count),
                        "--upload-cap",
                        str(upload_cap),
                        "--playout-delay",
                        str(playout_delay),
                        "--out",
                        str(out),
                    ],
                    work / f"viewers{i}.log",
                    env,
                )
            )
            time.sleep(WARMUP if i == 0 else 0.5)
        log(f"{viewers} viewers in {processes} processes for {duration:g} s ...")
        for proc in [started[-1], *workers]:
            proc.wait(timeout=duration + 120)
        stats = _edge_stats(cloud_url, secret)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    reports = [json.loads(p.read_text()) for p in outs]
    return {"reports": reports, "edge": stats, "upload_cap": upload_cap, "duration": duration}


def _edge_stats(cloud_url: str, secret: str) -> dict[str, Any]:
    import asyncio

    from xp2p.viewer.cloud_client import CloudClient

    async def fetch() -> dict[str, Any]:
        client = CloudClient(cloud_url, APP_KEY, secret)
        try:
            doc: dict[str, Any] = await client._request("GET", "/api/v1/swarm/stats")
            return doc
        finally:
            await client.close()

    return asyncio.run(fetch())


def summarise(result: dict[str, Any]) -> list[Row]:
    control = next(v for r in result["reports"] for v in r["viewers"] if v["viewer"] == "control")
    viewers = [v for r in result["reports"] for v in r["viewers"] if v["viewer"] != "control"]
    ok = [v for v in viewers if "error" not in v]
    cpu = sum(r["cpu_s"] for r in result["reports"][1:])
    n = len(viewers)
    p2p = sum(v.get("p2p_bytes", 0) for v in ok)
    cdn = sum(v.get("cdn_bytes", 0) for v in ok)
    received = p2p + cdn
    overhead = sum(v.get("control_bytes", 0) for v in ok)
    rate = received / max(1, n) / max(1.0, result["duration"])  # bytes/s per viewer ~ r
    uploads = sum(result["upload_cap"] for v in ok if v["upload"])
    bound = 1 - max(rate, n * rate - uploads) / max(1.0, n * rate)
    rebuffer = [v["rebuffer_s"] / max(1e-9, v["watched"]) for v in ok]
    startup = [v["startup"] for v in ok if v["startup"] is not None and v["viewer"] != FIRST]
    first = next((v["startup"] for v in ok if v["viewer"] == FIRST), None)
    ref = {int(ts): t for ts, t in control["arrivals"].items()}
    extra = [t - ref[int(ts)] for v in ok for ts, t in v["arrivals"].items() if int(ts) in ref]
    clean_share = sum(v["player_stalls"] == 0 for v in ok) / max(1, len(ok))
    rooms = result["edge"].get("rooms", [])
    copies = rooms[0]["edge_egress_copies"] if rooms else None
    return [
        Row("viewers ok", len(ok), "of " + str(n), None, n),
        Row(
            "offload p2p/(p2p+cdn)", clean(p2p / max(1, received)), "share", clean(bound), ">= 0.90"
        ),
        Row("edge egress", copies, "stream copies", float(n), "~1"),
        Row("rebuffer ratio p50", clean(median(rebuffer)), "share", None, 0.0),
        Row("rebuffer ratio p95", clean(p95(rebuffer)), "share", None, 0.0),
        Row("continuity (viewers without a stall)", clean_share, "share", None, 1.0),
        Row("startup, room's first viewer", first, "s"),
        Row("startup p50 (joiners of a live room)", clean(median(startup)), "s"),
        Row("startup p95 (joiners of a live room)", clean(p95(startup)), "s", None, "<= 1.0"),
        Row("extra latency p50", clean(median(extra)), "s"),
        Row("extra latency p95", clean(p95(extra)), "s", None, "<= 1.5"),
        Row("control overhead", clean(overhead / max(1, received)), "share", None, "<= 0.03"),
        Row("CPU per viewer", clean(cpu / max(1, n) / result["duration"] * 100), "% of a core"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = standard_arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--viewers", type=int, help=f"swarm viewers ({VIEWERS}; quick {QUICK_VIEWERS})"
    )
    parser.add_argument("--processes", type=int, default=4, help="viewer processes (4)")
    parser.add_argument(
        "--duration", type=float, help=f"seconds ({DURATION:g}; quick {QUICK_DURATION:g})"
    )
    parser.add_argument(
        "--upload-factor", type=float, default=1.5, help="upload cap / bitrate (1.5)"
    )
    parser.add_argument(
        "--playout-delay", type=float, default=0.0, help="viewers' delay behind live (0: 3 s)"
    )
    parser.add_argument("--raw", metavar="PATH", help="also keep every viewer's report here")
    args = parser.parse_args(argv)
    viewers = args.viewers or (QUICK_VIEWERS if args.quick else VIEWERS)
    duration = args.duration or (QUICK_DURATION if args.quick else DURATION)
    processes = min(args.processes, viewers)
    started = time.monotonic()
    # Kept, not removed: the processes' logs are what explains a failed run.
    work = Path(tempfile.mkdtemp(prefix="xp2p-swarm-"))
    log(f"logs in {work}")
    result = run(viewers, processes, duration, args.upload_factor, work, args.playout_delay)
    if args.raw:
        Path(args.raw).write_text(json.dumps(result))
    rows = summarise(result)
    delay = args.playout_delay or 3.0
    print_rows(
        rows,
        title=f"1vN swarm: {viewers} viewers, {duration:g} s, upload {args.upload_factor:g}x, "
        f"playout delay {delay:g} s",
    )
    if args.json:
        write_json(args.json, "swarm", rows, viewers=viewers, seconds=time.monotonic() - started)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
