"""The event-loop watchdog names the code that blocks the loop, and says when it ran again."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from xp2p.watchdog import watch_running_loop


def blocking_call_in_a_coroutine() -> None:
    time.sleep(1.0)


async def test_a_blocked_loop_is_logged_with_the_blocking_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "xp2p.watchdog")
    watchdog = watch_running_loop(threshold=0.3)
    try:
        await asyncio.sleep(0.1)
        blocking_call_in_a_coroutine()
        await asyncio.sleep(0.2)
    finally:
        watchdog.stop()
    messages = [r.getMessage() for r in caplog.records]
    # Only the stall we made names our function (a loaded machine may add others).
    (stalled,) = [i for i, m in enumerate(messages) if "blocking_call_in_a_coroutine" in m]
    assert messages[stalled].startswith("event loop blocked for")
    assert "time.sleep(1.0)" in messages[stalled]
    assert messages[stalled + 1].startswith("event loop ran again after")


async def test_a_loop_that_keeps_turning_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "xp2p.watchdog")
    watchdog = watch_running_loop(threshold=1.0)
    try:
        for _ in range(30):
            await asyncio.sleep(0.05)
    finally:
        watchdog.stop()
    assert caplog.records == []
