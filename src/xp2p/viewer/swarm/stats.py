"""A 1vN service's statistics: the running counters and the snapshot the app gets."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counters:
    """Cumulative per service (a restarted pull keeps adding)."""

    p2p_bytes: int = 0
    cdn_bytes: int = 0
    uploaded_bytes: int = 0
    stalls: int = 0  #: of pulls that ended; the current one's are added live
    bad_chunks: int = 0
    wasted_bytes: int = 0  #: verified duplicates
    control_bytes: int = 0  #: from neighbours whose pipes closed, not chunks (see SwarmStats)
    #: Chunks asked of the edge, by why: ``seed``, ``start`` (before the first frame),
    #: ``peer_late`` (a neighbour's transfer overdue), ``peers_busy`` (neighbours hold it,
    #: none could be asked), ``no_holder``. Logged with each stats report (debug).
    edge_requests: Counter[str] = field(default_factory=Counter)
    refused: int = 0  #: requests neighbours refused (Busy)
    refusing: int = 0  #: requests this viewer refused for its upload cap (or a seed's rule)


@dataclass(frozen=True, slots=True)
class SwarmStats:
    """``P2PModule.get_swarm_stats(id)``; bytes are cumulative since the service started."""

    room: str
    peer_id: str
    seed: bool
    neighbours: int
    p2p_bytes: int
    cdn_bytes: int
    uploaded_bytes: int
    stalls: int
    #: Received from neighbours that was not chunk data (announcements, requests, framing):
    #: the swarm's control overhead, beside p2p_bytes + cdn_bytes.
    control_bytes: int
    bad_chunks: int
    banned: int
    state: str  #: the room's: starting, live, stalled, ended; or reconnecting
    streaming: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
