"""1vN: a live stream cut into signed chunks that viewers trade with each other.

Sans-IO throughout: `chunk` (cutting and reassembly), `wire` and `signing` (the chunk's
binary form and the edge's Ed25519 proof), `protocol` (peer messages), `scheduler` (what to
fetch from whom, what to serve) and `sim` (a discrete-event simulator running that same
scheduler over thousands of peers). The edge service and the viewer client wrap these in
asyncio and the link layer.
"""

from __future__ import annotations

from .chunk import Chunk, Chunker, InitChunk, StreamAssembler
from .signing import ChunkSigner, verify
from .wire import ChunkFormatError, ChunkProof, decode_item, encode_item

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
