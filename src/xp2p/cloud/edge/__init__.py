"""1vN edge: rooms that pull a live FLV source once, cut and sign it into chunks, and the
tracker that introduces the viewers of each room to each other (docs/architecture.md, "The
1vN path").

The contract with viewers is `xp2p.swarm.edge_routes` (with `edge_messages` and
`peer_token`). Pure parts: `xp2p.swarm.tracker` (neighbours and seeds, shared with the
simulator) and `store` (the chunks kept); asyncio shells: `source` (the HTTP-FLV pull),
`room`, `peers` (a viewer's WebSocket), `service` (the routes) and `server` (`xp2p edge`).
"""

from xp2p.cloud.edge.config import EdgeConfig
from xp2p.cloud.edge.server import EdgeServer
from xp2p.cloud.edge.service import EdgeService

__all__ = ["EdgeConfig", "EdgeServer", "EdgeService"]
