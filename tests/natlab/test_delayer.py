"""The NFQUEUE delayer: its schedule without netfilter, then the real thing in a namespace."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .delayer import Delayer

DELAYER = Path(__file__).with_name("delayer.py")


class FakePacket:
    def __init__(self, log: list[tuple[str, int]], n: int) -> None:
        self.log, self.n = log, n

    def accept(self) -> None:
        self.log.append(("accept", self.n))

    def drop(self) -> None:
        self.log.append(("drop", self.n))


def test_packets_leave_in_order_after_the_delay() -> None:
    log: list[tuple[str, int]] = []
    delayer = Delayer(0.025)
    for n in range(5):
        delayer.packet(FakePacket(log, n), now=n * 0.01)
    assert delayer.due(0.024) == pytest.approx(0.025)
    assert log == []
    assert delayer.due(0.045) == pytest.approx(0.055)
    assert log == [("accept", 0), ("accept", 1), ("accept", 2)]
    assert delayer.due(1.0) is None
    assert log == [("accept", n) for n in range(5)]


def test_loss_is_seeded_and_memory_bounded() -> None:
    log: list[tuple[str, int]] = []
    delayer = Delayer(0.05, loss=0.1, max_held=100, seed=3)
    for n in range(1000):
        delayer.packet(FakePacket(log, n), now=0.0)
    assert delayer.held == 100
    assert 50 <= delayer.dropped <= 150
    assert delayer.overflowed == 1000 - 100 - delayer.dropped
    delayer.release_all()  # shutting down: what is held goes out, nothing is dropped
    assert delayer.held == 0
    assert sum(1 for verdict, _ in log if verdict == "accept") == 100


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.mark.timeout(60)
def test_delayer_delays_a_namespace_and_stops_on_sigterm() -> None:
    """UDP echo across a veth pair whose far end delays what it receives by 40 ms."""
    pytest.importorskip("netfilterqueue")
    ns, a, b = "xpdl-t", "xpdl0", "xpdl1"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", a], capture_output=True)
    _sh("ip", "netns", "add", ns)
    delayer = None
    try:
        _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        _sh("ip", "link", "set", b, "netns", ns)
        _sh("ip", "addr", "add", "203.0.113.1/30", "dev", a)
        _sh("ip", "link", "set", a, "up")
        _sh("ip", "-n", ns, "addr", "add", "203.0.113.2/30", "dev", b)
        _sh("ip", "-n", ns, "link", "set", b, "up")
        rule = ["-t", "mangle", "-A", "PREROUTING", "-i", b, "-p", "udp"]
        _sh("ip", "netns", "exec", ns, "iptables", *rule, "-j", "NFQUEUE", "--queue-num", "3")
        argv = ["ip", "netns", "exec", ns, sys.executable, str(DELAYER)]
        delayer = subprocess.Popen(
            [*argv, "--queue", "3", "--delay-ms", "40"], stderr=subprocess.PIPE
        )
        echo = subprocess.Popen(
            [
                "ip", "netns", "exec", ns, sys.executable, "-c",
                "import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "s.bind(('203.0.113.2', 9))\n"
                "s.settimeout(20)\n"
                "for _ in range(5):\n"
                "    data, addr = s.recvfrom(100)\n"
                "    s.sendto(data, addr)\n",
            ]
        )  # fmt: skip
        time.sleep(1.0)  # both bound
        rtts = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            for n in range(5):
                t0 = time.monotonic()
                sock.sendto(bytes([n]), ("203.0.113.2", 9))
                assert sock.recv(100) == bytes([n])
                rtts.append(time.monotonic() - t0)
        echo.wait(10)
        assert min(rtts) >= 0.039
        delayer.terminate()
        _, err = delayer.communicate(timeout=10)
        assert delayer.returncode == 0
        assert b"5 passed" in err
    finally:
        if delayer is not None and delayer.poll() is None:
            delayer.kill()
            delayer.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", a], capture_output=True)
