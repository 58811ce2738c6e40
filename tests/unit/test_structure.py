"""The shape of src/xp2p, checked: no import cycles, no reaching into another file's
private names, and pure cores that import with the standard library alone
(docs/architecture.md, "Who may import whom")."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: Sans-IO cores: parsers, state machines and schedulers that must import (and so be
#: fuzzed, simulated and reused) without aiohttp, aioice, aioquic, cryptography or PyAV.
PURE_CORES = (
    "xp2p.errors",
    "xp2p.events",
    "xp2p.flv.reader",
    "xp2p.swarm.chunk",
    "xp2p.swarm.wire",
    "xp2p.swarm.protocol",
    "xp2p.swarm.scheduler",
    "xp2p.swarm.tracker",
    "xp2p.swarm.edge_messages",
    "xp2p.link.nat_behaviour",
    "xp2p.link.errors",
    "xp2p.device.playback_session",
    "xp2p.device.record_index",
    "xp2p.viewer.command_codec",
)


def module_files() -> dict[str, Path]:
    files = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def runtime_imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(module, imported name or '') for every import that runs: function-level imports
    included, ``if TYPE_CHECKING:`` blocks excluded."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(inner) for inner in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(base, alias.name) for alias in node.names]
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for module, imported in runtime_imports(name, path):
            if f"{module}.{imported}" in files:
                graph[name].add(f"{module}.{imported}")
            elif module in files:
                graph[name].add(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_files() -> None:
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_file_imports_another_files_private_names() -> None:
    files = module_files()
    offences = [
        f"{name} imports {imported} from {module}"
        for name, path in files.items()
        for module, imported in runtime_imports(name, path)
        if module.startswith("xp2p")
        and module != name
        and imported.startswith("_")
        and not (imported.startswith("__") and imported.endswith("__"))
    ]
    assert offences == []


@pytest.mark.parametrize("module", PURE_CORES)
def test_pure_core_imports_with_the_standard_library_alone(module: str) -> None:
    # -I -S: no site-packages, no user site, no PYTHONPATH; only src/ is added.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import importlib; "
        f"importlib.import_module({module!r}); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'aioice', 'aioquic', 'cryptography', 'av', 'numpy', 'rich')); "
        "assert not heavy, heavy"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(SRC)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "package", ["xp2p", "xp2p.link", "xp2p.device", "xp2p.swarm", "xp2p.viewer"]
)
def test_lazy_packages_name_what_they_lack(package: str) -> None:
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'Nope'"):
        _ = module.Nope
    for name in module.__all__:
        assert getattr(module, name) is not None, name
