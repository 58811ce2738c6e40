"""Download throughput over the P2P link, beside plain HTTP over TCP from the same device
process, in the same run.

Three processes, spawned fresh for the run:

* **device**: the cloud (signalling only), a ``DeviceAgent`` serving ``<tmp>/ch0/bench.bin``
  (random bytes) on ``GET /ipc.flv?action=download``, and an aiohttp file server
  (``web.FileResponse``, i.e. ``sendfile``) on the same folder: the TCP baseline;
* **viewer**: for every case, a fresh ``P2PModule`` whose link conditioner adds the RTT
  (``Conditions(rtt_ms=R)``, under ICE), ``start_local_download`` of the whole file; or an
  HTTP/1.0 GET of the same file through the proxy; both hash what arrives (sha256, checked);
* **proxy**: a user-space TCP proxy per RTT > 0 standing for the path: each chunk is held
  RTT/2 in each direction, and at most a TCP window is in flight: the window starts at 10
  segments and grows by what is acknowledged (slow start, no loss) up to the kernel's
  ``tcp_wmem`` maximum (the most Linux lets a sender have unacknowledged), acknowledgements
  coming back RTT/2 after delivery. At RTT 0 the viewer fetches directly (kernel loopback).

Timed in the viewer from the request to the last byte (link or TCP connection already up);
CPU is ``process_time`` of the device and of the viewer over each transfer, as CPU-seconds per
100 MB. Mbit/s = 10^6 bit/s. Targets: P2P >= 60 % of TCP at 50 ms; >= 50 Mbit/s on loopback.

The device samples what holds its sender back every 20 ms (congestion window, the viewer's
flow-control credit, ``send_buffer``, pacing...; see ``classify``) and the run counts the
kernel's UDP receive-buffer drops: the evidence for where the time goes. ``--send-buffer``,
``--max-stream-data`` and ``--max-data`` override the LinkConfig defaults on both ends (for
before/after runs); ``--udp-rcvbuf B`` and ``--pacing-bucket N`` patch the link for an
experiment (bigger UDP receive buffers; aioquic's pacer releasing up to N datagrams a wake).

    python -m bench.download [--quick] [--json PATH] [--mb N] [--reps N] [--rtt 0,50,100]
        [--send-buffer B] [--max-stream-data B] [--max-data B] [--udp-rcvbuf B]
        [--pacing-bucket N]
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench._common import Row, log, median, print_rows, print_table, standard_arguments, write_json

FILE = "bench.bin"
CHUNK = 256 * 1024
MSS = 1460
TARGET_RATIO_50MS = 0.60
TARGET_LOOPBACK_MBIT = 50.0


def tcp_window_max() -> int:
    """What Linux lets one TCP sender have in flight at most (``tcp_wmem`` max)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


def link_config(args: dict[str, int], rtt_ms: float = 0.0) -> Any:
    from xp2p.link import Conditions, LinkConfig

    overrides = {k: v for k, v in args.items() if v and k not in EXPERIMENTS}
    return LinkConfig(
        host_addresses=("127.0.0.1",),
        connect_timeout=15.0,
        conditions=Conditions(rtt_ms=rtt_ms),
        **overrides,
    )


# ---- device process ---------------------------------------------------------------------------


def device_main(conn: Connection, nbytes: int, overrides: dict[str, int]) -> None:
    logging.basicConfig(level=logging.ERROR)  # the table is the output, not the device's log
    asyncio.run(_device(conn, nbytes, overrides))


