"""Time to a connected link and to the first keyframe, beside HTTP-FLV over TCP, in one run.

The cloud, a test-pattern device (640x360@25, 800 kbit/s, GOP 50) and a plain HTTP-FLV server
on the device's own ``LiveChannel`` run in a child process (``bench._ff_device``); the viewer runs
here, so the encoder never shares the viewer's event loop. For each conditioner RTT (the
link's user-space conditioner, at the viewer's end, in both directions, so ICE checks, the
QUIC handshake and the video all see it) every run opens a new service (a new link):

* ``connected``: from calling ``start_p2p_service`` to the ``connected`` notify (the device is
  already online; the cloud calls stay on loopback, only the P2P path has the RTT);
* ``first_keyframe``: from calling ``start_stream`` to the moment the first complete video
  keyframe tag (not a sequence header) is in the data callback, parsed incrementally.

The baseline, interleaved run by run: the same channel served as HTTP-FLV over TCP (the same
GOP-cache start), fetched on a fresh connection through a user-space proxy with the same RTT
(``_ff_proxy.py``): ``connected`` = TCP connect with one emulated handshake RTT,
``first_keyframe`` = from sending the GET to the first keyframe tag.

Targets: first keyframe <= 1 RTT + 30 ms after start_stream; connected <= 3 RTT + 150 ms after
start_p2p_service; a row passes when its median is within the target. ``--trace`` also
records each phase on both ends (``_ff_trace.py``) and prints where the time went.

    python -m bench.first_frame [--quick] [--runs N] [--rtt 0,50,100] [--trace] [--json PATH]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import Row, clean, log, median, p95, print_table, standard_arguments, write_json
from bench._ff_proxy import DelayProxy, KeyframeWatch, TcpRun, fetch_first_keyframe

HERE = Path(__file__).resolve().parent
RTTS = (0, 50, 100)
RUNS = 20
QUICK_RUNS = 5
WARMUP = 1  #: runs per RTT and path before the measured ones (first TLS, first GOP...)
PAUSE = 0.1  #: seconds between runs, so one run's teardown does not overlap the next
TIMEOUT = 15.0
METRICS = ("connected", "first_keyframe")


def target_ms(metric: str, rtt_ms: float) -> float:
    if metric == "connected":
        return 3 * rtt_ms + 150
    return rtt_ms + 30


@dataclass(frozen=True)
class FirstFrameRow(Row):
    """A row of the JSON file: the shared fields plus the p95 and the RTT it was measured at."""

    p95: float | None = None
    rtt_ms: float = 0.0


@dataclass
class P2PRun:
    connect_ms: float
    keyframe_ms: float
    keyframe_size: int
    keyframe_end: int
    trace: dict[str, Any] | None = None


@dataclass
class RttResult:
    rtt_ms: float
    p2p: list[P2PRun] = field(default_factory=list)
    tcp: list[TcpRun] = field(default_factory=list)

    def values(self, path: str, metric: str) -> list[float]:
        runs: Sequence[P2PRun | TcpRun] = self.p2p if path == "p2p" else self.tcp
        if metric == "connected":
            return [r.connect_ms for r in runs]
        return [r.keyframe_ms for r in runs]


# ---- the far end ------------------------------------------------------------------------


class DeviceProcess:
    """``_ff_device.py`` in a child process; ``info`` is its ready line (with credentials,
    which are never printed)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def __aenter__(self) -> DeviceProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60.0)
            self.info = json.loads(line)
        except (TimeoutError, ValueError) as exc:
            await self._stop()
            raise RuntimeError("the device process did not come up (see its stderr)") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # its cue to shut down cleanly
        try:
            await asyncio.wait_for(proc.wait(), 15.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    @property
    def baseline(self) -> tuple[str, int]:
        host, port = self.info["baseline"]
        return str(host), int(port)

    async def trace(self) -> list[dict[str, Any]]:
        """The device's phase events since the last call (``--trace`` only)."""
        host, port = self.baseline
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /trace HTTP/1.0\r\nHost: device\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(), 10.0)
        finally:
            writer.close()
        events: list[dict[str, Any]] = json.loads(raw.split(b"\r\n\r\n", 1)[1])
        return events


