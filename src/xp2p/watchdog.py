"""A watchdog for the asyncio event loop: logs where the loop is stuck when it stops turning.

Everything xp2p does (keep-alives, ICE checks, the cloud WebSocket's heartbeat) runs on one
event loop, so a blocking call anywhere stalls all of it at once, and what the peers see is
only its consequence: a missed PONG, a link with "no ICE path". The watchdog names the cause:
a thread checks that the loop ticks; when it has not for ``threshold`` seconds it logs a
WARNING with the loop thread's stack, and when the loop turns again, how long it was stuck.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

logger = logging.getLogger("xp2p.watchdog")

#: Seconds without a tick before the stack is logged; keep-alives are 2.5 s apart.
DEFAULT_THRESHOLD = 1.5


class LoopWatchdog:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, threshold: float = DEFAULT_THRESHOLD
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self._interval = min(0.25, threshold / 4)
        self._last_tick = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="xp2p-watchdog", daemon=True)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Call from the loop's own thread."""
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self._timer = self.loop.call_later(self._interval, self._tick)

    def _watch(self) -> None:
        stuck_since: float | None = None
        while not self._stopped.wait(self._interval):
            last = self._last_tick
            lag = time.monotonic() - last
            if stuck_since is None and lag > self.threshold:
                stuck_since = last
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame)) if frame else "(no frame)\n"
                logger.warning("event loop blocked for %.1f s, at:\n%s", lag, where.rstrip())
            elif stuck_since is not None and last > stuck_since:
                logger.warning("event loop ran again after %.1f s", last - stuck_since)
                stuck_since = None


def watch_running_loop(threshold: float = DEFAULT_THRESHOLD) -> LoopWatchdog:
    """Start a watchdog on the running loop (from a coroutine); ``stop()`` it when done."""
    watchdog = LoopWatchdog(asyncio.get_running_loop(), threshold)
    watchdog.start()
    return watchdog
