"""Headless Chromium for the browser tier, driven by web/tools/driver.mjs (playwright-core).

One driver process (one Chromium) per test module; commands and answers are JSON lines. The
calls block, so tests make them through ``asyncio.to_thread``: the real stack they exercise
runs in the test's event loop, which must keep turning while the page plays.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CHROMIUM = os.environ.get("XP2P_CHROMIUM", "/usr/bin/chromium")
INSTALL = (
    "bash scripts/setup.sh (it runs `apt-get install -y chromium` and `npm ci` in web/, "
    "with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1)"
)


def require_browser_tools() -> None:
    """Fail loudly (never skip: CI must not pass unseen without a browser)."""
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium ({CHROMIUM})")
    if shutil.which("node") is None:
        missing.append("node")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        missing.append("web/node_modules (npm ci)")
    if missing:
        pytest.fail(f"the browser tier needs {', '.join(missing)}: run {INSTALL}", pytrace=False)


class BrowserError(AssertionError):
    """A command failed in Chromium (the page threw, navigation failed...)."""


class Chromium:
    def __init__(
        self,
        timeout: float = 30.0,
        args: list[str] | None = None,
        command_prefix: list[str] | None = None,
    ) -> None:
        """``args``: extra Chromium flags. ``command_prefix``: what the driver runs under,
        e.g. ``["ip", "netns", "exec", NS]`` for a Chromium inside a NAT-lab namespace."""
        require_browser_tools()
        self.timeout = timeout
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [*(command_prefix or []), "node", str(WEB / "tools" / "driver.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={
                **os.environ,
                "XP2P_CHROMIUM": CHROMIUM,
                "XP2P_CHROMIUM_ARGS": json.dumps(args or []),
            },
        )
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._get()
        self.version = str(ready.get("ready"))

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._answers.put(json.loads(line))
        self._answers.put(None)

    def _get(self) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=self.timeout)
        except queue.Empty:
            raise BrowserError(f"Chromium gave no answer within {self.timeout} s") from None
        if answer is None:
            self._log.seek(0)
            raise BrowserError("the Chromium driver exited: " + self._log.read()[-2000:].decode())
        return answer

    def call(self, op: str, **args: Any) -> Any:
        with self._lock:
            self._next += 1
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"id": self._next, "op": op, **args}) + "\n")
            self._proc.stdin.flush()
            answer = self._get()
        assert answer.get("id") == self._next, answer
        if "error" in answer:
            raise BrowserError(answer["error"])
        return answer.get("value")

    async def open(self, url: str) -> tuple[int, int]:
        """A new page at ``url``: (page id, HTTP status of the navigation)."""
        value = await asyncio.to_thread(self.call, "open", url=url)
        return int(value["page"]), int(value["status"])

    async def eval(self, page: int, fn: str, arg: Any = None) -> Any:
        """``fn`` (JavaScript function source, may be async) applied to ``arg`` in the page."""
        return await asyncio.to_thread(self.call, "eval", page=page, fn=fn, arg=arg)

    async def click(self, page: int, selector: str) -> None:
        """A real mouse click on the element ``selector`` finds (waiting for it to be there)."""
        await asyncio.to_thread(self.call, "click", page=page, selector=selector)

    async def mouse(self, page: int, selector: str, action: str) -> None:
        """The mouse over ``selector``'s element and its button pressed (``"down"``) or let go
        (``"up"``): a button held, as for a PTZ pad."""
        await asyncio.to_thread(self.call, "mouse", page=page, selector=selector, action=action)

    async def close_page(self, page: int) -> None:
        await asyncio.to_thread(self.call, "close", page=page)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()
