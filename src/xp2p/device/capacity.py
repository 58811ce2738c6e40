"""The device's viewer capacity (``DeviceConfig.max_viewers``, docs/protocol.md §9 and §12).

A *viewer* is a link that currently pulls live or playback video: a link with two pulls holds
one slot, a link that only sends commands or talks holds none. ``ViewerSlots`` is the
accounting alone (sans-IO, no clock, no links); ``viewer_slot`` is the thin shell a pull
handler wraps its whole life in, so the slot is freed the moment the pull ends for any reason:
the viewer stopped it, closed its link, or vanished and its link timed out (the pull's next
write raises ``StreamClosed``).

Other request modules (playback, get_device_st) share the same slots through ``slots(device)``.

One slot beyond ``max_viewers`` is kept for the 1vN edge (a link whose grant has the
``relay`` permission, which only the edge mints): when the device is full, the edge pulls it
once and serves every later viewer from a swarm, so the device serves at most
``max_viewers`` + 1 pulls (docs/protocol.md §12).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from xp2p.auth import RELAY
from xp2p.device.request import BadRequest, DeviceState, RequestContext


class ViewerSlots:
    """Which viewers (by link id) hold a slot, and how many pulls each has running."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("max_viewers must be 0 or more")
        self.limit = limit
        self._pulls: Counter[int] = Counter()
        self._relays: set[int] = set()  #: viewers holding the edge's slot

    @property
    def in_use(self) -> int:
        """Viewers holding a slot (``appConnectNum`` of get_device_st)."""
        return len(self._pulls)

    def holds(self, viewer: int) -> bool:
        return viewer in self._pulls

    def would_admit(self, viewer: int, relay: bool = False) -> bool:
        """Whether a new pull from ``viewer`` (``relay``: the edge's link) would be admitted."""
        if self.holds(viewer) or self.in_use - len(self._relays) < self.limit:
            return True
        return relay and not self._relays

    def claim(self, viewer: int, relay: bool = False) -> bool:
        """Start one pull of ``viewer``; False (and nothing changes) when the device is full."""
        if not self.would_admit(viewer, relay):
            return False
        if relay and not self.holds(viewer) and self.in_use - len(self._relays) >= self.limit:
            self._relays.add(viewer)
        self._pulls[viewer] += 1
        return True

    def release(self, viewer: int) -> None:
        """End one pull of ``viewer``; its slot is free once its last pull ended."""
        if self._pulls.get(viewer, 0) <= 1:
            self._pulls.pop(viewer, None)
            self._relays.discard(viewer)
        else:
            self._pulls[viewer] -= 1


def slots(device: DeviceState) -> ViewerSlots:
    """The device's slots, made on first use from its config."""
    if device.viewer_slots is None:
        device.viewer_slots = ViewerSlots(device.config.max_viewers)
    return device.viewer_slots


@contextmanager
def viewer_slot(ctx: RequestContext) -> Iterator[None]:
    """Hold a slot for the request's link while the block runs; 503 when the device is full."""
    device_slots = slots(ctx.device)
    viewer = ctx.request.link.id
    if not device_slots.claim(viewer, relay=ctx.grant.allows(RELAY)):
        raise BadRequest(503, f"device is at its viewer capacity ({device_slots.limit})")
    try:
        yield
    finally:
        device_slots.release(viewer)
