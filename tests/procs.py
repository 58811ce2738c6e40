"""A started program whose output goes to a log file the tests read (lines, JSON events)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Launcher = Callable[..., "subprocess.Popen[bytes]"]


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