# ---- one P2P run --------------------------------------------------------------------------


async def stop_service(module: Any, service_id: str, rtt_ms: float) -> None:
    """Stop the pull and the service so that the device hears of it (outside the timings).

    Workaround: the conditioner drops the datagrams it is still delaying once the link closes
    its sockets (``conditioner._send_if_open``), so with an RTT the viewer's STOP_SENDING and
    CONNECTION_CLOSE never reach the device, which then keeps the link and its viewer slot
    until ``idle_timeout`` and answers 503 from the fifth run on. Closing QUIC first and
    waiting out the conditioner's one-way delay lets the close through. See bench/README.md.
    """
    service = getattr(module, "_services", {}).get(service_id)
    link = getattr(service, "link", None)
    if service is not None:
        await module.stop_stream(service_id)
    if rtt_ms > 0 and link is not None and not link.closed:
        link._quic.close(error_code=0, reason_phrase="bench run over")
        link._transmit()
        await asyncio.sleep(rtt_ms / 2000 + 0.02)
    await module.stop_p2p_service(service_id)


async def p2p_run(
    module: Any, service_id: str, stream_info: Any, rtt_ms: float, recorder: Any
) -> P2PRun:
    connected_at: list[float] = []

    def on_msg(event: str, subtype: str, detail: Any) -> None:
        if event == "notify" and subtype == "connected" and not connected_at:
            connected_at.append(time.monotonic())

    if recorder is not None:
        recorder.events.clear()
        recorder("service.start")
    started = time.monotonic()
    await asyncio.wait_for(
        module.start_p2p_service(service_id, stream_info, msg_callback=on_msg), TIMEOUT
    )
    try:
        if not connected_at:
            raise RuntimeError("start_p2p_service returned without a connected notify")
        watch = KeyframeWatch()
        if recorder is not None:
            recorder("stream.start")
        stream_started = time.monotonic()
        await asyncio.wait_for(module.start_stream(service_id, watch.feed), TIMEOUT)
        keyframe_at = await asyncio.wait_for(watch.done, TIMEOUT)
    finally:
        await stop_service(module, service_id, rtt_ms)
    run = P2PRun(
        connect_ms=(connected_at[0] - started) * 1000,
        keyframe_ms=(keyframe_at - stream_started) * 1000,
        keyframe_size=watch.keyframe_size,
        keyframe_end=watch.keyframe_end,
    )
    if recorder is not None:
        run.trace = {
            "viewer": list(recorder.events),
            "t_service": started,
            "t_connected": connected_at[0],
            "t_stream": stream_started,
            "t_first_byte": watch.first_byte_at,
            "t_keyframe": keyframe_at,
            "timeline": watch.timeline,
            "keyframe_size": watch.keyframe_size,
            "keyframe_end": watch.keyframe_end,
        }
    return run


async def measure_rtt(
    device: DeviceProcess, rtt_ms: float, runs: int, trace: bool, recorder: Any
) -> RttResult:
    from xp2p.link import Conditions, LinkConfig
    from xp2p.viewer import AppParams, P2PModule, StreamInfo

    info = device.info
    stream_info = StreamInfo(product_id=info["product_id"], device_name=info["device_name"])
    module = P2PModule(link_config=LinkConfig(conditions=Conditions(rtt_ms=rtt_ms)))
    await module.init(AppParams(info["cloud_url"], info["app_key"], info["app_secret"]))
    proxy = DelayProxy(device.baseline, rtt_ms)
    await proxy.start()
    result = RttResult(rtt_ms)
    try:
        for n in range(WARMUP + runs):
            p2p = await p2p_run(module, f"ff-{rtt_ms:g}-{n}", stream_info, rtt_ms, recorder)
            if trace and p2p.trace is not None:
                await asyncio.sleep(PAUSE)  # let the device finish closing the link
                p2p.trace["device"] = await device.trace()
            await asyncio.sleep(PAUSE)
            tcp = await fetch_first_keyframe(proxy, "/live.flv", TIMEOUT)
            await asyncio.sleep(PAUSE)
            if n >= WARMUP:
                result.p2p.append(p2p)
                result.tcp.append(tcp)
                log(
                    f"rtt {rtt_ms:g} ms run {n - WARMUP + 1}/{runs}: "
                    f"p2p connected {p2p.connect_ms:.1f} first keyframe {p2p.keyframe_ms:.1f} "
                    f"({p2p.keyframe_size} B) | tcp {tcp.connect_ms:.1f} / {tcp.keyframe_ms:.1f}"
                )
    finally:
        await proxy.close()
        await module.destroy()
    return result


