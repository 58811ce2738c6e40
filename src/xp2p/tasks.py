"""Background tasks an object owns: spawned by name, all cancelled and awaited when it stops.

asyncio keeps only a weak reference to a task, so a task nobody holds can vanish mid-flight;
and an object that stops must cancel what it started and wait for it, or the tasks outlive
it and log "Task was destroyed but it is pending". ``TaskSet`` is the one place that does
both, for the link, the device agent, the viewer's services and the swarm client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    """Tasks named ``<prefix>-<name>``, held until done; ``cancel_all`` ends them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str = "task") -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.prefix}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    async def cancel_all(self) -> None:
        """Cancel every task (but the one calling, which may be one of them) and wait for
        them to finish; their exceptions are theirs to log, not the caller's to get."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self, timeout: float | None = None) -> None:
        """Wait (bounded) for the tasks running now to end by themselves."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
