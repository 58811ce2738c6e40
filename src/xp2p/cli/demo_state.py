"""Where a running ``xp2p demo`` says how to reach it, so that ``xp2p cmd``, ``talk``,
``download`` and ``records`` work against it with no flags (its accounts are random per run).

One JSON file, ``$XDG_RUNTIME_DIR/xp2p/demo.json`` (else ``~/.cache/xp2p/demo.json``), mode
0600 in a 0700 folder: the demo's cloud URL, app key and app secret, and the demo's pid. The
demo writes it when it is up and removes it when it stops; a file whose pid is gone is stale
and ignored. It holds a secret, so only its owner can read it, and only for the run's life.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "demo.json"


@dataclass(frozen=True)
class DemoState:
    cloud_url: str
    app_key: str
    app_secret: str
    pid: int

    def __repr__(self) -> str:  # never the secret
        return f"DemoState({self.cloud_url!r}, {self.app_key!r}, pid={self.pid})"


def state_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path.home() / ".cache"
    return base / "xp2p" / FILE_NAME


def write_state(state: DemoState, path: Path | None = None) -> Path:
    """Written to a temporary name with mode 0600 first, then renamed: never readable by
    others, never half-written."""
    path = path or state_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(state), out)
    os.replace(temporary, path)
    return path


def remove_state(path: Path | None = None, pid: int | None = None) -> None:
    """Remove the file if it is this process's (another demo may have started since)."""
    path = path or state_path()
    current = read_state(path)
    if current is not None and current.pid == (pid or os.getpid()):
        path.unlink(missing_ok=True)


def read_state(path: Path | None = None) -> DemoState | None:
    """The running demo's state; None when there is none, it is unreadable, or stale."""
    path = path or state_path()
    try:
        doc = json.loads(path.read_text())
        state = DemoState(
            str(doc["cloud_url"]), str(doc["app_key"]), str(doc["app_secret"]), int(doc["pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if _alive(state.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but then not our demo
        return False
    return pid > 0
