"""A room's recent chunks in their signed wire form, ready to serve (sans-IO).

The edge signs and encodes each chunk once, when it is cut, and serves those bytes to every
seed and late viewer that asks. It keeps at least ``keep_seconds`` of media (by the chunks'
durations, so a viewer's buffer plus its retries always fits), bounded by ``max_bytes`` and a
chunk count so that broken timestamps cannot make a room hold the stream forever, and by
age: a chunk cut more than `MAX_AGE_FACTOR` x ``keep_seconds`` ago (by the caller's clock)
goes whatever its timestamps claim, so a source with frozen or backward timestamps (whose
chunks last 0 ms) holds no more than a normal one. A `BufferBudget` shared by every room
bounds the bytes of all of them: over it, the room holding most gives up its oldest chunks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from xp2p.swarm import Chunk, InitChunk

MAX_CHUNKS = 8192
MAX_AGE_FACTOR = 2.0


class BufferBudget:
    """The bytes all rooms' stores may hold together (the edge's ``max_buffer_bytes``)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._stores: set[ChunkStore] = set()

    def register(self, store: ChunkStore) -> None:
        self._stores.add(store)

    def unregister(self, store: ChunkStore) -> None:
        self._stores.discard(store)

    def enforce(self) -> None:
        while self.used > self.max_bytes:
            biggest = max(self._stores, key=lambda s: s.held_bytes, default=None)
            if biggest is None or len(biggest) <= 1:
                return
            biggest.drop_oldest()


class Lookup(Enum):
    FOUND = "found"
    NOT_YET = "not_yet"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class StoredChunk:
    seq: int
    keyframe_start: bool
    duration_ms: int
    data: bytes  #: `encode_item(chunk, proof)`
    cut_at: float = 0.0  #: when it was cut (the store's caller's clock)


class ChunkStore:
    def __init__(
        self,
        *,
        keep_seconds: float = 30.0,
        max_bytes: int = 128 * 1024 * 1024,
        budget: BufferBudget | None = None,
    ):
        self.keep_ms = int(keep_seconds * 1000)
        self.max_age = keep_seconds * MAX_AGE_FACTOR
        self.max_bytes = max_bytes
        self._chunks: deque[StoredChunk] = deque()
        self._bytes = 0
        self._held_ms = 0
        self.init: InitChunk | None = None
        self.init_data: bytes | None = None
        self.cut_bytes = 0  #: every chunk's wire bytes since the room started
        self._budget = budget
        if budget is not None:
            budget.register(self)

    def add_init(self, init: InitChunk, data: bytes) -> None:
        self.init, self.init_data = init, data

    def add(self, chunk: Chunk, data: bytes, now: float = 0.0) -> None:
        """Keep ``chunk`` (cut at ``now``, any monotonic clock; 0 = no age bound)."""
        if self._chunks and chunk.seq != self._chunks[-1].seq + 1:
            raise ValueError(f"chunk {chunk.seq} does not follow {self._chunks[-1].seq}")
        self._chunks.append(
            StoredChunk(chunk.seq, chunk.keyframe_start, chunk.duration_ms, data, now)
        )
        self._bytes += len(data)
        self._held_ms += chunk.duration_ms
        self.cut_bytes += len(data)
        if self._budget is not None:
            self._budget.used += len(data)
        while len(self._chunks) > 1 and (
            self._held_ms - self._chunks[0].duration_ms >= self.keep_ms
            or self._bytes > self.max_bytes
            or len(self._chunks) > MAX_CHUNKS
            or (now > 0 and now - self._chunks[0].cut_at > self.max_age)
        ):
            self.drop_oldest()
        if self._budget is not None:
            self._budget.enforce()

    def drop_oldest(self) -> None:
        old = self._chunks.popleft()
        self._bytes -= len(old.data)
        self._held_ms -= old.duration_ms
        if self._budget is not None:
            self._budget.used -= len(old.data)

    def clear(self) -> None:
        """Free everything (the room closed) and leave the budget."""
        while self._chunks:
            self.drop_oldest()
        self.init = self.init_data = None
        if self._budget is not None:
            self._budget.unregister(self)

    def lookup(self, seq: int) -> tuple[Lookup, bytes | None]:
        if not self._chunks or seq > self._chunks[-1].seq:
            return Lookup.NOT_YET, None
        first = self._chunks[0].seq
        if seq < first:
            return Lookup.GONE, None
        return Lookup.FOUND, self._chunks[seq - first].data

    @property
    def first_seq(self) -> int | None:
        return self._chunks[0].seq if self._chunks else None

    @property
    def live_seq(self) -> int | None:
        return self._chunks[-1].seq if self._chunks else None

    @property
    def keyframe_seq(self) -> int | None:
        for stored in reversed(self._chunks):
            if stored.keyframe_start:
                return stored.seq
        return None

    def keyframe_seqs(self, limit: int) -> tuple[int, ...]:
        """The newest ``limit`` keyframe chunks still kept, oldest first."""
        found = [s.seq for s in reversed(self._chunks) if s.keyframe_start][:limit]
        return tuple(reversed(found))

    @property
    def held_ms(self) -> int:
        return self._held_ms

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._chunks)
