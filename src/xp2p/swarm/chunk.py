"""A live FLV stream cut into numbered chunks at tag boundaries, and put back together.

The edge runs a `Chunker` over the bytes it pulls; every viewer runs a `StreamAssembler` over
the chunks it has verified. Both are sans-IO: bytes and chunks in, chunks and bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from xp2p.flv import FlvHeader, FlvReader, FlvTag, starts_gop

#: Chunks of about a third of a second: short enough that a chunk travels one peer hop well
#: within the playout buffer, long enough that per-chunk costs (a signature, a HAVE to every
#: neighbour, a request) stay a fraction of a percent of the media.
DEFAULT_TARGET_MS = 330
#: A hard cap whatever the timestamps say, so a burst (a huge keyframe, broken timestamps)
#: cannot make a chunk that no peer wants to hold or a wire parser would refuse.
DEFAULT_MAX_CHUNK_BYTES = 1024 * 1024
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class InitChunk:
    """What a viewer needs before any chunk: the FLV header flags, onMetaData and the codec
    sequence headers, as whole FLV tags. A new one (next ``init_id``) whenever a sequence
    header changes; chunks name the init they were coded against."""

    stream_id: int  #: the edge's id for this room's stream session (u64), signed with it
    init_id: int
    header: FlvHeader
    payload: bytes  #: whole FLV tags, PreviousTagSize included

    def tags(self) -> list[FlvTag]:
        return _parse_tags(self.payload)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive whole FLV tags of one room, numbered from the room's start."""

    stream_id: int
    seq: int
    init_id: int
    start_ms: int  #: FLV timestamp of the first tag
    duration_ms: int  #: up to the next chunk's first tag
    keyframe_start: bool  #: the first tag is a video keyframe: decoding can start here
    payload: bytes

    def tags(self) -> list[FlvTag]:
        return _parse_tags(self.payload)


def _parse_tags(payload: bytes) -> list[FlvTag]:
    reader = FlvReader(expect_header=False)
    items = reader.feed(payload)
    reader.close()
    return [item for item in items if isinstance(item, FlvTag)]


class Chunker:
    """Feed FLV bytes split anywhere; get `InitChunk`s and `Chunk`s as they complete.

    A chunk is cut *before* a tag: before every GOP-starting keyframe (so a GOP start always
    begins a chunk, and only such a chunk is marked), and before the first tag at or past
    ``target_ms`` from the chunk's start. So a chunk is emitted when the tag after it arrives,
    one frame interval late at most; `flush` emits the last one at the end of the stream.
    """

    def __init__(
        self,
        stream_id: int,
        *,
        target_ms: int = DEFAULT_TARGET_MS,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        first_seq: int = 0,
    ) -> None:
        if target_ms <= 0 or max_chunk_bytes <= 0:
            raise ValueError("target_ms and max_chunk_bytes must be positive")
        self.stream_id = stream_id
        self.target_ms = target_ms
        self.max_chunk_bytes = max_chunk_bytes
        self._reader = FlvReader()
        self._header = FlvHeader()
        self._metadata: FlvTag | None = None
        self._video_header: FlvTag | None = None
        self._audio_header: FlvTag | None = None
        self._init_id = -1
        self._init_dirty = True  # the next media tag needs a (new) init chunk first
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_start = 0
        self._pending_key = False
        self._last_ts = 0
        self._next_seq = first_seq

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def feed(self, data: bytes) -> list[InitChunk | Chunk]:
        out: list[InitChunk | Chunk] = []
        for item in self._reader.feed(data):
            if isinstance(item, FlvHeader):
                self._header = item
            else:
                self._add_tag(item, out)
        return out

    def flush(self) -> list[InitChunk | Chunk]:
        """End of the stream: the chunk in progress, its duration up to its last tag."""
        out: list[InitChunk | Chunk] = []
        if self._pending:
            self._cut(self._last_ts, out)
        return out

    def _add_tag(self, tag: FlvTag, out: list[InitChunk | Chunk]) -> None:
        if tag.is_metadata:
            # Kept for the next init chunk; on its own a new onMetaData changes nothing a
            # decoder needs, so it does not force one.
            self._metadata = tag
            return
        if tag.is_sequence_header and (tag.is_video or tag.is_audio):
            previous = self._video_header if tag.is_video else self._audio_header
            if previous is not None and previous.data == tag.data:
                return  # a repeat (some encoders send one per GOP)
            if self._pending:
                self._cut(tag.timestamp, out)  # what came before was coded against the old one
            if tag.is_video:
                self._video_header = tag
            else:
                self._audio_header = tag
            self._init_dirty = True
            return
        if self._init_dirty:
            self._emit_init(out)
        if self._pending and (
            starts_gop(tag)
            or tag.timestamp - self._pending_start >= self.target_ms
            or self._pending_bytes + tag.size > self.max_chunk_bytes
        ):
            self._cut(tag.timestamp, out)
        if not self._pending:
            self._pending_start = tag.timestamp
            self._pending_key = starts_gop(tag)
        encoded = tag.encode()
        self._pending.append(encoded)
        self._pending_bytes += len(encoded)
        self._last_ts = tag.timestamp

    def _emit_init(self, out: list[InitChunk | Chunk]) -> None:
        self._init_id += 1
        tags = [t for t in (self._metadata, self._video_header, self._audio_header) if t]
        payload = b"".join(t.encode() for t in tags)
        out.append(InitChunk(self.stream_id, self._init_id, self._header, payload))
        self._init_dirty = False

    def _cut(self, next_ts: int, out: list[InitChunk | Chunk]) -> None:
        duration = min(max(next_ts - self._pending_start, 0), _U32)
        out.append(
            Chunk(
                stream_id=self.stream_id,
                seq=self._next_seq,
                init_id=self._init_id,
                start_ms=self._pending_start,
                duration_ms=duration,
                keyframe_start=self._pending_key,
                payload=b"".join(self._pending),
            )
        )
        self._next_seq += 1
        self._pending = []
        self._pending_bytes = 0


