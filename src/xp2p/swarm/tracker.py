"""The tracker: who watches a room, whom each viewer links to, and which viewers are seeds.

Sans-IO: events in (join, leave, stats, a request for more neighbours), `TrackerUpdate`s out
(the neighbour lists and seed flags that changed, for the shell to push over each peer's
WebSocket). No clock of its own: the caller passes ``now``; randomness comes from the
``rng`` it is given, so a test or the simulator can replay a run. The edge
(`xp2p.cloud.edge.room`) and the simulator (`xp2p.swarm.sim`) both drive this class, so the
simulator's figures are those of the neighbour and seed picking the edge ships.

Neighbour lists are directed: a viewer opens links to the peers in its list, and a link
carries chunks both ways, so two uploaders never need each other in both lists. Only
uploaders are ever handed out (a download-only viewer would answer every request with Busy);
a peer's degree is the links it opens plus the links opened to it, and no uploader is handed
out past ``max_degree``, so a popular early joiner is not buried under the whole room.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from xp2p.link.nat_behaviour import NatType

from .edge_messages import Neighbour, PeerStats
from .edge_routes import MAX_REPORT_RATE, REPORT_SLACK, STATS_INTERVAL

#: NAT pairs where no direct path can exist (the link layer relays them through TURN):
#: handed out only when nothing else is left, so the swarm does not lean on the relay.
_RELAY_ONLY = {
    frozenset({NatType.SYMMETRIC.value}),
    frozenset({NatType.SYMMETRIC.value, NatType.PORT_RESTRICTED.value}),
}
#: A seed keeps its place unless another viewer uploads this much faster (no flapping).
SEED_HYSTERESIS = 1.25
#: Weight of a new rate sample in the upload-rate average.
RATE_ALPHA = 0.3
#: How often the shell re-ranks a room's seeds by reported upload rates (`select_seeds`),
#: at a stats report at least this long after the last ranking.
SEED_INTERVAL = 5.0
#: A viewer silent this long (three stats reports missed) is not ranked for a seed, and a
#: seed this silent is replaced: the edge notices a vanished viewer only when its WebSocket
#: heartbeat fails (20-30 s), and a seed that is gone starves its swarm of new chunks.
SILENT_AFTER = 3 * STATS_INTERVAL


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    min_neighbours: int = 4
    max_neighbours: int = 8
    #: links to and from one uploader at most
    max_degree: int = 16
    #: share of the room's viewers that pull every chunk from the edge (at least one)
    seed_fraction: float = 0.02
    max_seeds: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.min_neighbours <= self.max_neighbours <= self.max_degree:
            raise ValueError("need 1 <= min_neighbours <= max_neighbours <= max_degree")
        if not 0 <= self.seed_fraction <= 1 or self.max_seeds < 1:
            raise ValueError("seed_fraction must be in [0, 1] and max_seeds at least 1")


@dataclass(slots=True)
class TrackedPeer:
    peer_id: str
    fingerprint: str
    nat_type: str
    upload: bool
    joined: float
    out: list[str] = field(default_factory=list)  #: the list handed to this peer, in order
    inbound: set[str] = field(default_factory=set)  #: peers whose list holds this one
    excluded: set[str] = field(default_factory=set)  #: peers it could not connect to
    seed: bool = False
    stats: PeerStats = field(default_factory=PeerStats)
    stats_at: float | None = None
    upload_rate: float = 0.0  #: bytes/s, from the reported uploaded_bytes

    @property
    def degree(self) -> int:
        return len(self.out) + len(self.inbound)

    def neighbour(self) -> Neighbour:
        return Neighbour(self.peer_id, self.fingerprint, self.nat_type)


@dataclass(slots=True)
class TrackerUpdate:
    """What changed: the new neighbour list of every peer whose list changed, and the new
    seed flag of every peer whose flag changed."""

    neighbours: dict[str, tuple[Neighbour, ...]] = field(default_factory=dict)
    seeds: dict[str, bool] = field(default_factory=dict)

    def merge(self, other: TrackerUpdate) -> None:
        self.neighbours.update(other.neighbours)
        self.seeds.update(other.seeds)


class Tracker:
    """One room's viewers. Peer ids are the edge's; the shell removes a peer when its
    WebSocket closes (or its join was never followed by one)."""

    def __init__(self, config: TrackerConfig | None = None, *, rng: random.Random | None = None):
        self.config = config or TrackerConfig()
        self._rng = rng or random.Random()
        self.peers: dict[str, TrackedPeer] = {}
        #: what departed peers reported last, so room totals do not drop when they leave
        self.departed = PeerStats()

    def __len__(self) -> int:
        return len(self.peers)

    def neighbours_of(self, peer_id: str) -> tuple[Neighbour, ...]:
        peer = self.peers[peer_id]
        return tuple(self.peers[p].neighbour() for p in peer.out)

    def seeds(self) -> list[str]:
        return [p.peer_id for p in self.peers.values() if p.seed]

    # --- events -----------------------------------------------------------------------------

    def join(
        self, peer_id: str, fingerprint: str, nat_type: str, upload: bool, now: float
    ) -> TrackerUpdate:
        """A new viewer: its list (in the update, even when empty), others' top-ups, seeds."""
        if peer_id in self.peers:
            raise ValueError(f"peer {peer_id} has already joined")
        peer = TrackedPeer(peer_id, fingerprint, nat_type, upload, now)
        self.peers[peer_id] = peer
        update = TrackerUpdate()
        self._fill(peer, self.config.max_neighbours // 2 + self.config.min_neighbours // 2, update)
        update.neighbours.setdefault(peer_id, self.neighbours_of(peer_id))
        if upload:
            # A new uploader is what peers short of neighbours have been waiting for.
            for other in sorted(self.peers.values(), key=lambda p: len(p.out)):
                if peer.degree >= self.config.max_degree:
                    break
                if other is not peer and len(other.out) < self.config.min_neighbours:
                    self._fill(other, self.config.min_neighbours, update)
        update.merge(self.select_seeds(now))
        return update

    def leave(self, peer_id: str, now: float | None = None) -> TrackerUpdate:
        """A viewer left: every peer that listed it gets a replacement (and a seed that left,
        a successor; ``now`` as for `select_seeds`)."""
        update = TrackerUpdate()
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return update
        self.departed = _add_stats(self.departed, peer.stats)
        for other_id in peer.out:
            other = self.peers.get(other_id)
            if other is not None:
                other.inbound.discard(peer_id)
        # Sorted: str hashes are salted, and the order the lists are refilled in draws on the
        # rng; the simulator replays a seeded run in any process.
        for other_id in sorted(peer.inbound):
            other = self.peers.get(other_id)
            if other is None or peer_id not in other.out:
                continue
            other.out.remove(peer_id)
            self._fill(other, max(len(other.out) + 1, self.config.min_neighbours), update)
            update.neighbours[other_id] = self.neighbours_of(other_id)
        update.merge(self.select_seeds(now))
        return update

    def need_neighbours(self, peer_id: str, exclude: tuple[str, ...] = ()) -> TrackerUpdate:
        """The peer could not use ``exclude`` (failed links, silent peers): drop them from its
        list, never hand them to it again, and fill the list back up."""
        update = TrackerUpdate()
        peer = self.peers.get(peer_id)
        if peer is None:
            return update
        for gone in exclude:
            peer.excluded.add(gone)
            if gone in peer.out:
                peer.out.remove(gone)
                other = self.peers.get(gone)
                if other is not None:
                    other.inbound.discard(peer_id)
        # Bounded: forgetting old exclusions is fine, the peer can exclude them again.
        while len(peer.excluded) > 256:
            peer.excluded.pop()
        self._fill(peer, self.config.max_neighbours, update)
        update.neighbours[peer_id] = self.neighbours_of(peer_id)
        return update

    def linked(self, a: str, b: str) -> bool:
        """Did the tracker pair ``a`` and ``b`` (either's list holds the other)? Only such
        pairs may signal each other through the edge."""
        peer = self.peers.get(a)
        return peer is not None and (b in peer.out or b in peer.inbound)

    def report(self, peer_id: str, stats: PeerStats, now: float) -> bool:
        """Take a peer's cumulative report; False (and not taken) when it claims what is not
        possible: a byte figure over `MAX_REPORT_RATE` x the seconds since its join plus
        `REPORT_SLACK`, more stalls than one per 100 ms, more neighbours than links allow."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return False
        elapsed = max(now - peer.joined, 0.0)
        cap = MAX_REPORT_RATE * elapsed + REPORT_SLACK
        if (
            max(stats.p2p_bytes, stats.cdn_bytes, stats.uploaded_bytes) > cap
            or stats.stalls > 10 * elapsed + 10
            or stats.neighbours > 2 * self.config.max_degree
        ):
            return False
        if peer.stats_at is not None and now > peer.stats_at:
            sent = max(stats.uploaded_bytes - peer.stats.uploaded_bytes, 0)
            sample = sent / (now - peer.stats_at)
            peer.upload_rate += RATE_ALPHA * (sample - peer.upload_rate)
        peer.stats = stats
        peer.stats_at = now
        return True

    def totals(self) -> PeerStats:
        """The room's sums: departed peers' last reports plus the online peers' latest."""
        total = self.departed
        for peer in self.peers.values():
            total = _add_stats(total, peer.stats)
        return total

    def seed_target(self) -> int:
        uploaders = sum(1 for p in self.peers.values() if p.upload)
        wanted = max(1, round(len(self.peers) * self.config.seed_fraction))
        return min(wanted, uploaders, self.config.max_seeds)

    def select_seeds(self, now: float | None = None) -> TrackerUpdate:
        """Keep `seed_target` seeds among the fastest uploaders (ties: the longest-standing);
        a sitting seed is only displaced by one `SEED_HYSTERESIS` times faster. Given
        ``now``, viewers that have not reported for `SILENT_AFTER` s are passed over."""
        update = TrackerUpdate()
        ranked = sorted(
            (p for p in self.peers.values() if p.upload and not _silent(p, now)),
            key=lambda p: (-p.upload_rate * (SEED_HYSTERESIS if p.seed else 1.0), p.joined),
        )
        chosen = {p.peer_id for p in ranked[: self.seed_target()]}
        for peer in self.peers.values():
            if peer.seed != (peer.peer_id in chosen):
                peer.seed = peer.peer_id in chosen
                update.seeds[peer.peer_id] = peer.seed
                if peer.seed:
                    # A seed is the swarm's way in: give it a full list of takers.
                    self._fill(peer, self.config.max_neighbours, update)
        return update

    # --- selection --------------------------------------------------------------------------

    def _fill(self, peer: TrackedPeer, target: int, update: TrackerUpdate) -> None:
        """Add uploaders to ``peer``'s list until it holds ``target`` (at most
        ``max_neighbours``, and an uploader at most ``max_degree`` links in all) or none is
        left: least-loaded first, relay-only pairs last."""
        target = min(target, self.config.max_neighbours)
        want = target - len(peer.out)
        if peer.upload:
            # Links opened to it count too: a popular uploader needs no more of its own.
            want = min(want, self.config.max_degree - peer.degree)
        if want <= 0:
            return
        nat = peer.nat_type
        candidates = [
            other
            for other in self.peers.values()
            if other.upload
            and other is not peer
            and other.peer_id not in peer.out
            and other.peer_id not in peer.inbound  # already linked the other way
            and other.peer_id not in peer.excluded
            and peer.peer_id not in other.excluded
            and other.degree < self.config.max_degree
        ]
        if not candidates:
            return
        self._rng.shuffle(candidates)
        candidates.sort(key=lambda o: (frozenset({nat, o.nat_type}) in _RELAY_ONLY, o.degree // 4))
        for other in candidates[:want]:
            peer.out.append(other.peer_id)
            other.inbound.add(peer.peer_id)
        update.neighbours[peer.peer_id] = self.neighbours_of(peer.peer_id)


def _silent(peer: TrackedPeer, now: float | None) -> bool:
    """Reported once, then nothing for `SILENT_AFTER` s. (Before its first report a viewer
    is not judged: one whose WebSocket never opens is dropped after `JOIN_GRACE` anyway.)"""
    return now is not None and peer.stats_at is not None and now - peer.stats_at > SILENT_AFTER


def _add_stats(a: PeerStats, b: PeerStats) -> PeerStats:
    return PeerStats(
        a.p2p_bytes + b.p2p_bytes,
        a.cdn_bytes + b.cdn_bytes,
        a.uploaded_bytes + b.uploaded_bytes,
        a.stalls + b.stalls,
        0,
    )
