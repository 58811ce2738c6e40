"""Messages between swarm peers (and the tracker's neighbour lists), in a compact binary form.

One message is ``type u8`` then its fields, big-endian. On a byte stream each message is
framed by a u32 length (`frame`, `MessageReader`). Every size is bounded before anything is
allocated, and every malformed input raises `ProtocolError` with what was wrong.

A peer tells a neighbour what it holds once with a `Bitfield` over a sliding window of
sequence numbers, then one `Have` per new chunk; it asks with `Request`, withdraws with
`Cancel`, gets `ChunkData` (the chunk in its signed wire form, `xp2p.swarm.wire`) or `Busy`
(its upload queue is full, or it does not upload at all: ask someone else).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: A bitfield covers at most this many sequence numbers (~85 s of 0.33 s chunks).
MAX_WINDOW = 256
MAX_PEERS = 16
MAX_PEER_ID = 64
#: A chunk's wire form is bounded by `wire.MAX_PAYLOAD` plus its header and proof.
MAX_CHUNK_DATA = 2 * 1024 * 1024 + 256
MAX_FRAME = MAX_CHUNK_DATA + 16

_HELLO, _BITFIELD, _HAVE, _REQUEST, _CANCEL, _CHUNK, _BUSY, _NEIGHBOURS = range(1, 9)
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
_HELLO_FIELDS = struct.Struct(">QB")
_BITFIELD_FIELDS = struct.Struct(">QH")
_BUSY_FIELDS = struct.Struct(">QH")


class ProtocolError(ValueError):
    """A peer or tracker message that is malformed or over a size limit."""


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a peer link: which stream, who, and whether it serves others."""

    stream_id: int
    peer_id: str
    uploads: bool


@dataclass(frozen=True, slots=True)
class Bitfield:
    """Holds ``base + i`` for every set bit i (bit 7 of byte 0 is ``base``)."""

    base: int
    bits: bytes

    @classmethod
    def of(cls, base: int, seqs: set[int] | frozenset[int], window: int = MAX_WINDOW) -> Bitfield:
        bits = bytearray((window + 7) // 8)
        for seq in seqs:
            i = seq - base
            if 0 <= i < window:
                bits[i >> 3] |= 0x80 >> (i & 7)
        return cls(base, bytes(bits))

    def seqs(self) -> list[int]:
        return [
            self.base + (n << 3) + b
            for n, byte in enumerate(self.bits)
            if byte
            for b in range(8)
            if byte & (0x80 >> b)
        ]


@dataclass(frozen=True, slots=True)
class Have:
    seq: int


@dataclass(frozen=True, slots=True)
class Request:
    seq: int


@dataclass(frozen=True, slots=True)
class Cancel:
    seq: int


@dataclass(frozen=True, slots=True)
class ChunkData:
    seq: int
    data: bytes  #: the chunk and its proof in wire form; the receiver verifies it


@dataclass(frozen=True, slots=True)
class Busy:
    """Refused, not failed: ask another peer (or this one after ``retry_after_ms``)."""

    seq: int
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The tracker's answer: peers of the same room to connect to."""

    peers: tuple[str, ...]


Message = Hello | Bitfield | Have | Request | Cancel | ChunkData | Busy | Neighbours


def _peer_id(value: str) -> bytes:
    raw = value.encode()
    if not 0 < len(raw) <= MAX_PEER_ID:
        raise ValueError(f"peer id of {len(raw)} bytes, must be 1 to {MAX_PEER_ID}")
    return _U8.pack(len(raw)) + raw


def encode(message: Message) -> bytes:
    """One message without its frame (invalid field values raise ValueError/struct.error)."""
    match message:
        case Hello(stream_id, peer_id, uploads):
            return _U8.pack(_HELLO) + _HELLO_FIELDS.pack(stream_id, uploads) + _peer_id(peer_id)
        case Bitfield(base, bits):
            if len(bits) * 8 > MAX_WINDOW:
                raise ValueError(f"bitfield of {len(bits)} bytes is over {MAX_WINDOW} bits")
            return _U8.pack(_BITFIELD) + _BITFIELD_FIELDS.pack(base, len(bits)) + bits
        case Have(seq):
            return _U8.pack(_HAVE) + _SEQ.pack(seq)
        case Request(seq):
            return _U8.pack(_REQUEST) + _SEQ.pack(seq)
        case Cancel(seq):
            return _U8.pack(_CANCEL) + _SEQ.pack(seq)
        case ChunkData(seq, data):
            if len(data) > MAX_CHUNK_DATA:
                raise ValueError(f"chunk data of {len(data)} bytes is over {MAX_CHUNK_DATA}")
            return _U8.pack(_CHUNK) + _SEQ.pack(seq) + _U32.pack(len(data)) + data
        case Busy(seq, retry_after_ms):
            return _U8.pack(_BUSY) + _BUSY_FIELDS.pack(seq, retry_after_ms)
        case Neighbours(peers):
            if len(peers) > MAX_PEERS:
                raise ValueError(f"{len(peers)} peers, at most {MAX_PEERS}")
            return bytes((_NEIGHBOURS, len(peers))) + b"".join(_peer_id(p) for p in peers)
    raise TypeError(f"not a swarm message: {message!r}")


class _Cursor:
    """Reads fields off a message, turning every short read into a ProtocolError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError(f"message ends inside its {what}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size, what))

    def peer_id(self) -> str:
        (size,) = self.unpack(_U8, "peer id length")
        if not 0 < size <= MAX_PEER_ID:
            raise ProtocolError(f"peer id length {size}, must be 1 to {MAX_PEER_ID}")
        try:
            return self.take(size, "peer id").decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("peer id is not UTF-8") from exc


def decode(data: bytes) -> Message:
    """One unframed message; raises ProtocolError on anything malformed."""
    cur = _Cursor(bytes(data))
    (kind,) = cur.unpack(_U8, "type")
    message: Message
    if kind == _HELLO:
        stream_id, uploads = cur.unpack(_HELLO_FIELDS, "hello fields")
        if uploads > 1:
            raise ProtocolError(f"hello's upload flag is {uploads}, must be 0 or 1")
        message = Hello(stream_id, cur.peer_id(), bool(uploads))
    elif kind == _BITFIELD:
        base, size = cur.unpack(_BITFIELD_FIELDS, "bitfield header")
        if size * 8 > MAX_WINDOW:
            raise ProtocolError(f"bitfield of {size} bytes is over {MAX_WINDOW} bits")
        message = Bitfield(base, cur.take(size, "bitfield"))
    elif kind in (_HAVE, _REQUEST, _CANCEL):
        (seq,) = cur.unpack(_SEQ, "sequence number")
        message = Have(seq) if kind == _HAVE else Request(seq) if kind == _REQUEST else Cancel(seq)
    elif kind == _CHUNK:
        (seq,) = cur.unpack(_SEQ, "sequence number")
        (size,) = cur.unpack(_U32, "chunk length")
        if size > MAX_CHUNK_DATA:
            raise ProtocolError(f"chunk data of {size} bytes is over {MAX_CHUNK_DATA}")
        message = ChunkData(seq, cur.take(size, "chunk data"))
    elif kind == _BUSY:
        seq, retry = cur.unpack(_BUSY_FIELDS, "busy fields")
        message = Busy(seq, retry)
    elif kind == _NEIGHBOURS:
        (count,) = cur.unpack(_U8, "peer count")
        if count > MAX_PEERS:
            raise ProtocolError(f"{count} peers, at most {MAX_PEERS}")
        message = Neighbours(tuple(cur.peer_id() for _ in range(count)))
    else:
        raise ProtocolError(f"unknown message type {kind}")
    if cur.pos != len(cur.data):
        raise ProtocolError(f"{len(cur.data) - cur.pos} bytes after the message")
    return message


def frame(message: Message) -> bytes:
    body = encode(message)
    return _U32.pack(len(body)) + body


class MessageReader:
    """Sans-IO framing: feed stream bytes split anywhere, get whole messages. Errors are final
    (a stream that lost its framing cannot be trusted again: close the link)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise ProtocolError(str(self._error))
        self._buf += data
        out: list[Message] = []
        pos = 0
        try:
            while len(self._buf) - pos >= 4:
                (size,) = _U32.unpack_from(self._buf, pos)
                if size == 0 or size > self._max:
                    raise ProtocolError(f"frame of {size} bytes, must be 1 to {self._max}")
                if len(self._buf) - pos - 4 < size:
                    break
                out.append(decode(bytes(self._buf[pos + 4 : pos + 4 + size])))
                pos += 4 + size
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        del self._buf[:pos]
        return out
