"""Shared fixtures: a real cloud, a real test-pattern device and a viewer, in one event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.procs import Proc
from tests.support.stack import Stack
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import DeviceAgent
from xp2p.viewer import P2PModule

#: Small and fast: tests need real H.264/AAC, not pretty pictures.


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[CloudServer, CloudConfig]]:
    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0)
    server = CloudServer(config)
    await server.start()
    yield server, config
    await server.stop()


@pytest.fixture
async def stack(cloud: tuple[CloudServer, CloudConfig]) -> AsyncIterator[Stack]:
    server, config = cloud
    partial = Stack(server, config, device=None)  # type: ignore[arg-type]
    device = DeviceAgent(partial.device_config())
    await device.start()
    await device.wait_signed_in(timeout=10)
    partial.device = device
    yield partial
    await partial.device.close()  # a test may have swapped in a new device


@pytest.fixture
async def module(stack: Stack) -> AsyncIterator[P2PModule]:
    p2p = P2PModule()
    await p2p.init(stack.app_params)
    yield p2p
    await p2p.destroy()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """The processes a test starts (append each); stopped, last first, when the test ends."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many NAT-lab tests ran: where the lab cannot run they are skipped, and that
    must show in CI's output rather than pass unseen."""
    counts: dict[str, int] = {}
    reason = ""
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if "natlab" in getattr(report, "nodeid", "") and report.when in ("call", "setup"):
                if outcome == "skipped" and isinstance(report.longrepr, tuple):
                    reason = str(report.longrepr[2])
                if report.when == "call" or outcome != "passed":
                    counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        ran = sum(v for k, v in counts.items() if k != "skipped")
        detail = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        line = f"NAT lab: {ran} tests ran ({detail})"
        terminalreporter.write_line(line + (f" — {reason}" if reason else ""))
