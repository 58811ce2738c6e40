"""NAT-lab fixtures: one lab (namespaces, routers) per test module, torn down after it.

Where the lab cannot run (not root, no namespaces, no iptables) its tests are skipped with the
reason; the session summary says how many NAT-lab tests ran, so a skip is never silent.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .lab import NatLab, unavailable_reason
from .world import LabWorld, new_world

REASON = unavailable_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "natlab" in item.nodeid and REASON is not None:
            item.add_marker(pytest.mark.skip(reason=f"NAT lab unavailable: {REASON}"))


#: Lines of each process log shown under a failed lab test.
LOG_TAIL = 25


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, None]:
    """A failed lab test shows the end of every lab process's log: the failure is often a
    symptom (no answer) whose cause is in another process (the device, the cloud)."""
    outcome = yield
    report = outcome.get_result()
    world = getattr(item, "funcargs", {}).get("world")
    if report.failed and isinstance(world, LabWorld):
        for log in sorted(world.workdir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            report.sections.append((f"lab log {log.name}", "\n".join(lines)))


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    built = NatLab("xl").up()
    try:
        yield built
    finally:
        built.down()


@pytest.fixture(scope="module")
def world(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabWorld]:
    built = new_world(lab, Path(tmp_path_factory.mktemp("natlab")))
    try:
        yield built
    finally:
        built.stop()