class StreamAssembler:
    """Verified chunks in, one continuous FLV byte stream out (the viewer's data callback).

    The output starts with one FLV header, the init chunk's tags and a keyframe chunk, and
    then carries each next chunk's payload. A chunk older than the next one expected is a
    duplicate or a replay and is dropped. A chunk past a gap, or coded against a new init,
    can only be joined at a keyframe chunk: until one comes, chunks are skipped, and the gap
    counts as one stall (``stalls``; ``skipped`` counts the chunks lost to it).
    """

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self._inits: dict[int, InitChunk] = {}
        self._header_sent = False
        self._init_sent: int | None = None
        self._next_seq: int | None = None  # None: waiting for a keyframe chunk
        self._waiting_from: int | None = None  # first seq missed in the current gap
        self.stalls = 0
        self.skipped = 0
        self.dropped = 0  #: duplicates, replays and chunks of another stream

    @property
    def next_seq(self) -> int | None:
        """The chunk the stream continues with, or None while waiting for a keyframe."""
        return self._next_seq

    @property
    def started(self) -> bool:
        return self._header_sent

    def add_init(self, init: InitChunk) -> None:
        if init.stream_id == self.stream_id:
            self._inits[init.init_id] = init
            # Only the current and the next few matter; a long session must not grow this.
            for old in [i for i in self._inits if i < init.init_id - 4]:
                del self._inits[old]

    def push(self, chunk: Chunk) -> bytes:
        if chunk.stream_id != self.stream_id:
            self.dropped += 1
            return b""
        expected = self._next_seq
        if expected is not None and chunk.seq < expected:
            self.dropped += 1
            return b""
        if expected is not None and chunk.seq == expected and chunk.init_id == self._init_sent:
            self._next_seq = chunk.seq + 1
            return chunk.payload
        init = self._inits.get(chunk.init_id)
        if not chunk.keyframe_start or init is None:
            if self._waiting_from is None and self._header_sent:
                self._waiting_from = expected if expected is not None else chunk.seq
                self.stalls += 1
            self._next_seq = None
            return b""
        parts: list[bytes] = []
        if not self._header_sent:
            parts.append(init.header.encode())
            self._header_sent = True
        elif expected is None or chunk.seq != expected:
            if self._waiting_from is None:
                self.stalls += 1
                self._waiting_from = expected if expected is not None else chunk.seq
        if self._waiting_from is not None:
            self.skipped += max(chunk.seq - self._waiting_from, 0)
            self._waiting_from = None
        if self._init_sent != chunk.init_id:
            parts.append(init.payload)
            self._init_sent = chunk.init_id
        parts.append(chunk.payload)
        self._next_seq = chunk.seq + 1
        return b"".join(parts)
