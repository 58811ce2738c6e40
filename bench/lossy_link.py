"""Goodput and live-stream stalls through a lossy 50 ms path: the xp2p link beside kernel TCP.

Two network namespaces joined by a veth pair (198.51.100.1 viewer, 198.51.100.2 device;
TEST-NET, nothing leaves the machine; GRO/GSO/TSO off so each packet is a wire packet). Each
namespace delays what it receives by RTT/2 with the NFQUEUE delayer (tests/natlab/delayer.py:
this kernel has no netem) and drops a share of it with iptables ``statistic`` (``--loss`` is
per direction, as the link conditioner's is). Over that one path, in the same run, at each
loss rate:

* **bulk goodput**: the device sends as fast as it may for ``--bulk`` seconds, the viewer
  counts what arrived: over an xp2p link (``bench/_lossy_peer.py`` in each namespace, real
  ICE + QUIC + HTTP/3, default ``LinkConfig``), and over kernel TCP with cubic and with BBR
  (``TCP_CONGESTION`` on the sending socket). Medians of ``--reps``, cases interleaved.
* **live stalls**: a synthetic 4 Mbit/s FLV stream (25 fps, fixed-size tags, real
  timestamps) written frame by frame as its media time comes, over the same three
  transports; the viewer counts what a player with a 500 ms jitter buffer would stall on
  (``tests/support/live_stream.StallDetector``) and how long it would sit stalled, and checks
  the bytes.

Rows: ``link_goodput@L%`` (baseline: TCP BBR; target >= 4 Mbit/s, the stream's rate),
``tcp_cubic_goodput@L%``, ``tcp_bbr_goodput@L%``, ``link_live_stalls@L%`` (baseline: TCP
BBR; target 0 at 0 and 1 %) and the two TCP stall counts. Needs root (namespaces,
iptables) and the NetfilterQueue package. The namespaces (prefix ``xpll-``) are deleted on
exit, on a crash and, if an earlier run left any, at start.

    sudo .venv/bin/python -m bench.lossy_link [--quick] [--json PATH] [--loss 0,1,5]
        [--rtt 50] [--bulk S] [--live S] [--reps N] [--link-cc NAME]
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import Row, log, median, print_rows, print_table, standard_arguments, write_json

HERE = Path(__file__).resolve().parent
DELAYER = HERE.parent / "tests" / "natlab" / "delayer.py"
PREFIX = "xpll-"
NS = {"viewer": PREFIX + "v", "device": PREFIX + "d"}
IFACE = {"viewer": "xpll0", "device": "xpll1"}
ADDR = {"viewer": "198.51.100.1", "device": "198.51.100.2"}
QUEUE_NUM = 7
TCP_PORT = 5201
CASES = ("link", "tcp_cubic", "tcp_bbr")
LIVE_BITRATE = 4.0  #: Mbit/s of the synthetic stream (tests/support/live_stream.py)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def in_ns(role: str, *argv: str) -> None:
    run("ip", "netns", "exec", NS[role], *argv)


# ---- the path -----------------------------------------------------------------------------------


def delete_leftovers() -> None:
    listing = run("ip", "netns", "list", check=False).stdout.split("\n")
    for line in listing:
        name = line.split(" ")[0]
        if name.startswith(PREFIX):
            run("ip", "netns", "del", name, check=False)
    for iface in IFACE.values():  # a veth that never made it into its namespace
        run("ip", "link", "del", iface, check=False)


@dataclass
class LossyPath:
    rtt_ms: float
    delayers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def build(self) -> None:
        delete_leftovers()
        for role in ("viewer", "device"):
            run("ip", "netns", "add", NS[role])
        run("ip", "link", "add", IFACE["viewer"], "type", "veth", "peer", "name", IFACE["device"])
        for role in ("viewer", "device"):
            run("ip", "link", "set", IFACE[role], "netns", NS[role])
            in_ns(role, "ip", "addr", "add", ADDR[role] + "/24", "dev", IFACE[role])
            in_ns(role, "ip", "link", "set", IFACE[role], "up")
            in_ns(role, "ip", "link", "set", "lo", "up")
            # Without this, GSO hands iptables 64 KB super-packets and "1 % loss" drops
            # far less of TCP than of the link's datagrams.
            in_ns(role, "ethtool", "-K", IFACE[role], "gro", "off", "gso", "off", "tso", "off")
            argv = ["ip", "netns", "exec", NS[role], sys.executable, str(DELAYER)]
            argv += ["--queue", str(QUEUE_NUM), "--delay-ms", f"{self.rtt_ms / 2:g}"]
            self.delayers.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        time.sleep(0.5)  # let the delayers bind their queues
        self.check()

    def set_loss(self, loss: float) -> None:
        """Loss first, then the delay queue, on what each namespace *receives*: delaying in
        the sender's OUTPUT hook would keep TCP's packets charged to its socket while they
        wait, and TCP Small Queues would then hold it to ~2 Mbit/s; a drop there would be a
        local send error, not a loss. No ``--queue-bypass``: if a delayer dies the path goes
        dark and the run fails loudly, rather than measuring an undelayed path."""
        for role in ("viewer", "device"):
            in_ns(role, "iptables", "-t", "mangle", "-F", "PREROUTING")
            rule = ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", IFACE[role]]
            if loss > 0:
                drop = ["-m", "statistic", "--mode", "random", "--probability", f"{loss:.4f}"]
                in_ns(role, *rule, *drop, "-j", "DROP")
            in_ns(role, *rule, "-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM))

    def check(self) -> None:
        for proc in self.delayers:
            if proc.poll() is not None:
                raise RuntimeError("an NFQUEUE delayer exited (see its stderr)")

    def teardown(self) -> None:
        for proc in self.delayers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.delayers:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        delete_leftovers()


@contextlib.contextmanager
def lossy_path(rtt_ms: float) -> Iterator[LossyPath]:
    path = LossyPath(rtt_ms)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"signal {signum}")  # unwinds through the finally below

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        path.build()
        yield path
    finally:
        path.teardown()
        signal.signal(signal.SIGTERM, previous)


# ---- the two ends -------------------------------------------------------------------------------


class Peer:
    """``_lossy_peer.py`` in a namespace, spoken to in JSON lines."""

    def __init__(self, role: str, link_cc: str | None) -> None:
        argv = ["ip", "netns", "exec", NS[role], sys.executable, "-m", "bench._lossy_peer", role]
        argv += ["--addr", ADDR[role], "--port", str(TCP_PORT)]
        if role == "viewer":
            argv += ["--device", ADDR["device"]]
        if link_cc:
            argv += ["--congestion-control", link_cc]
        self.role = role
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, doc: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(doc) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.role}: no answer within {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.role} exited (see its stderr)")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def connected_pair(link_cc: str | None) -> Iterator[tuple[Peer, dict[str, Any]]]:
    device = Peer("device", link_cc)
    viewer = None
    try:
        fingerprint = device.recv(60)["fingerprint"]
        viewer = Peer("viewer", link_cc)
        viewer.send({"op": "connect", "fingerprint": fingerprint})
        device.send({"offer": viewer.recv(60)["offer"]})
        viewer.send({"answer": device.recv(30)["answer"]})
        connected = viewer.recv(60)
        yield viewer, connected
    finally:
        if viewer is not None:
            viewer.close()
        device.close()


# ---- measurement --------------------------------------------------------------------------------


@dataclass
class LossResult:
    loss: float
    goodput: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CASES})
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    link_rtt_ms: float = 0.0


def measure(
    path: LossyPath, loss: float, bulk: float, live: float, reps: int, grace: float, cc: Any
) -> LossResult:
    path.set_loss(loss)
    result = LossResult(loss)
    with connected_pair(cc) as (viewer, connected):
        result.link_rtt_ms = connected.get("rtt", 0.0) * 1000
        log(f"loss {loss:.0%}: link up ({connected['connected']})")
        for rep in range(reps):
            for case in CASES:
                if case == "link":
                    viewer.send({"op": "bulk", "seconds": bulk})
                else:
                    viewer.send({"op": "tcp_bulk", "cc": case[4:], "seconds": bulk})
                got = viewer.recv(bulk + 60)
                mbps = got["bytes"] * 8 / got["seconds"] / 1e6
                result.goodput[case].append(mbps)
                log(f"loss {loss:.0%} bulk {rep + 1}/{reps} {case}: {mbps:.1f} Mbit/s")
                path.check()
        for case in CASES:
            command: dict[str, Any] = {"seconds": live, "grace": grace}
            if case == "link":
                command["op"] = "live"
            else:
                command.update(op="tcp_live", cc=case[4:])
            viewer.send(command)
            got = viewer.recv(live + grace + 60)
            result.live[case] = got
            log(
                f"loss {loss:.0%} live {case}: {got['frames']}/{got['expected']} frames, "
                f"{got['stalls']} stalls ({got['stalled_s']:.1f} s), bytes ok {got['digest_ok']}"
            )
            path.check()
    return result


def summarise(results: Sequence[LossResult]) -> list[Row]:
    rows = []
    for r in results:
        pct = f"{r.loss * 100:g}%"
        good = {case: median(values) for case, values in r.goodput.items()}
        target = f">= {LIVE_BITRATE:g}"
        rows.append(Row(f"link_goodput@{pct}", good["link"], "Mbit/s", good["tcp_bbr"], target))
        rows.append(Row(f"tcp_cubic_goodput@{pct}", good["tcp_cubic"], "Mbit/s"))
        rows.append(Row(f"tcp_bbr_goodput@{pct}", good["tcp_bbr"], "Mbit/s"))
        stalls = {case: float(r.live[case]["stalls"]) for case in CASES}
        zero = "0" if r.loss <= 0.01 else None
        link, bbr = stalls["link"], stalls["tcp_bbr"]
        rows.append(Row(f"link_live_stalls@{pct}", link, "stalls", bbr, zero))
        rows.append(Row(f"tcp_cubic_live_stalls@{pct}", stalls["tcp_cubic"], "stalls"))
        rows.append(Row(f"tcp_bbr_live_stalls@{pct}", stalls["tcp_bbr"], "stalls"))
    return rows


def print_summary(results: Sequence[LossResult], live: float) -> None:
    table = []
    for r in results:
        good = {case: median(values) for case, values in r.goodput.items()}
        cells: list[object] = [f"{r.loss * 100:g}"]
        cells += [good[case] for case in CASES]
        for case in CASES:
            got = r.live[case]
            ok = "" if got["digest_ok"] else ", bytes differ"
            cells.append(f"{got['stalls']} ({got['stalled_s']:.1f} s{ok})")
        table.append(cells)
    header = ["loss %", "link Mbit/s", "TCP cubic Mbit/s", "TCP BBR Mbit/s"]
    header += ["link stalls", "TCP cubic stalls", "TCP BBR stalls"]
    print_table(table, header, f"lossy_link: goodput, and stalls of {live:g} s of 4 Mbit/s live")


def main(argv: list[str] | None = None) -> int:
    parser = standard_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--loss", help="loss rates in %% per direction (0,1,5; quick: 1,5)")
    parser.add_argument("--rtt", type=float, default=50.0, help="round trip added, ms")
    parser.add_argument("--bulk", type=float, help="seconds per bulk transfer (10; quick: 2)")
    parser.add_argument("--live", type=float, help="seconds of live stream (20; quick: 4)")
    parser.add_argument("--reps", type=int, help="bulk repetitions per case (3; quick: 1)")
    parser.add_argument("--link-cc", help="the link's congestion control (LinkConfig default)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("lossy_link needs root: network namespaces, veth and iptables")
        return 2
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        log("lossy_link needs NetfilterQueue (pip install -e '.[test]')")
        return 2
    losses = [float(x) / 100 for x in (args.loss or ("1,5" if args.quick else "0,1,5")).split(",")]
    bulk = args.bulk or (2.0 if args.quick else 10.0)
    live = args.live or (4.0 if args.quick else 20.0)
    reps = args.reps or (1 if args.quick else 3)
    grace = 3.0 if args.quick else 20.0
    started = time.monotonic()
    with lossy_path(args.rtt) as path:
        results = [measure(path, loss, bulk, live, reps, grace, args.link_cc) for loss in losses]
    rows = summarise(results)
    print_summary(results, live)
    print_rows(rows)
    if args.json:
        write_json(
            args.json,
            "lossy_link",
            rows,
            rtt_ms=args.rtt,
            bulk_seconds=bulk,
            live_seconds=live,
            repetitions=reps,
            link_congestion_control=args.link_cc,
            quick=args.quick,
            seconds=time.monotonic() - started,
            live=[{"loss": r.loss, **r.live} for r in results],
            goodput=[{"loss": r.loss, **r.goodput} for r in results],
        )
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