# ---- report -------------------------------------------------------------------------------


def summarise(results: Sequence[RttResult]) -> list[FirstFrameRow]:
    rows = []
    for metric in METRICS:
        for result in results:
            values = result.values("p2p", metric)
            rows.append(
                FirstFrameRow(
                    metric=f"{metric}@{result.rtt_ms:g}ms",
                    value=clean(median(values)),
                    unit="ms",
                    baseline=clean(median(result.values("tcp", metric))),
                    target=target_ms(metric, result.rtt_ms),
                    p95=clean(p95(values)),
                    rtt_ms=result.rtt_ms,
                )
            )
    return rows


def print_summary(rows: Sequence[FirstFrameRow], runs: int) -> None:
    table = []
    for row in rows:
        value, baseline, target = row.value, row.baseline, row.target
        ratio = value / baseline if value is not None and baseline else math.nan
        assert isinstance(target, float | int)
        verdict = "-" if value is None else ("pass" if value <= target else "FAIL")
        table.append(
            (
                row.metric.split("@")[0],
                f"{row.rtt_ms:g}",
                value,
                row.p95,
                baseline,
                f"{ratio:.2f}x" if not math.isnan(ratio) else "-",
                f"<= {target:g}",
                verdict,
            )
        )
    print_table(
        table,
        ("metric", "rtt ms", "median ms", "p95 ms", "baseline ms", "ratio", "target ms", "result"),
        f"first_frame: {runs} runs per RTT, P2P vs HTTP-FLV over TCP (baseline)",
    )


async def run_bench(
    rtts: Sequence[float], runs: int, trace: bool, device_argv: Sequence[str] | None = None
) -> list[RttResult]:
    """Everything but the printing; ``device_argv`` lets an experiment run another far end."""
    recorder = None
    if trace:
        from bench._ff_trace import install_viewer_trace

        recorder = install_viewer_trace()
    argv = list(device_argv or [sys.executable, "-m", "bench._ff_device"])
    if trace and "--trace" not in argv:
        argv.append("--trace")
    async with DeviceProcess(argv) as device:
        log(f"device up: {device.info['pattern']}, GOP {device.info['gop']} frames")
        return [await measure_rtt(device, rtt, runs, trace, recorder) for rtt in rtts]


def main(argv: Sequence[str] | None = None) -> int:
    parser = standard_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help=f"runs per RTT ({RUNS}, quick: {QUICK_RUNS})")
    parser.add_argument(
        "--rtt", default=",".join(str(r) for r in RTTS), help="conditioner RTTs in ms"
    )
    parser.add_argument("--trace", action="store_true", help="print where the time goes")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else RUNS)
    rtts = [float(r) for r in args.rtt.split(",") if r.strip()]
    started = time.monotonic()
    results = asyncio.run(run_bench(rtts, runs, args.trace))
    rows = summarise(results)
    print_summary(rows, runs)
    if args.trace:
        from bench._ff_trace import print_breakdown

        print_breakdown(results)
    if args.json:
        write_json(args.json, "first_frame", rows, runs=runs, seconds=time.monotonic() - started)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
