"""User-space link conditioner: added delay, random loss and a rate cap on datagrams.

This kernel has no netem, so tests and benchmarks impair the path here instead. The
conditioner sits under ICE (it wraps the UDP sockets aioice created), so connectivity checks,
QUIC and keep-alives all see the same path. The scheduling decision is a pure function of the
datagram size and the clock passed in; the asyncio glue is ``attach``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from enum import Enum
from typing import Any

from xp2p.link.config import Conditions

#: Datagrams waiting longer than this behind the rate cap are dropped, like a router queue.
MAX_QUEUE_DELAY = 0.25


class Direction(Enum):
    OUT = "out"
    IN = "in"


class ConditionerCore:
    """Decides when (or whether) each datagram is delivered. Sans-IO: the caller gives ``now``."""

    def __init__(self, conditions: Conditions) -> None:
        self.conditions = conditions
        self._rng = random.Random(conditions.seed)
        self._busy_until = {Direction.OUT: 0.0, Direction.IN: 0.0}
        self.dropped = 0
        self.delivered = 0

    def delay_for(self, direction: Direction, size: int, now: float) -> float | None:
        """Seconds to hold the datagram, or None to drop it."""
        c = self.conditions
        if c.loss > 0 and self._rng.random() < c.loss:
            self.dropped += 1
            return None
        delay = c.rtt_ms / 2000.0
        if c.rate_bps > 0:
            start = max(now, self._busy_until[direction])
            if start - now > MAX_QUEUE_DELAY:
                self.dropped += 1
                return None
            self._busy_until[direction] = start + size * 8 / c.rate_bps
            delay += self._busy_until[direction] - now
        self.delivered += 1
        return delay


def attach(ice: Any, conditions: Conditions) -> ConditionerCore | None:
    """Impair every socket of a gathered aioice connection, in both directions."""
    if not conditions.active:
        return None
    core = ConditionerCore(conditions)
    loop = asyncio.get_running_loop()

    def schedule(direction: Direction, size: int, deliver: Callable[[], None]) -> None:
        delay = core.delay_for(direction, size, loop.time())
        if delay is None:
            return
        if delay <= 0:
            deliver()
        else:
            loop.call_later(delay, deliver)

    # aioice keeps its sockets as StunProtocol objects with a datagram transport each.
    for protocol in list(getattr(ice, "_protocols", [])):
        transport = getattr(protocol, "transport", None)
        if transport is None or not hasattr(transport, "sendto"):
            continue
        _wrap(protocol, transport, schedule)
    return core


def _wrap(protocol: Any, transport: Any, schedule: Callable[..., None]) -> None:
    raw_sendto = transport.sendto
    raw_received = protocol.datagram_received

    def sendto(data: bytes, addr: Any = None) -> None:
        schedule(Direction.OUT, len(data), lambda: _send_if_open(transport, raw_sendto, data, addr))

    def datagram_received(data: bytes, addr: Any) -> None:
        schedule(Direction.IN, len(data), lambda: raw_received(data, addr))

    transport.sendto = sendto
    protocol.datagram_received = datagram_received


def _send_if_open(transport: Any, raw_sendto: Callable[..., None], data: bytes, addr: Any) -> None:
    if not transport.is_closing():
        raw_sendto(data, addr)
