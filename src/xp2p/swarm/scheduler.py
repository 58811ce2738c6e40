"""What a viewer fetches from whom: the chunk scheduler (pure, no clock, no sockets).

The real client and the simulator (`xp2p.swarm.sim`) drive the same `ChunkScheduler`: they
tell it what happened (a neighbour joined or announced a chunk, a chunk arrived, a request was
refused) and call `decide(now, playback, edge_latest)` for `Decision`s to carry out.

How the edge ends up sending about one copy of each chunk:

* **Seeds.** The tracker marks a few viewers with upload capacity as seeds
  (``SchedulerConfig.seed``); a seed pulls every new chunk from the edge as soon as it exists
  (the edge announces its live edge), so the edge's steady egress is one copy per seed. Every
  other viewer pulls from neighbours only, and the chunk spreads hop by hop through the mesh
  while it is still seconds ahead of anyone's playhead. Pull rather than push keeps the edge
  stateless per viewer (plain HTTP GETs, or one long-lived GET per seed for its chunk feed).
* **Edge fallback, late.** A non-seed asks the edge for a chunk only when its playback
  deadline is within ``edge_margin`` (enough for one edge round trip and the transfer, with
  slack) and no neighbour's transfer of it is under way and on time. That keeps playback
  continuous under churn and costs the edge only what the swarm could not deliver.
* **Peer pulls.** Chunks due soon are taken in deadline order; the rest rarest-first among
  the neighbours (so neighbours hold different chunks and can trade), ties to the earlier. The
  source is a holder picked at random weighted by its measured rate divided by the requests
  already queued on it; with probability ``exploration`` a holder is picked uniformly, so a
  peer whose rate is unknown or stale gets measured. A refused request (`Busy`) puts the peer
  aside for ``busy_backoff``; a request that outlives its timeout is cancelled and re-placed;
  a peer that delivers nothing for ``silent_peer_timeout`` while asked is abandoned; a banned
  peer (one bad chunk) is never asked again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

EDGE = "edge"  #: the `source` of a chunk that came from the edge (CDN)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    chunk_duration: float = 0.33  #: seconds of media per chunk, for deadlines
    chunk_bytes: int = 82_500  #: expected chunk size before one is seen (2 Mbit/s x 0.33 s)
    edge_margin: float = 0.9  #: ask the edge when a missing chunk is due within this
    urgent_window: float = 2.0  #: chunks due within this are fetched in deadline order
    max_peer_requests: int = 4  #: outstanding requests to peers, in all
    per_peer_requests: int = 2  #: outstanding requests to one peer
    window: int = 40  #: how far past the playhead to look, in chunks
    request_timeout_floor: float = 1.0
    silent_peer_timeout: float = 2.0
    edge_timeout: float = 2.0
    busy_backoff: float = 0.25
    exploration: float = 0.1
    default_rate: float = 250_000.0  #: bytes/s assumed of a peer not measured yet
    seed: bool = False  #: pull every new chunk from the edge at once (the tracker says so)


@dataclass(frozen=True, slots=True)
class Playback:
    """The playhead: ``next_seq`` is the first chunk not yet played and must be in the buffer
    by ``deadline``; each later chunk is due ``chunk_duration`` after the one before.

    ``first_shown``: a start mid-GOP, decoding from ``next_seq`` (a keyframe chunk) and
    showing from ``first_shown``: every chunk up to it is due at ``deadline``. Telling the
    scheduler so (rather than an earlier deadline for the prefix) lets the prefix come from
    neighbours once the links are up instead of from the edge at once."""

    next_seq: int
    deadline: float
    first_shown: int | None = None


@dataclass(frozen=True, slots=True)
class PeerRequest:
    seq: int
    peer: str


@dataclass(frozen=True, slots=True)
class EdgeRequest:
    seq: int


@dataclass(frozen=True, slots=True)
class CancelRequest:
    seq: int
    peer: str


@dataclass(frozen=True, slots=True)
class AbandonPeer:
    """Close the link to ``peer`` (silent for too long) and ask the tracker for another."""

    peer: str


Decision = PeerRequest | EdgeRequest | CancelRequest | AbandonPeer


@dataclass(slots=True)
class _Neighbour:
    have: set[int] = field(default_factory=set)
    rate: float = 0.0  # EWMA of bytes/s over request-to-arrival, 0 = not measured
    outstanding: dict[int, float] = field(default_factory=dict)  # seq -> when asked
    busy_until: float = 0.0
    # First request not answered by anything (a chunk or a refusal) since; a peer that stays
    # silent this long is gone, even if its requests were meanwhile cancelled and re-placed.
    silent_since: float | None = None


@dataclass(slots=True)
class _Pending:
    source: str
    sent: float
    timeout: float


class ChunkScheduler:
    """One viewer's view of its neighbours and its buffer; see the module docstring."""

    def __init__(self, config: SchedulerConfig | None = None, rng: random.Random | None = None):
        self.config = config or SchedulerConfig()
        self._rng = rng or random.Random()
        self._peers: dict[str, _Neighbour] = {}
        self._banned: set[str] = set()
        self._have: set[int] = set()
        self._pending: dict[int, _Pending] = {}
        self._avoid: dict[int, set[str]] = {}  # peers that failed a given chunk
        self._latest = -1  # highest seq any neighbour announced
        self._floor = 0  # below this everything is forgotten
        self.wake_at = float("inf")  #: call `decide` again by then even if nothing happens

    # -- what the client tells it -------------------------------------------------------

    @property
    def peers(self) -> list[str]:
        return list(self._peers)

    @property
    def banned(self) -> frozenset[str]:
        return frozenset(self._banned)

    def has(self, seq: int) -> bool:
        return seq in self._have

    def peer_rate(self, peer: str) -> float:
        """The measured rate of ``peer`` in bytes/s; 0 if not measured (or not a neighbour)."""
        state = self._peers.get(peer)
        return state.rate if state is not None else 0.0

    def outstanding(self) -> dict[int, str]:
        return {seq: p.source for seq, p in self._pending.items()}

    def add_peer(self, peer: str, now: float) -> None:
        if peer not in self._banned and peer not in self._peers and peer != EDGE:
            self._peers[peer] = _Neighbour()

    def remove_peer(self, peer: str) -> None:
        """The link is gone: its requests are free to be placed elsewhere."""
        if self._peers.pop(peer, None) is not None:
            for seq in [s for s, p in self._pending.items() if p.source == peer]:
                del self._pending[seq]

    def ban_peer(self, peer: str) -> None:
        """It sent a chunk that failed verification: never ask it again."""
        self.remove_peer(peer)
        self._banned.add(peer)

    def on_have(self, peer: str, seq: int) -> bool:
        """A neighbour announced ``seq``; True if that gives this viewer something to do."""
        state = self._peers.get(peer)
        if state is None or seq < self._floor:
            return False
        state.have.add(seq)
        if seq > self._latest:
            self._latest = seq
        return (
            seq not in self._have
            and seq not in self._pending
            and len(state.outstanding) < self.config.per_peer_requests
        )

    def on_bitfield(self, peer: str, seqs: list[int]) -> None:
        for seq in seqs:
            self.on_have(peer, seq)

    def on_chunk(self, seq: int, source: str, nbytes: int, now: float) -> bool:
        """A verified chunk arrived; False if it was already here (a wasted duplicate)."""
        pending = self._pending.get(seq)
        if pending is not None and pending.source == source:
            del self._pending[seq]
        state = self._peers.get(source)
        if state is not None:
            asked = state.outstanding.pop(seq, None)
            state.silent_since = now if state.outstanding else None
            if asked is not None:
                sample = nbytes / max(now - asked, 1e-3)
                state.rate = sample if state.rate == 0 else 0.7 * state.rate + 0.3 * sample
        if seq in self._have:
            return False
        self._have.add(seq)
        self._avoid.pop(seq, None)
        return True

    def on_refused(
        self, seq: int, source: str, now: float, retry_after: float | None = None
    ) -> None:
        """`Busy`, or a request that failed: place it elsewhere, and rest that peer a while.

        ``retry_after == 0`` is a refusal of this chunk, not of this viewer: the peer does
        not serve it (a seed keeps its upload for new chunks; a peer forgot it) but is not
        saturated, so it is only avoided for ``seq``, with no rest and no rate penalty.
        """
        pending = self._pending.get(seq)
        if pending is not None and pending.source == source:
            del self._pending[seq]
        state = self._peers.get(source)
        if state is None:
            return
        state.outstanding.pop(seq, None)
        state.silent_since = now if state.outstanding else None
        if retry_after == 0:
            self._avoid.setdefault(seq, set()).add(source)
            return
        backoff = self.config.busy_backoff if retry_after is None else retry_after
        state.busy_until = now + min(backoff, self.config.busy_backoff)
        # A refusal is a measurement too: this peer has less to give than we thought.
        # Without it a peer that refuses everything keeps its optimistic default rate.
        state.rate = 0.5 * (state.rate or self.config.default_rate)

    # -- what it decides ----------------------------------------------------------------

    def decide(self, now: float, playback: Playback, edge_latest: int) -> list[Decision]:
        cfg = self.config
        out: list[Decision] = []
        start = playback.next_seq
        if start > self._floor + 2 * cfg.window:
            self._forget_below(start - cfg.window)
        self._expire(now, out)
        wake = now + 1.0
        latest = min(max(self._latest, edge_latest), start + cfg.window)
        # Deadline of seq: playback.deadline + (max(seq, first) - first) * chunk_duration.
        first = start if playback.first_shown is None else max(start, playback.first_shown)
        base = playback.deadline - first * cfg.chunk_duration
        urgent: list[int] = []
        later: list[tuple[int, int]] = []
        peer_slots = cfg.max_peer_requests - sum(
            1 for p in self._pending.values() if p.source != EDGE
        )
        for seq in range(start, latest + 1):
            if seq in self._have:
                continue
            left = base + max(seq, first) * cfg.chunk_duration - now
            pending = self._pending.get(seq)
            if pending is not None:
                if pending.source == EDGE or seq > edge_latest or left > cfg.edge_margin:
                    continue
                # Twice the usual time: a measured mean is exceeded half the time, and a
                # transfer cancelled in flight wastes the sender's upload.
                due = pending.sent + 2 * self._expected(pending.source)
                if now >= due or left <= cfg.edge_margin / 2:
                    # Overdue, or too close to its deadline to wait: the edge is the sure
                    # path, and half the margin still covers its round trip.
                    self._cancel(seq, pending.source, out)
                    self._request_edge(seq, now, out)
                    peer_slots += 1
                else:
                    wake = min(wake, due, now + left - cfg.edge_margin / 2)
                continue
            if seq <= edge_latest and (cfg.seed or left <= cfg.edge_margin):
                self._request_edge(seq, now, out)
                continue
            if left - cfg.edge_margin < wake - now:
                wake = now + max(left - cfg.edge_margin, 0.01)
            if left <= cfg.urgent_window:
                urgent.append(seq)
            else:
                later.append((self._holders(seq), seq))
        # The first chunk nobody has announced yet still falls due: be back in time for it.
        left = base + max(latest + 1, first) * cfg.chunk_duration - now
        wake = min(wake, now + max(left - cfg.edge_margin, 0.01))
        if peer_slots > 0 and (urgent or later):
            later.sort()
            for seq in urgent + [seq for count, seq in later if count]:
                if peer_slots <= 0:
                    break
                peer = self._choose(seq, now)
                if peer is not None:
                    self._request_peer(seq, peer, now, out)
                    peer_slots -= 1
        for pending in self._pending.values():
            wake = min(wake, pending.sent + pending.timeout)
        for p in self._peers.values():
            if p.silent_since is not None:
                wake = min(wake, p.silent_since + cfg.silent_peer_timeout)
        self.wake_at = wake
        return out

    def _holders(self, seq: int) -> int:
        return sum(1 for p in self._peers.values() if seq in p.have)

    def _choose(self, seq: int, now: float) -> str | None:
        cfg = self.config
        avoid = self._avoid.get(seq, ())
        names: list[str] = []
        weights: list[float] = []
        for name, p in self._peers.items():
            if (
                seq in p.have
                and len(p.outstanding) < cfg.per_peer_requests
                and p.busy_until <= now
                and name not in avoid
            ):
                names.append(name)
                weights.append((p.rate or cfg.default_rate) / (1 + len(p.outstanding)))
        if not names:
            return None
        if len(names) == 1:
            return names[0]
        if self._rng.random() < cfg.exploration:
            return self._rng.choice(names)
        return self._rng.choices(names, weights)[0]

    def _expected(self, peer: str) -> float:
        """How long a chunk from ``peer`` should take, request to arrival."""
        state = self._peers.get(peer)
        rate = (state.rate if state is not None else 0) or self.config.default_rate
        return self.config.chunk_bytes / rate

    def _request_peer(self, seq: int, peer: str, now: float, out: list[Decision]) -> None:
        timeout = max(self.config.request_timeout_floor, 3 * self._expected(peer))
        self._pending[seq] = _Pending(peer, now, timeout)
        state = self._peers[peer]
        state.outstanding[seq] = now
        if state.silent_since is None:
            state.silent_since = now
        out.append(PeerRequest(seq, peer))

    def _request_edge(self, seq: int, now: float, out: list[Decision]) -> None:
        self._pending[seq] = _Pending(EDGE, now, self.config.edge_timeout)
        out.append(EdgeRequest(seq))

    def _cancel(self, seq: int, peer: str, out: list[Decision]) -> None:
        del self._pending[seq]
        state = self._peers.get(peer)
        if state is not None:
            state.outstanding.pop(seq, None)
        self._avoid.setdefault(seq, set()).add(peer)
        out.append(CancelRequest(seq, peer))

    def _expire(self, now: float, out: list[Decision]) -> None:
        cfg = self.config
        for seq, pending in list(self._pending.items()):
            if now - pending.sent < pending.timeout:
                continue
            if pending.source == EDGE:
                del self._pending[seq]  # asked again below, if still wanted
            else:
                self._cancel(seq, pending.source, out)
        for name, p in list(self._peers.items()):
            if p.silent_since is not None and now - p.silent_since >= cfg.silent_peer_timeout:
                self.remove_peer(name)
                out.append(AbandonPeer(name))

    def _forget_below(self, floor: int) -> None:
        self._floor = floor
        self._have = {s for s in self._have if s >= floor}
        for p in self._peers.values():
            p.have = {s for s in p.have if s >= floor}
        for seq in [s for s in self._avoid if s < floor]:
            del self._avoid[seq]
        for seq in [s for s in self._pending if s < floor]:
            del self._pending[seq]


