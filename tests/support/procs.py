"""A started program whose output goes to a log file the tests read (lines, JSON events),
and what starting one on loopback needs: a free port, a cloud config. (Benches use it too.)"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Launcher = Callable[..., "subprocess.Popen[bytes]"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now (TCP, or UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_cloud_config(
    path: Path, port: int, app_key: str, app_secret: str, *, edge_sources: Sequence[str] = ()
) -> Path:
    """An ``xp2p cloud`` config on 127.0.0.1:``port`` (STUN on any free port) with one app
    allowed every product; readable by its owner only, as it holds the secret.
    ``edge_sources``: origins the edge may pull although they are on loopback."""
    edge = ""
    if edge_sources:
        edge = "[edge]\nallowed_sources = [" + ", ".join(f'"{s}"' for s in edge_sources) + "]\n"
    path.write_text(
        f'host = "127.0.0.1"\nport = {port}\nstun_port = 0\n'
        f'[[apps]]\nkey = "{app_key}"\nsecret = "{app_secret}"\nproducts = ["*"]\n' + edge
    )
    path.chmod(0o600)
    return path


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        launcher: Launcher = subprocess.Popen,
    ) -> Proc:
        """Run ``argv`` (through ``launcher``, e.g. inside a namespace), output into ``log``."""
        with log.open("wb") as out:
            popen = launcher(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        return cls(name, popen, log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.popen.returncode}:\n{self.text()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no {pattern!r} in {timeout} s:\n{self.text()[-3000:]}")

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines it printed so far."""
        return [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["event"] == name]
            if found:
                return found[0]
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no {name!r} event in {timeout} s:\n{self.text()}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode
