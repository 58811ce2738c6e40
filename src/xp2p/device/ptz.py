"""The default ``action=user_define`` handler: the seed demo's PTZ, simulated.

The messages are in docs/protocol.md §10.

A viewer holds a direction button down (``ptz_up_press`` ...) and lets go
(``ptz_release_pre``); the head turns at a fixed speed while a button is held and stops at
its mechanical limits. ``PtzHead`` is that state machine, sans-IO: every call takes ``now``
(seconds on any monotonic clock) and the position is worked out from when the movement
started, so tests drive it with a fake clock and the device with ``time.monotonic``.

The reply is the demo's ``{"apex": "yes"|"no"}``. *Apex* means "the head is at its limit in
the direction of this command": after a press, it cannot turn further that way (it may have
been there already, or a very fast head reached it at once); after a release, it stopped at
the limit of the direction it was turning. A viewer uses it to grey out that button.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from xp2p.device.request import BadRequest

#: ``cmd`` value of ``data`` that stops the head.
RELEASE = "ptz_release_pre"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    LEFT = "left"
    RIGHT = "right"


#: axis (0 = pan, 1 = tilt) and sign of each direction: right/up are positive.
_MOTION: dict[Direction, tuple[int, int]] = {
    Direction.LEFT: (0, -1),
    Direction.RIGHT: (0, 1),
    Direction.DOWN: (1, -1),
    Direction.UP: (1, 1),
}
PRESS_COMMANDS = {f"ptz_{d.value}_press": d for d in Direction}


@dataclass(frozen=True)
class PtzLimits:
    """Mechanical range in degrees and turning speed in degrees per second."""

    pan_min: float = -170.0
    pan_max: float = 170.0
    tilt_min: float = -30.0
    tilt_max: float = 90.0
    speed: float = 30.0

    def __post_init__(self) -> None:
        if not (self.pan_min <= 0 <= self.pan_max and self.tilt_min <= 0 <= self.tilt_max):
            raise ValueError("the home position (0, 0) must lie within the limits")
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    def bounds(self, axis: int) -> tuple[float, float]:
        return (self.pan_min, self.pan_max) if axis == 0 else (self.tilt_min, self.tilt_max)


class PtzHead:
    """One channel's pan/tilt head. It starts at home (0, 0), standing still."""

    def __init__(self, limits: PtzLimits | None = None) -> None:
        self.limits = limits or PtzLimits()
        self._position = [0.0, 0.0]  # pan, tilt at ``_since``
        self._since = 0.0
        self.moving: Direction | None = None

    def position(self, now: float) -> tuple[float, float]:
        """(pan, tilt) in degrees at ``now``."""
        pan, tilt = self._position
        if self.moving is None:
            return pan, tilt
        axis, sign = _MOTION[self.moving]
        low, high = self.limits.bounds(axis)
        # A clock that stepped back must not move the head backwards.
        travelled = self.limits.speed * max(0.0, now - self._since)
        moved = min(high, max(low, self._position[axis] + sign * travelled))
        return (moved, tilt) if axis == 0 else (pan, moved)

    def at_limit(self, direction: Direction, now: float) -> bool:
        axis, sign = _MOTION[direction]
        low, high = self.limits.bounds(axis)
        return self.position(now)[axis] == (high if sign > 0 else low)

    def press(self, direction: Direction, now: float) -> bool:
        """Start turning towards ``direction``; returns apex (already at that limit)."""
        self._settle(now)
        self.moving = direction
        return self.at_limit(direction, now)

    def release(self, now: float) -> bool:
        """Stop; returns apex (stopped at the limit of the direction it was turning)."""
        direction = self.moving
        self._settle(now)
        self.moving = None
        return direction is not None and self.at_limit(direction, now)

    def _settle(self, now: float) -> None:
        self._position = list(self.position(now))
        self._since = now


class PtzSimulator:
    """A user_define handler: ``await handler(channel, command_text)`` → ``{"apex": ...}``.

    Commands are the demo's JSON ``{"topic":"ptz","data":{"cmd":"ptz_up_press"},
    "message_id":n}``; anything else is a 400 (not JSON, wrong shape) or 406 (another topic or
    an unknown PTZ command), answered as a JSON error by the commands module.
    """

    def __init__(
        self, limits: PtzLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or PtzLimits()
        self._clock = clock
        self.heads: dict[int, PtzHead] = {}

    def head(self, channel: int) -> PtzHead:
        if channel not in self.heads:
            self.heads[channel] = PtzHead(self.limits)
        return self.heads[channel]

    async def __call__(self, channel: int, command: str) -> dict[str, str]:
        return self.handle(channel, command)

    def handle(self, channel: int, command: str) -> dict[str, str]:
        ptz_command = parse_ptz_command(command)
        head, now = self.head(channel), self._clock()
        if ptz_command == RELEASE:
            apex = head.release(now)
        else:
            apex = head.press(PRESS_COMMANDS[ptz_command], now)
        return {"apex": "yes" if apex else "no"}


def parse_ptz_command(command: str) -> str:
    """The ``data.cmd`` of a demo PTZ command; BadRequest 400/406 for anything else."""
    try:
        doc: Any = json.loads(command)
    except (ValueError, RecursionError):
        raise BadRequest(400, "user command is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest(400, "user command must be a JSON object")
    if doc.get("topic") != "ptz":
        raise BadRequest(406, f"unsupported topic {str(doc.get('topic'))[:40]!r}")
    data = doc.get("data")
    name = data.get("cmd") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise BadRequest(400, "a ptz command needs data.cmd")
    if name != RELEASE and name not in PRESS_COMMANDS:
        raise BadRequest(406, f"unknown ptz command {name[:40]!r}")
    return name
