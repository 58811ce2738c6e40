"""NAT-lab fixtures: one lab (namespaces, routers) per test module, torn down after it.

Where the lab cannot run (not root, no namespaces, no iptables) its tests are skipped with the
reason; the session summary says how many NAT-lab tests ran, so a skip is never silent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab import NatLab, unavailable_reason
from .world import LabWorld, new_world

REASON = unavailable_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "natlab" in item.nodeid and REASON is not None:
            item.add_marker(pytest.mark.skip(reason=f"NAT lab unavailable: {REASON}"))


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
