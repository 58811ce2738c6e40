"""1vN: a live stream cut into signed chunks that viewers trade with each other.

Sans-IO throughout: `chunk` (cutting and reassembly), `wire` and `signing` (the chunk's
binary form and the edge's Ed25519 proof), `protocol` (peer messages), `scheduler` (what to
fetch from whom, what to serve), `tracker` (whom each viewer links to, which are seeds), the
edge's API by job (`edge_routes`, `edge_messages`, `peer_token`) and `sim` (a discrete-event
simulator running that same scheduler and tracker over thousands of peers). The edge service
and the viewer client wrap these in asyncio and the link layer.

``ChunkSigner`` and ``verify`` load on first use: `signing` needs cryptography, and the pure
modules (chunk, wire, protocol, scheduler, tracker, edge_messages) must import through this
package with the standard library alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xp2p.lazy import lazy_names
from xp2p.swarm.chunk import Chunk, Chunker, InitChunk, StreamAssembler
from xp2p.swarm.wire import ChunkFormatError, ChunkProof, decode_item, encode_item

if TYPE_CHECKING:
    from xp2p.swarm.signing import ChunkSigner, verify

#: name -> the module that defines it
_LAZY = {
    "ChunkSigner": "signing",
    "verify": "signing",
}

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "Chunk",
    "ChunkFormatError",
    "ChunkProof",
    "ChunkSigner",
    "Chunker",
    "InitChunk",
    "StreamAssembler",
    "decode_item",
    "encode_item",
    "verify",
]
