"""The binary wire form of a chunk and its proof, as the edge serves it and peers relay it.

Version 1, all integers big-endian::

    magic "XC" | version u8 = 1 | kind u8 (1 init, 2 chunk)
    init:  stream_id u64 | init_id u32 | flv_flags u8 | payload_len u32
    chunk: stream_id u64 | seq u64 | init_id u32 | start_ms u32 | duration_ms u32
           | flags u8 (bit 0: keyframe_start) | payload_len u32
    payload (payload_len bytes)
    proof: proof_kind u8 (1 = Ed25519 over this item) | proof_len u16 | proof bytes

The header before the payload is also what the signature covers (`signed_header`), so a
field can never be relayed with a value other than the one the edge signed. The parser takes
a whole item (peers frame items themselves) and refuses anything malformed or oversize with
a `ChunkFormatError` naming the problem; it never reads past the end or allocates by a length
it has not checked against ``max_payload``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xp2p.flv import FlvHeader

from .chunk import Chunk, InitChunk

MAGIC = b"XC"
VERSION = 1
KIND_INIT = 1
KIND_CHUNK = 2
PROOF_ED25519 = 1
SIGNATURE_SIZE = 64
#: Chunks are capped at 1 MiB by the chunker; the wire allows a little more before refusing.
MAX_PAYLOAD = 2 * 1024 * 1024

_PREFIX = struct.Struct(">2sBB")
_INIT = struct.Struct(">QIBI")
_CHUNK = struct.Struct(">QQIIIBI")
_PROOF = struct.Struct(">BH")
_FLAG_KEYFRAME = 0x01
_FLV_FLAG_BITS = 0x05  # audio | video, as in the FLV file header


class ChunkFormatError(ValueError):
    """A wire item that is not a well-formed version-1 chunk or init chunk."""


@dataclass(frozen=True, slots=True)
class ChunkProof:
    """The edge's evidence that an item is genuine: an Ed25519 signature of `signed_header`
    and the payload's sha256 (see `xp2p.swarm.signing`)."""

    signature: bytes
    kind: int = PROOF_ED25519


def signed_header(item: Chunk | InitChunk) -> bytes:
    """The wire header of ``item``: every field but the payload itself."""
    if isinstance(item, InitChunk):
        return _PREFIX.pack(MAGIC, VERSION, KIND_INIT) + _INIT.pack(
            item.stream_id, item.init_id, item.header.flags, len(item.payload)
        )
    flags = _FLAG_KEYFRAME if item.keyframe_start else 0
    return _PREFIX.pack(MAGIC, VERSION, KIND_CHUNK) + _CHUNK.pack(
        item.stream_id,
        item.seq,
        item.init_id,
        item.start_ms,
        item.duration_ms,
        flags,
        len(item.payload),
    )


def encode_item(item: Chunk | InitChunk, proof: ChunkProof) -> bytes:
    """``item`` and its proof as one wire item (fields out of range raise struct.error)."""
    if len(item.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(item.payload)} bytes is over {MAX_PAYLOAD}")
    return b"".join(
        (
            signed_header(item),
            item.payload,
            _PROOF.pack(proof.kind, len(proof.signature)),
            proof.signature,
        )
    )


def decode_item(
    data: bytes, *, max_payload: int = MAX_PAYLOAD
) -> tuple[Chunk | InitChunk, ChunkProof]:
    """Parse one whole wire item. Checks the framing only: `verify` says if it is genuine."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise ChunkFormatError(f"item of {len(view)} bytes is shorter than its prefix")
    magic, version, kind = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise ChunkFormatError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ChunkFormatError(f"unsupported chunk format version {version}")
    pos = _PREFIX.size
    item: Chunk | InitChunk
    if kind == KIND_INIT:
        if len(view) < pos + _INIT.size:
            raise ChunkFormatError("truncated init chunk header")
        stream_id, init_id, flv_flags, size = _INIT.unpack_from(view, pos)
        if flv_flags & ~_FLV_FLAG_BITS:
            raise ChunkFormatError(f"reserved FLV flag bits set: 0x{flv_flags:02x}")
        pos += _INIT.size
        payload = _payload(view, pos, size, max_payload)
        item = InitChunk(stream_id, init_id, FlvHeader.from_flags(flv_flags), payload)
    elif kind == KIND_CHUNK:
        if len(view) < pos + _CHUNK.size:
            raise ChunkFormatError("truncated chunk header")
        stream_id, seq, init_id, start, duration, flags, size = _CHUNK.unpack_from(view, pos)
        if flags & ~_FLAG_KEYFRAME:
            raise ChunkFormatError(f"reserved chunk flag bits set: 0x{flags:02x}")
        pos += _CHUNK.size
        payload = _payload(view, pos, size, max_payload)
        keyframe = bool(flags & _FLAG_KEYFRAME)
        item = Chunk(stream_id, seq, init_id, start, duration, keyframe, payload)
    else:
        raise ChunkFormatError(f"unknown item kind {kind}")
    pos += len(payload)
    if len(view) < pos + _PROOF.size:
        raise ChunkFormatError("truncated proof header")
    proof_kind, proof_len = _PROOF.unpack_from(view, pos)
    pos += _PROOF.size
    if proof_kind != PROOF_ED25519:
        raise ChunkFormatError(f"unknown proof kind {proof_kind}")
    if proof_len != SIGNATURE_SIZE:
        raise ChunkFormatError(f"Ed25519 proof of {proof_len} bytes, expected {SIGNATURE_SIZE}")
    if len(view) < pos + proof_len:
        raise ChunkFormatError("truncated proof")
    if len(view) > pos + proof_len:
        raise ChunkFormatError(f"{len(view) - pos - proof_len} bytes after the proof")
    return item, ChunkProof(bytes(view[pos : pos + proof_len]), proof_kind)


def _payload(view: memoryview, pos: int, size: int, max_payload: int) -> bytes:
    if size > max_payload:
        raise ChunkFormatError(f"payload of {size} bytes is over the limit of {max_payload}")
    if len(view) < pos + size:
        raise ChunkFormatError(f"payload truncated: {len(view) - pos} of {size} bytes")
    return bytes(view[pos : pos + size])
