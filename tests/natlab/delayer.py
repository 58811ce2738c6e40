"""Delay (and optionally drop) every packet of an NFQUEUE queue: netem's delay in user space.

This kernel has no ``sch_netem``, so the NAT lab and ``bench/lossy_link.py`` add path delay
here. Send packets to the queue with iptables, then run the delayer in the same network
namespace::

    iptables -t mangle -A FORWARD -j NFQUEUE --queue-num 3 --queue-bypass
    python tests/natlab/delayer.py --queue 3 --delay-ms 25 [--loss 0.01] [--seed 1]

Each packet is re-injected (``NF_ACCEPT``) ``--delay-ms`` after it was queued, in arrival
order (one FIFO with a constant delay keeps the order). With ``--loss P`` a packet is dropped
with probability P instead. ``--queue-bypass`` on the rule lets traffic through unimpaired
while no delayer is bound, so a delayer that died never black-holes a namespace.

How the verdict is deferred: NetfilterQueue calls back with a ``Packet`` per queued packet;
the callback stores the object and returns without a verdict, and ``accept()`` on it later
still works (the verdict needs only the queue handle and the packet id, not the payload). The
queue is bound in ``COPY_META`` mode, so no payload is copied to user space at all: the kernel
keeps the packets, this process keeps a small object per packet. The queue's socket is read
without blocking (``run(block=False)``) whenever a selector says it is readable, and the
selector's timeout is the next packet's due time.

Memory is bounded: at most ``--max-held`` packets wait at once (default 20000, ~240 Mbit/s of
1500-byte packets at 100 ms); a packet beyond that is dropped, as a full router queue would.
The kernel's own queue is sized to match.

SIGTERM or SIGINT: every held packet is released at once (never dropped: the caller is
tearing down, not impairing), the queue is unbound and the process exits with status 0.
Needs CAP_NET_ADMIN in the namespace (root), and ``pip install NetfilterQueue`` (the ``test``
extra; it builds against libnetfilter-queue-dev).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import selectors
import signal
import sys
import time
from typing import Any

NFQNL_COPY_META = 1  #: netfilter's copy mode: metadata only, no payload


class Delayer:
    """Holds packets for ``delay`` seconds; ``due()`` releases those whose time has come.

    Kept apart from the queue so the schedule can be tested without netfilter: any object
    with ``accept()`` and ``drop()`` will do as a packet.
    """

    def __init__(
        self, delay: float, loss: float = 0.0, max_held: int = 20000, seed: int | None = None
    ) -> None:
        self.delay = delay
        self.loss = loss
        self.max_held = max_held
        self._rng = random.Random(seed)
        self._held: collections.deque[tuple[float, Any]] = collections.deque()
        self.passed = 0
        self.dropped = 0
        self.overflowed = 0

    def packet(self, packet: Any, now: float) -> None:
        if self.loss > 0 and self._rng.random() < self.loss:
            packet.drop()
            self.dropped += 1
        elif len(self._held) >= self.max_held:
            packet.drop()
            self.overflowed += 1
        elif self.delay <= 0:
            packet.accept()
            self.passed += 1
        else:
            self._held.append((now + self.delay, packet))

    def due(self, now: float) -> float | None:
        """Release every packet due by ``now``; return when the next one is due (or None)."""
        held = self._held
        while held and held[0][0] <= now:
            held.popleft()[1].accept()
            self.passed += 1
        return held[0][0] if held else None

    def release_all(self) -> None:
        while self._held:
            self._held.popleft()[1].accept()
            self.passed += 1

    @property
    def held(self) -> int:
        return len(self._held)


def serve(queue_num: int, delayer: Delayer) -> None:
    from netfilterqueue import NetfilterQueue

    # Signals only set a flag and wake the selector through a pipe: an exception raised
    # inside NetfilterQueue's callback would lose the packet being handed over.
    stop: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.append(signum))

    queue = NetfilterQueue()

    def on_packet(packet: Any) -> None:
        delayer.packet(packet, time.monotonic())

    queue.bind(queue_num, on_packet, max_len=delayer.max_held, mode=NFQNL_COPY_META)
    selector = selectors.DefaultSelector()
    queue_fd = queue.get_fd()
    selector.register(queue_fd, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    try:
        next_due: float | None = None
        while not stop:
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            for key, _ in selector.select(timeout):
                if key.fd == queue_fd:
                    queue.run(block=False)  # every message waiting now, then back here
                else:
                    os.read(wake_r, 512)
            next_due = delayer.due(time.monotonic())
    finally:
        # Everything still held goes out now: a teardown must not look like packet loss.
        delayer.release_all()
        selector.close()
        queue.unbind()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE queue number")
    parser.add_argument("--delay-ms", type=float, required=True, help="delay per packet, ms")
    parser.add_argument("--loss", type=float, default=0.0, help="drop probability (0-1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the drop choice")
    parser.add_argument("--max-held", type=int, default=20000, help="packets held at most")
    args = parser.parse_args(argv)
    if not 0 <= args.loss <= 1 or args.delay_ms < 0 or args.max_held < 1:
        parser.error("need 0 <= loss <= 1, delay >= 0 and max-held >= 1")
    delayer = Delayer(args.delay_ms / 1000, args.loss, args.max_held, args.seed)
    serve(args.queue, delayer)
    print(
        f"delayer queue {args.queue}: {delayer.passed} passed, {delayer.dropped} dropped, "
        f"{delayer.overflowed} overflowed",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