@dataclass(frozen=True, slots=True)
class Busy:
    """Refuse the request (send the peer `protocol.Busy`)."""

    seq: int
    retry_after: float


@dataclass(frozen=True, slots=True)
class Transmission:
    """Send chunk ``seq`` to ``peer``, starting at ``start_at``, taking ``duration``."""

    peer: str
    seq: int
    nbytes: int
    start_at: float
    duration: float


class UploadQueue:
    """The serving side: which requests to take, and when each may go out under the cap.

    ``upload=False`` refuses everything (a download-only viewer also announces nothing). With
    a ``rate_cap`` (bytes/s) transmissions are spaced so the cap holds over any interval, and
    a request that would wait more than ``max_backlog`` seconds is refused at once: a quick
    `Busy` lets the asker go elsewhere while the chunk is still useful. Uncapped, at most
    ``max_queue`` requests wait.
    """

    def __init__(
        self,
        *,
        upload: bool = True,
        rate_cap: float | None = None,
        max_backlog: float = 0.6,
        max_queue: int = 8,
        fresh_chunks: int | None = None,
    ) -> None:
        if rate_cap is not None and rate_cap <= 0:
            raise ValueError("rate_cap must be positive (or None: uncapped)")
        self.upload = upload
        self.rate_cap = rate_cap
        self.max_backlog = max_backlog
        self.max_queue = max_queue
        #: A seed's setting (None for everyone else): serve only chunks at most this many
        #: behind the newest it holds (`hold`), refuse older ones with ``Busy(seq, 0)``. A seed
        #: is the only first hop of a new chunk; every copy of an old chunk it sends (a
        #: deadline rescue: it holds everything and measures fast, so askers favour it) is
        #: a first-hop copy of a new chunk it cannot send. Left to FIFO, that is a trap:
        #: new chunks spread late, more chunks need rescuing, more of the seeds' upload goes
        #: to rescues, and offload fell from 0.97 to 0.7 for minutes at a time.
        self.fresh_chunks = fresh_chunks
        self._newest = -1
        self._queue: list[tuple[str, int, int]] = []
        self._queued_bytes = 0
        self._free_at = 0.0  # when the cap allows the next transmission to start
        self.sent_bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, peer: str, seq: int, nbytes: int, now: float) -> Busy | None:
        """A neighbour asked for a chunk this viewer holds: queue it (None) or refuse it."""
        if not self.upload:
            return Busy(seq, 60.0)
        if self.fresh_chunks is not None and seq < self._newest - self.fresh_chunks:
            return Busy(seq, 0.0)
        if self.rate_cap is None:
            if len(self._queue) >= self.max_queue:
                return Busy(seq, 0.2)
        else:
            wait = max(self._free_at - now, 0.0) + (self._queued_bytes + nbytes) / self.rate_cap
            if wait > self.max_backlog + nbytes / self.rate_cap:
                return Busy(seq, wait - self.max_backlog)
        self._queue.append((peer, seq, nbytes))
        self._queued_bytes += nbytes
        return None

    def hold(self, seq: int) -> None:
        """This viewer now holds chunk ``seq`` (what `fresh_chunks` counts back from).

        Not the newest chunk asked for: when the swarm is behind, nobody asks a seed for new
        chunks, and a rule relative to what is asked would not hold the seed to them."""
        if seq > self._newest:
            self._newest = seq

    def cancel(self, peer: str, seq: int) -> bool:
        """Drop a request not yet sent; False if it was not waiting."""
        for i, (p, s, n) in enumerate(self._queue):
            if p == peer and s == seq:
                del self._queue[i]
                self._queued_bytes -= n
                return True
        return False

    def drop_peer(self, peer: str) -> None:
        for p, s, _ in [q for q in self._queue if q[0] == peer]:
            self.cancel(p, s)

    def next_transmission(self, now: float) -> Transmission | None:
        """The next chunk to send (call when the previous one is done)."""
        if not self._queue:
            return None
        peer, seq, nbytes = self._queue.pop(0)
        self._queued_bytes -= nbytes
        start = max(now, self._free_at)
        duration = 0.0 if self.rate_cap is None else nbytes / self.rate_cap
        self._free_at = start + duration
        self.sent_bytes += nbytes
        return Transmission(peer, seq, nbytes, start, duration)
