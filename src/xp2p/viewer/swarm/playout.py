"""A 1vN viewer's buffer and playhead (sans-IO: chunks and times in, bytes and deadlines out).

Verified chunks arrive in any order (peers are asked rarest-first, the edge for what is due);
`Playout` keeps them, feeds the `StreamAssembler` in sequence order, and models the player
that consumes the bytes, so the scheduler gets real deadlines (`playback`).

The model: the player starts ``lag`` seconds behind the live edge and then plays each chunk
for its duration. So the first bytes (FLV header, init, the keyframe chunk) are held until
that start time and everything after them is delivered as soon as it is contiguous: the app's
player then runs in step with the model, and a chunk that arrives before its modelled
deadline arrives before the real player needs it. A chunk needed before it arrived is a stall
(the model's clock restarts when it comes); so is a gap the assembler had to skip.
"""

from __future__ import annotations

from collections import deque

from xp2p.swarm import Chunk, InitChunk, StreamAssembler
from xp2p.swarm.scheduler import Playback

#: A joiner starts from a keyframe chunk already about its delay old, so that it can play
#: within this long instead of waiting out the whole delay on the newest keyframe.
START_BUFFER = 0.6


def pick_start(
    keyframes: tuple[int, ...], newest: int, live_seq: int, chunk_s: float, lag: float
) -> int:
    """The keyframe chunk to start playing from: the newest one at least ``lag -
    START_BUFFER`` seconds behind the live edge (it has had time to spread, and the player
    starts within START_BUFFER), else the newest keyframe (a stream just started)."""
    ready = [k for k in keyframes if (live_seq + 1 - k) * chunk_s >= lag - START_BUFFER]
    return max(ready) if ready else newest


#: Chunks kept behind the playhead, to serve neighbours that play a little later.
DEFAULT_KEEP = 90
_FLV_HEADER_BYTES = 13  # the file header and PreviousTagSize0


class Playout:
    def __init__(self, stream_id: int, *, keep: int = DEFAULT_KEEP, skip_header: bool = False):
        self.stream_id = stream_id
        self.assembler = StreamAssembler(stream_id)
        self.keep = keep
        #: A stream that continues another (the edge's source restarted): the app already
        #: has an FLV header, and a second one mid-stream would break its parser.
        self._skip_header = skip_header
        self._continues = skip_header
        self._chunks: dict[int, tuple[Chunk, bytes]] = {}
        self._inits: set[int] = set()
        self.cursor: int | None = None  #: next seq to hand to the assembler
        self.start_at = float("inf")  #: when the held first bytes go out
        self._held = bytearray()
        self.released = False
        self._played: deque[tuple[int, float]] = deque()  # delivered, not yet played by the model
        self.play_seq = 0
        self.play_time = float("inf")
        self._starving = False
        self.late = 0  #: chunks the modelled player waited for
        self.missing_init: int | None = None  #: an init the next chunk needs and we lack

    # ---- what the service tells it ----------------------------------------------------

    def begin(self, start_seq: int, start_at: float) -> None:
        """Play from ``start_seq`` (a keyframe chunk), first bytes at ``start_at``."""
        self.cursor = start_seq
        self.play_seq = start_seq
        self.start_at = start_at
        self.play_time = start_at

    @property
    def app_has_header(self) -> bool:
        """The app got an FLV header from this pull or the one it continues."""
        return self.released or self._continues

    @property
    def stalls(self) -> int:
        return self.late + self.assembler.stalls

    def has(self, seq: int) -> bool:
        return seq in self._chunks

    def wire(self, seq: int) -> bytes | None:
        """The chunk's signed wire form, to serve a neighbour."""
        entry = self._chunks.get(seq)
        return None if entry is None else entry[1]

    def seqs(self) -> set[int]:
        return set(self._chunks)

    def add_init(self, init: InitChunk) -> None:
        self._inits.add(init.init_id)
        self.assembler.add_init(init)
        if self.missing_init == init.init_id:
            self.missing_init = None

    def abandon_init(self, init_id: int) -> None:
        """That init is gone from the edge: let its chunks through to the assembler, which
        skips them (it has no init for them) until a keyframe chunk of a newer init."""
        self._inits.add(init_id)
        if self.missing_init == init_id:
            self.missing_init = None

    def add(self, chunk: Chunk, wire: bytes) -> None:
        """A verified chunk of this stream (the caller checked the signature and stream)."""
        if self.cursor is not None and chunk.seq < self.cursor - self.keep:
            return
        self._chunks[chunk.seq] = (chunk, wire)

    def skip_to(self, seq: int) -> None:
        """Give up on what lies before ``seq`` (gone from the edge, say): continue there."""
        if self.cursor is not None and seq > self.cursor:
            self.cursor = seq
            if not self._played:
                self.play_seq = seq

    # ---- what it gives back -------------------------------------------------------------

    def take(self, now: float) -> bytes:
        """Bytes for the data callback: what is contiguous, once the start time came."""
        self._assemble(now)
        if not self.released:
            if now < self.start_at or not self._held:
                return b""
            self.released = True
            # A slow start is not a stall: the model's player starts when the bytes do.
            self.play_time = max(self.play_time, now)
        out = bytes(self._held)
        self._held.clear()
        self.advance(now)
        return out

    def advance(self, now: float) -> None:
        """Let the modelled player play what is due."""
        if not self.released:
            return
        while self.play_time <= now:
            if not self._played:
                self._starving = True
                return
            seq, duration = self._played.popleft()
            self.play_seq = seq + 1
            self.play_time += duration
        self._forget()

    def playback(self, now: float) -> Playback:
        """The scheduler's view: the first chunk the player has not played and its deadline."""
        self.advance(now)
        if self._played:
            seq = self._played[0][0]
        elif self.cursor is not None:
            seq = max(self.play_seq, self.cursor)
        else:
            seq = self.play_seq
        return Playback(seq, self.play_time if self.released else self.start_at)

    def _assemble(self, now: float) -> None:
        while self.cursor is not None and self.cursor in self._chunks:
            chunk = self._chunks[self.cursor][0]
            if chunk.init_id not in self._inits:
                self.missing_init = chunk.init_id
                return
            data = self.assembler.push(chunk)
            self.cursor += 1
            if not data:
                continue  # skipped, waiting for a keyframe chunk
            if self._skip_header and data.startswith(b"FLV"):
                data = data[_FLV_HEADER_BYTES:]
            self._skip_header = False
            self._held += data
            self._played.append((chunk.seq, chunk.duration_ms / 1000))
            if self._starving and self.released:
                # The modelled player waited for this chunk: a stall; its clock restarts.
                self._starving = False
                self.late += 1
                self.play_time = now

    def _forget(self) -> None:
        floor = min(self.play_seq, self.cursor or 0) - self.keep
        if len(self._chunks) > 2 * self.keep:
            for seq in [s for s in self._chunks if s < floor]:
                del self._chunks[seq]