async def _device(conn: Connection, nbytes: int, overrides: dict[str, int]) -> None:
    from aiohttp import web

    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig
    from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
    from xp2p.flv import FlvHeader, FlvTag
    from xp2p.media import MediaSource

    class IdleSource(MediaSource):
        """Channel 0 exists for the route, but no encoder competes for the CPU."""

        def __init__(self) -> None:
            self.header, self.description = FlvHeader(has_audio=False), "idle"
            self._closed = asyncio.Event()

        async def _tags(self) -> AsyncIterator[FlvTag]:
            await self._closed.wait()
            return
            yield

        def tags(self) -> AsyncIterator[FlvTag]:
            return self._tags()

        async def aclose(self) -> None:
            self._closed.set()

    loop = asyncio.get_running_loop()
    if overrides.get("pacing_bucket"):
        widen_pacing_bucket(overrides["pacing_bucket"])
    samples: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="xp2p-bench-") as tmp:
        folder = Path(tmp) / "ch0"
        folder.mkdir()
        digest = hashlib.sha256()
        with (folder / FILE).open("wb") as f:
            for _ in range(0, nbytes, CHUNK):
                block = os.urandom(min(CHUNK, nbytes - f.tell()))
                digest.update(block)
                f.write(block)
        cloud_config = CloudConfig.demo(port=0, stun_port=0)
        cloud = CloudServer(cloud_config)
        await cloud.start()
        account, app = cloud_config.devices[0], cloud_config.apps[0]
        agent = DeviceAgent(
            DeviceConfig(
                cloud_url=cloud.url,
                product_id=account.product_id,
                device_name=account.device_name,
                device_secret=account.secret,
                grant_public_key=cloud.grant_public_key,
                channels={0: ChannelConfig(default=IdleSource)},
                recordings_dir=Path(tmp),
                link=link_config(overrides),
            )
        )
        await agent.start()
        await agent.wait_signed_in(15)

        async def serve_file(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            if "/" in name or name.startswith("."):
                raise web.HTTPBadRequest()
            return web.FileResponse(folder / name)

        http = web.Application()
        http.router.add_get("/files/{name}", serve_file)
        runner = web.AppRunner(http, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        conn.send(
            {
                "cloud": cloud.url,
                "app_key": app.key,
                "app_secret": app.secret,
                "product": account.product_id,
                "device": account.device_name,
                "http_port": port,
                "sha256": digest.hexdigest(),
            }
        )
        sampler = asyncio.create_task(sample_links(agent, samples, overrides.get("udp_rcvbuf")))
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            if command == "cpu":
                conn.send(time.process_time())
            else:  # "samples": what limited the sender since the last call
                conn.send(samples[:])
                samples.clear()
        sampler.cancel()
        await runner.cleanup()
        await agent.close()
        await cloud.stop()


LIMITS = (
    "cwnd",
    "stream window",
    "connection window",
    "send buffer",
    "writer",
    "pacing",
    "late",
)


#: Options that patch the link for an experiment instead of setting a LinkConfig field.
EXPERIMENTS = ("udp_rcvbuf", "pacing_bucket")


def widen_pacing_bucket(packets: int) -> None:
    """The ``--pacing-bucket`` experiment: let aioquic's pacer release up to ``packets``
    datagrams per wake-up (it allows 16; asyncio wakes at most about once a millisecond)."""
    from aioquic.quic.recovery import QuicPacketPacer

    update_rate = QuicPacketPacer.update_rate

    def patched(self: Any, congestion_window: int, smoothed_rtt: float) -> None:
        update_rate(self, congestion_window, smoothed_rtt)
        self.bucket_max = max(
            self.bucket_max,
            min(congestion_window // 4, packets * self._max_datagram_size)
            * self.packet_time
            / self._max_datagram_size,
        )

    QuicPacketPacer.update_rate = patched  # type: ignore[method-assign]


def grow_receive_buffers(link: Any, size: int) -> None:
    """The ``--udp-rcvbuf`` experiment: a bigger kernel receive buffer on the link's UDP
    sockets (capped by net.core.rmem_max), to see whether overflowing ones cost throughput."""
    for protocol in link._ice._protocols:
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped for full socket buffers, machine-wide (/proc/net/snmp)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
        names, values = [line for line in lines if line[0] == "Udp:"][:2]
        return int(values[names.index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def classify(link: Any) -> list[tuple[str, int, float]]:
    """(limit, cwnd, smoothed RTT) of each of the link's streams that has data in flight."""
    slack = 2 * 1280
    out: list[tuple[str, int, float]] = []
    quic = link._quic
    loss = quic._loss
    for stream in list(quic._streams.values()):
        sender = stream.sender
        if stream.stream_id % 4 != 0 or sender._buffer_stop <= sender._buffer_start:
            continue  # only request streams with data not yet acknowledged
        unsent = sender._buffer_stop - sender.highest_offset
        if loss.congestion_window - loss.bytes_in_flight < slack:
            limit = "cwnd"
        elif unsent > 0 and stream.max_stream_data_remote - sender.highest_offset < slack:
            limit = "stream window"
        elif unsent > 0 and quic._remote_max_data - quic._remote_max_data_used < slack:
            limit = "connection window"
        elif unsent == 0 and len(sender._buffer) >= link.config.send_buffer:
            limit = "send buffer"
        elif unsent == 0:
            limit = "writer"
        elif quic._pacing_at is not None:  # the last send stopped for the pacer's timer
            limit = "pacing"
        else:
            limit = "late"
        out.append((limit, loss.congestion_window, loss._rtt_smoothed))
    return out


async def sample_links(
    agent: Any, samples: list[tuple[str, int, float]], rcvbuf: int | None
) -> None:
    """Every 20 ms, what holds each sending stream back: (limit, cwnd, smoothed RTT).

    Reads aioquic's private state (this is a diagnostic, not an API), first match wins:
    ``cwnd`` the congestion window is full; ``stream window`` / ``connection window`` the
    viewer's credit is used up; ``send buffer`` all that was written is in flight and the
    device's writer waits on ``LinkConfig.send_buffer``; ``writer`` everything written is
    sent and the writer has not written more yet (reading the file, or busy); ``pacing`` the
    last send stopped for the pacer and waits for its timer (asyncio sleeps >= 1 ms); ``late``
    data is ready and nothing holds it, but the event loop has not sent it yet (busy).
    """
    grown: set[int] = set()
    while True:
        await asyncio.sleep(0.02)
        if not agent.links:
            continue
        # Each transfer has a link of its own; an older one may linger until its idle timeout.
        link = max(agent.links, key=lambda candidate: candidate.id)
        if rcvbuf and link.id not in grown:
            grown.add(link.id)
            grow_receive_buffers(link, rcvbuf)
        samples.extend(classify(link))


# ---- proxy process: a TCP path with an RTT and a window ---------------------------------------


class WindowedPath:
    """One direction of the emulated path: at most ``window`` bytes unacknowledged."""

    def __init__(self, rtt: float, window_max: int) -> None:
        self.half = rtt / 2
        self.window = 10 * MSS
        self.window_max = window_max
        self.in_flight = 0
        self._acked = asyncio.Event()

    def ack(self, size: int) -> None:
        self.in_flight -= size
        self.window = min(self.window_max, self.window + size)  # slow start, no loss
        self._acked.set()

    async def room(self) -> int:
        while self.in_flight >= self.window:
            self._acked.clear()
            await self._acked.wait()
        return self.window - self.in_flight

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(min(CHUNK, await self.room())):
                    self.in_flight += len(chunk)
                    queue.put_nowait((loop.time() + self.half, chunk))
            queue.put_nowait((loop.time() + self.half, b""))

        reading = asyncio.create_task(read())
        try:
            while True:
                due, chunk = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()
                loop.call_later(self.half, self.ack, len(chunk))
        except OSError:
            return
        finally:
            reading.cancel()


def proxy_main(conn: Connection, upstream_port: int, rtts: list[float]) -> None:
    asyncio.run(_proxy(conn, upstream_port, rtts))


async def _proxy(conn: Connection, upstream_port: int, rtts: list[float]) -> None:
    loop = asyncio.get_running_loop()
    window_max = tcp_window_max()

    def handler(rtt: float) -> Any:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_writer = None
            try:
                await asyncio.sleep(rtt)  # the handshake: SYN out, SYN-ACK back
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
                await asyncio.gather(
                    WindowedPath(rtt, window_max).pump(reader, up_writer),
                    WindowedPath(rtt, window_max).pump(up_reader, writer),
                )
            except (OSError, asyncio.CancelledError):
                pass  # the proxy is shutting down, or a side hung up
            finally:
                for w in (writer, up_writer):
                    if w is not None:
                        w.close()

        return accept

    servers, ports = [], {}
    for rtt_ms in rtts:
        server = await asyncio.start_server(handler(rtt_ms / 1000), "127.0.0.1", 0)
        servers.append(server)
        ports[rtt_ms] = server.sockets[0].getsockname()[1]
    conn.send({"ports": ports, "window_max": window_max})
    while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
        assert command == "cpu"
        conn.send(time.process_time())
    for server in servers:
        server.close()


# ---- viewer process ---------------------------------------------------------------------------


def viewer_main(conn: Connection, info: dict[str, Any], overrides: dict[str, int]) -> None:
    asyncio.run(_viewer(conn, info, overrides))


async def _viewer(conn: Connection, info: dict[str, Any], overrides: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
        case, rtt_ms, port = command
        if case == "p2p":
            result = await _p2p_download(info, overrides, rtt_ms)
        else:
            result = await _tcp_download(info, port)
        conn.send(result)


async def _p2p_download(
    info: dict[str, Any], overrides: dict[str, int], rtt_ms: float
) -> tuple[float, float, int, str]:
    from xp2p.viewer import AppParams, P2PModule, StreamInfo

    module = P2PModule(link_config(overrides, rtt_ms))
    await module.init(AppParams(info["cloud"], info["app_key"], info["app_secret"]))
    await module.start_p2p_service(
        "bench", StreamInfo(product_id=info["product"], device_name=info["device"])
    )
    if overrides.get("udp_rcvbuf"):
        grow_receive_buffers(module._services["bench"].link, overrides["udp_rcvbuf"])
    digest, received, done = hashlib.sha256(), 0, asyncio.Event()
    outcome: list[Any] = []

    def on_chunk(data: bytes) -> None:
        nonlocal received
        received += len(data)
        digest.update(data)

    t0, c0 = time.perf_counter(), time.process_time()
    await module.start_local_download(
        "bench",
        f"channel=0&file_name={FILE}&offset=0",
        on_chunk_received=on_chunk,
        on_success=outcome.append,
        on_failure=outcome.append,
        on_error=outcome.append,
        on_complete=done.set,
    )
    await done.wait()
    t1, c1 = time.perf_counter(), time.process_time()
    await module.destroy()
    if outcome[0].errmsg:
        raise RuntimeError(f"P2P download failed: {outcome[0]}")
    return t1 - t0, c1 - c0, received, digest.hexdigest()


async def _tcp_download(info: dict[str, Any], port: int) -> tuple[float, float, int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    digest, received = hashlib.sha256(), 0
    t0, c0 = time.perf_counter(), time.process_time()
    writer.write(f"GET /files/{FILE} HTTP/1.0\r\nHost: device\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise RuntimeError(f"TCP baseline answered {head[:60]!r}")
    while chunk := await reader.read(CHUNK):
        received += len(chunk)
        digest.update(chunk)
    t1, c1 = time.perf_counter(), time.process_time()
    writer.close()
    return t1 - t0, c1 - c0, received, digest.hexdigest()


# ---- orchestration ------------------------------------------------------------------------------


@dataclass
class Transfer:
    case: str  #: "p2p" or "tcp"
    rtt_ms: float
    nbytes: int
    seconds: float
    viewer_cpu: float
    device_cpu: float
    #: share of the device's samples held back by each of LIMITS (P2P only)
    limits: dict[str, float] = field(default_factory=dict)
    cwnd: float = math.nan  #: median congestion window while sending, bytes
    srtt: float = math.nan  #: median smoothed RTT QUIC measured while sending, seconds
    udp_drops: int = 0  #: datagrams the kernel dropped (full receive buffers) meanwhile

    @property
    def mbit(self) -> float:
        return self.nbytes * 8 / self.seconds / 1e6

    def per_100mb(self, cpu: float) -> float:
        return cpu * 100e6 / self.nbytes

    def describe(self) -> str:
        text = (
            f"{self.case} {self.rtt_ms:3.0f} ms: {self.mbit:7.1f} Mbit/s, CPU device "
            f"{self.device_cpu:.2f} s, viewer {self.viewer_cpu:.2f} s; UDP drops {self.udp_drops}"
        )
        if self.limits:
            held = ", ".join(f"{k} {v:.0%}" for k, v in self.limits.items() if v >= 0.01)
            text += f"; cwnd {self.cwnd / 1e3:.0f} kB, srtt {self.srtt * 1e3:.0f} ms; {held}"
        return text


class Processes:
    def __init__(self, nbytes: int, rtts: list[float], overrides: dict[str, int]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.device, device_end = ctx.Pipe()
        self.viewer, viewer_end = ctx.Pipe()
        self.proxy, proxy_end = ctx.Pipe()
        self.children = [ctx.Process(target=device_main, args=(device_end, nbytes, overrides))]
        self.children[0].start()
        self.info = self.device.recv()
        self.children.append(
            ctx.Process(
                target=proxy_main,
                args=(proxy_end, self.info["http_port"], [r for r in rtts if r > 0]),
            )
        )
        self.children.append(
            ctx.Process(target=viewer_main, args=(viewer_end, self.info, overrides))
        )
        for child in self.children[1:]:
            child.start()
        self.proxy_info = self.proxy.recv()

    def run(self, case: str, rtt_ms: float, nbytes: int) -> Transfer:
        port = self.info["http_port"] if rtt_ms == 0 else self.proxy_info["ports"][rtt_ms]
        self.device.send("cpu")
        before = self.device.recv()
        drops = udp_receive_drops()
        self.viewer.send((case, rtt_ms, port))
        seconds, viewer_cpu, received, sha = self.viewer.recv()
        self.device.send("cpu")
        device_cpu = self.device.recv() - before
        self.device.send("samples")
        samples = self.device.recv()
        if received != nbytes or sha != self.info["sha256"]:
            raise RuntimeError(f"{case} at {rtt_ms} ms: {received} bytes, sha256 mismatch")
        transfer = Transfer(case, rtt_ms, nbytes, seconds, viewer_cpu, device_cpu)
        transfer.udp_drops = udp_receive_drops() - drops
        if samples and case == "p2p":
            transfer.limits = {k: sum(s[0] == k for s in samples) / len(samples) for k in LIMITS}
            transfer.cwnd = median([s[1] for s in samples])
            transfer.srtt = median([s[2] for s in samples])
        return transfer

    def proxy_cpu(self) -> float:
        self.proxy.send("cpu")
        cpu: float = self.proxy.recv()
        return cpu

    def close(self) -> None:
        for pipe in (self.viewer, self.proxy, self.device):
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for child in self.children:
            child.join(15)
            if child.is_alive():
                child.kill()
                child.join()


def summarise(
    transfers: list[Transfer], rtts: list[float]
) -> tuple[list[Row], list[tuple[Any, ...]]]:
    rows: list[Row] = []
    table: list[tuple[Any, ...]] = []
    for rtt in rtts:
        by = {c: [t for t in transfers if t.case == c and t.rtt_ms == rtt] for c in ("p2p", "tcp")}
        p2p, tcp = (median([t.mbit for t in by[c]]) for c in ("p2p", "tcp"))
        cpu = {
            (c, side): median([t.per_100mb(getattr(t, f"{side}_cpu")) for t in by[c]])
            for c in ("p2p", "tcp")
            for side in ("device", "viewer")
        }
        table.append(
            (
                rtt,
                p2p,
                tcp,
                p2p / tcp,
                cpu["p2p", "device"],
                cpu["p2p", "viewer"],
                cpu["tcp", "device"],
                cpu["tcp", "viewer"],
            )
        )
        target: str | None = None
        if rtt == 0:
            target = f">= {TARGET_LOOPBACK_MBIT:.0f}"
        rows.append(Row(f"p2p_download_{rtt:.0f}ms", p2p, "Mbit/s", baseline=tcp, target=target))
        ratio_target = f">= {TARGET_RATIO_50MS:.2f}" if rtt == 50 else None
        rows.append(
            Row(
                f"p2p_to_tcp_ratio_{rtt:.0f}ms",
                p2p / tcp,
                "ratio",
                baseline=1.0,
                target=ratio_target,
            )
        )
        for side in ("device", "viewer"):
            rows.append(
                Row(
                    f"p2p_{side}_cpu_per_100MB_{rtt:.0f}ms",
                    cpu["p2p", side],
                    "CPU-s",
                    baseline=cpu["tcp", side],
                )
            )
    return rows, table


def limits_table(transfers: list[Transfer], rtts: list[float]) -> list[tuple[Any, ...]]:
    table = []
    for rtt in rtts:
        runs = [t for t in transfers if t.case == "p2p" and t.rtt_ms == rtt and t.limits]
        if not runs:
            continue
        shares = [f"{sum(t.limits[k] for t in runs) / len(runs):.0%}" for k in LIMITS]
        table.append(
            (
                rtt,
                median([t.cwnd / 1e3 for t in runs]),
                median([t.srtt * 1e3 for t in runs]),
                median([float(t.udp_drops) for t in runs]),
                *shares,
            )
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = standard_arguments(__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, help="megabytes in the file (100, quick: 20)")
    parser.add_argument("--reps", type=int, help="transfers per case and RTT (3, quick: 1)")
    parser.add_argument("--rtt", default="0,50,100", help="conditioner RTTs in ms (0,50,100)")
    for name in ("send-buffer", "max-stream-data", "max-data", "udp-rcvbuf", "pacing-bucket"):
        parser.add_argument(f"--{name}", type=int, default=0, help=f"LinkConfig {name} override")
    args = parser.parse_args(argv)
    nbytes = int((args.mb or (20 if args.quick else 100)) * 1e6)
    reps = args.reps or (1 if args.quick else 3)
    rtts = [float(r) for r in args.rtt.split(",")]
    overrides = {
        "send_buffer": args.send_buffer,
        "max_stream_data": args.max_stream_data,
        "max_data": args.max_data,
        "udp_rcvbuf": args.udp_rcvbuf,
        "pacing_bucket": args.pacing_bucket,
    }
    procs = Processes(nbytes, rtts, overrides)
    transfers: list[Transfer] = []
    try:
        for rep in range(reps):
            for rtt in rtts:
                for case in ("p2p", "tcp"):  # interleaved, so drift hits both alike
                    transfer = procs.run(case, rtt, nbytes)
                    log(f"rep {rep + 1}/{reps} {transfer.describe()}")
                    transfers.append(transfer)
        proxy_cpu = procs.proxy_cpu()
    finally:
        procs.close()
    rows, table = summarise(transfers, rtts)
    print_table(
        table,
        (
            "RTT ms",
            "P2P Mbit/s",
            "TCP Mbit/s",
            "P2P/TCP",
            "P2P device CPU-s/100MB",
            "P2P viewer CPU-s/100MB",
            "TCP device CPU-s/100MB",
            "TCP viewer CPU-s/100MB",
        ),
        title=f"download: {nbytes / 1e6:.0f} MB file, {reps} transfer(s) per case, "
        f"medians; TCP window max {procs.proxy_info['window_max']} B",
    )
    print_table(
        limits_table(transfers, rtts),
        ("RTT ms", "cwnd kB", "srtt ms", "UDP drops", *LIMITS),
        title="what held the P2P sender back (share of the device's 20 ms samples, mean)",
    )
    print_rows(rows)
    log(f"proxy process CPU over the run: {proxy_cpu:.1f} s")
    if args.json:
        write_json(
            args.json,
            "download",
            rows,
            mb=nbytes / 1e6,
            repetitions=reps,
            quick=args.quick,
            overrides={k: v for k, v in overrides.items() if v},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
