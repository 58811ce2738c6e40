"""The 1vN viewer: a member of an edge's swarm room, trading signed chunks with neighbours.

`SwarmService` (joining, the control channel, recovery, statistics) runs a `SwarmPull` (the
asyncio shell around `xp2p.swarm.scheduler`) over `PeerPipe`s (one message pipe per
neighbour link) that `Neighbourhood` dials and accepts; `EdgeClient` talks to the edge and
`Playout` turns verified chunks into the app's FLV byte stream.
"""

from xp2p.viewer.swarm.edge_client import EdgeClient, pick_edge
from xp2p.viewer.swarm.service import SwarmService
from xp2p.viewer.swarm.stats import SwarmStats

__all__ = ["EdgeClient", "SwarmService", "SwarmStats", "pick_edge"]
