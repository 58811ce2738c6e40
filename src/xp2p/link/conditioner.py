"""User-space link conditioner: added delay, random loss and a rate cap on datagrams.

This kernel has no netem, so tests and benchmarks impair the path here instead. The
conditioner sits under ICE (it wraps the UDP sockets aioice created), so connectivity checks,
QUIC and keep-alives all see the same path. The scheduling decision is a pure function of the
datagram size and the clock passed in; the asyncio glue is ``attach``.
"""

from __future__ import annotations

import asyncio
import random
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
    # aioice keeps its sockets as StunProtocol objects with a datagram transport each.
    for protocol in list(getattr(ice, "_protocols", [])):
        transport = getattr(protocol, "transport", None)
        if transport is not None and hasattr(transport, "sendto"):
            _ConditionedSocket(core, protocol, transport)
    return core


class _ConditionedSocket:
    """Routes one socket's datagrams through the core's schedule.

    Closing waits for datagrams still held back (up to MAX_QUEUE_DELAY + the RTT), so what a
    closing link sent last — its CONNECTION_CLOSE — still reaches the peer, as it would on a
    real delayed path.
    """

    def __init__(self, core: ConditionerCore, protocol: Any, transport: Any) -> None:
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._raw_sendto = transport.sendto
        self._raw_close = transport.close
        self._raw_received = protocol.datagram_received
        self._held_out = 0
        self._close_requested = False
        transport.sendto = self.sendto
        transport.close = self.close
        protocol.datagram_received = self.datagram_received

    def sendto(self, data: bytes, addr: Any = None) -> None:
        delay = self._core.delay_for(Direction.OUT, len(data), self._loop.time())
        if delay is None:
            return
        if delay <= 0:
            self._raw_sendto(data, addr)
            return
        self._held_out += 1
        self._loop.call_later(delay, self._send_held, data, addr)

    def _send_held(self, data: bytes, addr: Any) -> None:
        self._held_out -= 1
        # aioice's TURN transport (a relayed candidate's) has no is_closing().
        is_closing = getattr(self._transport, "is_closing", None)
        if is_closing is None or not is_closing():
            self._raw_sendto(data, addr)
        if self._close_requested and not self._held_out:
            self._raw_close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._close_requested:
            return
        delay = self._core.delay_for(Direction.IN, len(data), self._loop.time())
        if delay is None:
            return
        if delay <= 0:
            self._raw_received(data, addr)
        else:
            self._loop.call_later(delay, self._raw_received, data, addr)

    def close(self) -> None:
        self._close_requested = True
        if not self._held_out:
            self._raw_close()
