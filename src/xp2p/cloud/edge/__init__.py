"""1vN edge: rooms that pull a live FLV source once, cut and sign it into chunks, and the
tracker that introduces the viewers of each room to each other (SPEC §7).

The contract with viewers is `xp2p.swarm.edge_api`. Pure parts: `tracker` (neighbours and
seeds) and `store` (the chunks kept); asyncio shells: `source` (the HTTP-FLV pull), `room`,
`peers` (a viewer's WebSocket), `service` (the routes) and `server` (`xp2p edge`).
"""

from xp2p.cloud.edge.config import EdgeConfig
from xp2p.cloud.edge.server import EdgeServer
from xp2p.cloud.edge.service import EdgeService
from xp2p.cloud.edge.tracker import Tracker, TrackerConfig, TrackerUpdate

__all__ = ["EdgeConfig", "EdgeServer", "EdgeService", "Tracker", "TrackerConfig", "TrackerUpdate"]
