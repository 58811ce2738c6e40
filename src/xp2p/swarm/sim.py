"""A discrete-event simulation of one 1vN room: the real `ChunkScheduler` per peer, the real
`Tracker` at the edge.

``python -m xp2p.swarm.sim --peers 1000 --duration 600 [--windows]`` (``--help`` for the
rest). Virtual time, one heapq of events, no threads, no sockets; seeded, so a run is
reproducible. ``--windows`` prints a time series per 30 s (offload, links, dead links,
refusals, rate estimates, the seeds' share of fresh uploads): where a decay shows.

What is modelled: the edge makes a chunk every ``chunk_duration`` (a keyframe chunk every
``gop_chunks``) and serves any request (it is the CDN: no capacity limit); each peer has a
one-way access delay (a pair's latency is the sum of both ends', the edge adds its own) and an
upload rate drawn from ``upload_mix`` (multiples of the bitrate; 0 = download-only), enforced
by its `UploadQueue`, one transmission at a time; downloads are limited only for edge
transfers (``download_multiple``). Messages travel reliably, as on QUIC: a loss costs a
retransmission, i.e. one more round trip, with probability ``loss`` per packet of 1200 B.
Viewers arrive as a Poisson process and stay an exponential time (mean ``mean_session``);
half of them leave silently (their neighbours' links close after the link layer's idle timeout),
the rest close their links (and their WebSocket: the edge notices a silent one only after
``edge_ws_timeout``). A flash crowd adds ``flash_joins`` within ``flash_seconds``. The
edge's `xp2p.swarm.tracker.Tracker` picks every neighbour list and the seeds, from the
stats each viewer reports every 2 s; each viewer dials its list and asks for more as the
real client does. A joiner shows first the chunk ``lag`` behind live, decoding from the
keyframe chunk before it.

What is not: downstream limits between peers, per-packet congestion control, chunk size
variation (every chunk is bitrate x duration), the init chunk (a few hundred bytes per join).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import time
from collections import Counter
from typing import Any

from xp2p.link.nat_behaviour import NatType

from . import sim_cli
from .edge_messages import PeerStats
from .edge_routes import MAX_EXCLUDE
from .metrics import SimReport, Window
from .scheduler import (
    EDGE,
    AbandonPeer,
    CancelRequest,
    ChunkScheduler,
    EdgeRequest,
    PeerRequest,
    Playback,
)
from .sim_model import (
    BITFIELD,
    BUSY,
    CANCEL,
    CHUNK_HEADER,
    DEFAULT_UPLOAD_MIX,
    HAVE,
    HELLO,
    PACKET,
    REQUEST,
    SimConfig,
    Viewer,
)
from .sim_report import build_report, close_window
from .tracker import SEED_INTERVAL, Tracker, TrackerUpdate

__all__ = ["DEFAULT_UPLOAD_MIX", "SimConfig", "Simulation", "main"]


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.now = 0.0
        self._events: list[tuple[float, int, int, Any, Any, Any]] = []
        self._counter = 0
        self.peers: dict[str, Viewer] = {}
        self.online: dict[str, Viewer] = {}
        self.tracker = Tracker(config.tracker_config(), rng=random.Random(self.rng.random()))
        self.seeds: dict[str, Viewer] = {}  # online seeds, as the tracker named them
        self._last_seed_check = -math.inf
        self.latest = -1
        self.p2p_bytes = 0
        self.cdn_bytes = 0
        self.wasted_bytes = 0
        self.control_bytes = 0
        self.media_bytes = 0
        self.media_all = 0
        self.events = 0
        self.counts: Counter[str] = Counter()
        self.windows: list[Window] = []
        self.window_start = config.warmup
        self.window_p2p = self.window_cdn = 0
        self.window_counts: Counter[str] = Counter()
        self.n_sum = 0.0
        self.u_sum = 0.0
        self.samples = 0
        self._next_id = 0
        sched_cfg = dataclasses.replace(
            config.scheduler,
            chunk_duration=config.chunk_duration,
            chunk_bytes=config.chunk_bytes,
        )
        self._sched_cfg = sched_cfg
        self._seed_cfg = dataclasses.replace(sched_cfg, seed=True)
        self._handlers = (
            self._produce,
            self._join,
            self._leave,
            self._decide,
            self._request_arrives,
            self._upload_done,
            self._chunk_arrives,
            self._have_arrives,
            self._busy_arrives,
            self._cancel_arrives,
            self._unlink,
            self._link,
            self._report,
            self._dial_failed,
            self._forget,
        )

    # -- the event queue -----------------------------------------------------------------

    def _at(self, t: float, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        self._counter += 1
        heapq.heappush(self._events, (t, self._counter, kind, a, b, c))

    def run(self) -> SimReport:
        cfg = self.cfg
        wall = time.perf_counter()
        self._at(0.0, 0)
        # The initial audience arrives over 10 s once the stream is `lag` old: a viewer that
        # came earlier would start at chunk 0, closer to the live edge than `lag`.
        for _ in range(cfg.peers):
            self._at(self.rng.uniform(cfg.lag + 1, cfg.lag + 11), 1)
        if cfg.mean_session:
            t = cfg.lag
            while True:
                t += self.rng.expovariate(cfg.peers / cfg.mean_session)
                if t >= cfg.duration:
                    break
                self._at(t, 1)
        flash_at = cfg.flash_at
        if flash_at is None:
            flash_at = cfg.warmup + (cfg.duration - cfg.warmup) / 2
        for _ in range(cfg.flash_joins):
            self._at(flash_at + self.rng.uniform(0, cfg.flash_seconds), 1, True)
        events = self._events
        handlers = self._handlers
        end = cfg.duration
        while events:
            t, _, kind, a, b, c = heapq.heappop(events)
            if t > end:
                break
            self.now = t
            self.events += 1
            handlers[kind](a, b, c)
        self.now = end
        for peer in list(self.online.values()):
            self._finish_playback(peer)
        return build_report(self, time.perf_counter() - wall)

    # -- the edge and the tracker --------------------------------------------------------

    def _produce(self, _a: Any, _b: Any, _c: Any) -> None:
        self.latest += 1
        self._at(self.now + self.cfg.chunk_duration, 0)
        if self.now >= self.cfg.warmup:
            self.samples += 1
            self.n_sum += len(self.online)
            self.u_sum += sum(p.upload_rate for p in self.online.values())
        for seed in self.seeds.values():
            self._poke(seed, self.now)
        if self.now >= self.window_start + self.cfg.window:
            self.windows.append(close_window(self))
            self.window_start = self.now
            self.window_p2p = self.window_cdn = 0
            self.window_counts = Counter(self.counts)

    # The neighbour lists and the seeds are the edge's `Tracker`, driven as the edge drives it
    # (`xp2p.cloud.edge.room` and `service`: join, leave, stats, need_neighbours, a re-ranking
    # of the seeds at a stats report every SEED_INTERVAL s); each viewer acts on its list as
    # `xp2p.viewer.swarm.neighbours.Neighbourhood` does. What the edge pushes over a
    # WebSocket arrives at once.

    def _apply(self, update: TrackerUpdate) -> None:
        for name, seed in update.seeds.items():
            peer = self.online.get(name)
            if peer is not None:
                self._set_seed(peer, seed)
        for name, neighbours in update.neighbours.items():
            peer = self.online.get(name)
            if peer is not None:
                self._on_neighbours(peer, tuple(n.peer_id for n in neighbours))

    def _set_seed(self, peer: Viewer, seed: bool) -> None:
        if seed == peer.is_seed:
            return
        peer.is_seed = seed
        if seed:
            self.seeds[peer.name] = peer
            peer.sched.config = self._seed_cfg
            peer.queue.fresh_chunks = self.cfg.seed_fresh_chunks
        else:
            self.seeds.pop(peer.name, None)
            peer.sched.config = self._sched_cfg
            peer.queue.fresh_chunks = None

    def _report(self, peer: Viewer, _b: Any, _c: Any) -> None:
        """A viewer's stats over its WebSocket; the edge re-ranks the seeds on one."""
        if peer.left is not None:
            return
        stats = PeerStats(uploaded_bytes=peer.uploaded, neighbours=len(peer.neighbours))
        self.tracker.report(peer.name, stats, self.now)
        if self.now - self._last_seed_check >= SEED_INTERVAL:
            self._last_seed_check = self.now
            self._apply(self.tracker.select_seeds(self.now))
        self._at(self.now + self.cfg.stats_interval, 12, peer)

    def _on_neighbours(self, peer: Viewer, names: tuple[str, ...]) -> None:
        """The edge's list: dial whom it names that is not linked, dialled or failed."""
        peer.listed = names
        for name in names:
            if len(peer.neighbours) + len(peer.dials) >= self.cfg.max_pipes:
                break
            if name in peer.neighbours or name in peer.dials or name in peer.failed:
                continue
            self._dial(peer, name)

    def _dial(self, peer: Viewer, name: str) -> None:
        other = self.online.get(name)
        if other is None or len(other.neighbours) >= self.cfg.max_pipes:
            # Gone without a word (the edge has not noticed yet): the offer goes unanswered
            # until the connect timeout. Full: refused "full", a round trip via the edge.
            peer.dials[name] = None
            wait = self.cfg.connect_timeout
            if other is not None:
                wait = 2 * (peer.delay + other.delay + 2 * self.cfg.edge_delay_ms / 1000)
            self._at(self.now + wait, 13, peer, name)
            return
        peer.neighbours[name] = None
        other.neighbours[peer.name] = None
        rtt = 2 * (peer.delay + other.delay)
        self.control_bytes += 2 * HELLO + (BITFIELD if peer.uploads else 0) + BITFIELD
        # QUIC + ICE set-up: about two round trips before the first message.
        self._at(self.now + 2 * rtt, 11, peer.name, other.name)

    def _dial_failed(self, peer: Viewer, name: str, _c: Any) -> None:
        if peer.left is None and name in peer.dials:
            del peer.dials[name]
            if name not in peer.neighbours:  # unless it dialled this one meanwhile
                peer.failed.add(name)
            self._check_needs(peer)

    def _check_needs(self, peer: Viewer) -> None:
        """Few links left: dial the list again, or ask the edge for a new one (throttled)."""
        cfg = self.cfg
        if peer.left is not None or len(peer.neighbours) + len(peer.dials) >= cfg.need_below:
            return
        if self.now - peer.last_need < cfg.need_interval:
            return
        peer.last_need = self.now
        if any(n not in peer.neighbours and n not in peer.failed for n in peer.listed):
            self._on_neighbours(peer, peer.listed)
            return
        exclude = sorted(peer.failed | set(peer.neighbours))[-MAX_EXCLUDE:]
        self._apply(self.tracker.need_neighbours(peer.name, tuple(exclude)))

    def _forget(self, name: str, _b: Any, _c: Any) -> None:
        """The edge sees a viewer's WebSocket close: it leaves the tracker."""
        self._apply(self.tracker.leave(name, self.now))

    def _link(self, a: str, b: str, _c: Any) -> None:
        pa, pb = self.online.get(a), self.online.get(b)
        if pa is None or pb is None or b not in pa.neighbours:
            return
        for x, y in ((pa, pb), (pb, pa)):
            x.failed.discard(y.name)
            x.sched.add_peer(y.name, self.now)
            if y.uploads:
                x.sched.on_bitfield(
                    y.name, [s for s in range(x.play_seq, self.latest + 1) if y.sched.has(s)]
                )
            self._poke(x, self.now)

    # -- viewers come and go -------------------------------------------------------------

    def _join(self, flash: Any, _b: Any, _c: Any) -> None:
        cfg = self.cfg
        self._next_id += 1
        name = f"p{self._next_id}"
        mult = self._draw_upload()
        delay = self.rng.uniform(*cfg.delay_ms) / 1000
        sched = ChunkScheduler(self._sched_cfg, random.Random(self.rng.random()))
        peer = Viewer(name, delay, mult * cfg.bitrate / 8, sched, cfg.upload_backlog)
        peer.joined = self.now
        peer.flash = bool(flash)
        self.peers[name] = peer
        self.online[name] = peer
        # The edge tells the joiner its live edge. A player pulling straight from the edge
        # starts at the newest keyframe chunk (the GOP cache): that is the latency to beat.
        d = cfg.chunk_duration
        keyframe = max(self.latest, 0) - max(self.latest, 0) % cfg.gop_chunks
        rtt = 2 * (delay + cfg.edge_delay_ms / 1000)
        fetch = rtt + cfg.chunk_bytes / (cfg.download_multiple * cfg.bitrate / 8)
        peer.edge_lag = self.now + fetch - keyframe * d
        # The swarm viewer shows first the chunk `lag` old (time for the swarm to spread it),
        # decoding from the keyframe chunk before it and dropping the frames before that
        # chunk (an accurate seek); never a chunk newer than the edge viewer's first.
        peer.present_seq = min(max(self.latest - round(cfg.lag / d), 0), keyframe)
        peer.start_seq = peer.present_seq - peer.present_seq % cfg.gop_chunks
        peer.play_seq = peer.start_seq
        # Everything from the keyframe on is needed to show the first frame, all due then.
        peer.play_time = self.now + cfg.startup_deadline
        self._apply(self.tracker.join(name, "", NatType.UNKNOWN.value, peer.uploads, self.now))
        self._at(self.now + cfg.stats_interval, 12, peer)
        if cfg.mean_session:
            self._at(self.now + self.rng.expovariate(1 / cfg.mean_session), 2, name)
        self._poke(peer, self.now)

    def _draw_upload(self) -> float:
        x = self.rng.random()
        for share, mult in self.cfg.upload_mix:
            x -= share
            if x < 0:
                return mult
        return self.cfg.upload_mix[-1][1]

    def _leave(self, name: str, _b: Any, _c: Any) -> None:
        peer = self.online.pop(name, None)
        if peer is None:
            return
        self._finish_playback(peer)
        peer.left = self.now
        self.seeds.pop(name, None)
        cfg = self.cfg
        graceful = self.rng.random() < cfg.graceful_leave
        if graceful:
            self._forget(name, None, None)
        else:
            self._at(self.now + self.rng.uniform(*cfg.edge_ws_timeout), 14, name)
        for other in peer.neighbours:
            if graceful:
                self._at(self.now + peer.delay + self.peers[other].delay, 10, other, name)
            else:
                # Its neighbours' links notice nothing comes back. Without this a silent
                # leaver held a slot of each neighbour's degree for good: after a few
                # minutes of churn a seed could be "full" with 14 dead links of 16, its
                # upload idle, and the swarm fell back to the edge.
                idle = cfg.link_idle_timeout + self.rng.uniform(0, cfg.keepalive_interval)
                self._at(self.now + idle, 10, other, name)
        peer.neighbours.clear()

    def _unlink(self, name: str, gone: str, _c: Any) -> None:
        peer = self.online.get(name)
        if peer is None or gone not in peer.neighbours:
            return
        del peer.neighbours[gone]
        peer.sched.remove_peer(gone)
        peer.queue.drop_peer(gone)
        other = self.online.get(gone)
        if other is not None:
            other.neighbours.pop(name, None)
            other.sched.remove_peer(name)
            other.queue.drop_peer(name)
            self._check_needs(other)
            self._poke(other, self.now)
        self._check_needs(peer)
        self._poke(peer, self.now)

    # -- one viewer's scheduler at work --------------------------------------------------

    def _poke(self, peer: Viewer, t: float) -> None:
        if t < peer.decide_at:
            peer.decide_at = t
            self._at(t, 3, peer, t)

    def _decide(self, peer: Viewer, t: float, _c: Any) -> None:
        if peer.left is not None or t != peer.decide_at:
            return  # gone, or superseded by an earlier wake-up
        peer.decide_at = math.inf
        now = self.now
        self._advance(peer)
        shown = None if peer.started else peer.present_seq
        playback = Playback(peer.play_seq, peer.play_time, shown)
        for d in peer.sched.decide(now, playback, self.latest):
            self.counts[type(d).__name__ + ("_seed" if peer.is_seed else "")] += 1
            if isinstance(d, PeerRequest):
                other = self.peers[d.peer]
                self.control_bytes += REQUEST
                self._at(now + self._latency(peer, other, REQUEST), 4, other, peer.name, d.seq)
            elif isinstance(d, EdgeRequest):
                nbytes = self.cfg.chunk_bytes
                rtt = 2 * (peer.delay + self.cfg.edge_delay_ms / 1000)
                rate = self.cfg.download_multiple * self.cfg.bitrate / 8
                arrive = now + rtt + nbytes / rate + self._loss_delay(rtt, nbytes)
                self.control_bytes += REQUEST
                self._at(arrive, 6, peer, EDGE, d.seq)
            elif isinstance(d, CancelRequest):
                other = self.peers[d.peer]
                self.control_bytes += CANCEL
                self._at(now + self._latency(peer, other, CANCEL), 9, other, peer.name, d.seq)
            elif isinstance(d, AbandonPeer):
                # Dropped as silent: never dialled again (`Neighbourhood.drop`).
                peer.failed.add(d.peer)
                self._unlink(peer.name, d.peer, None)
        self._poke(peer, max(peer.sched.wake_at, now + 0.005))

    def _latency(self, a: Viewer, b: Viewer, nbytes: int) -> float:
        one_way = a.delay + b.delay
        return one_way + self._loss_delay(2 * one_way, nbytes)

    def _loss_delay(self, rtt: float, nbytes: int) -> float:
        packets = nbytes // PACKET + 1
        if self.rng.random() < 1 - (1 - self.cfg.loss) ** packets:
            return rtt
        return 0.0

    def _request_arrives(self, uploader: Viewer, asker: str, seq: int) -> None:
        if uploader.left is not None or asker not in uploader.neighbours:
            return  # silent: a departed peer answers nothing
        nbytes = self.cfg.chunk_bytes
        retry: float | None = None
        if not uploader.sched.has(seq):
            retry = 0.0
            self.counts["busy_missing"] += 1
        else:
            busy = uploader.queue.offer(asker, seq, nbytes, self.now)
            if busy is not None:
                retry = busy.retry_after
                kind = "busy_noupload" if not uploader.uploads else "busy_queue"
                self.counts["busy_stale" if busy.retry_after == 0 else kind] += 1
        if retry is not None:
            other = self.peers[asker]
            self.control_bytes += BUSY
            arrive = self.now + self._latency(uploader, other, BUSY)
            self._at(arrive, 8, other, uploader.name, (seq, retry))
            return
        if not uploader.sending:
            self._send_next(uploader)

    def _send_next(self, uploader: Viewer) -> None:
        tx = uploader.queue.next_transmission(self.now)
        if tx is None:
            uploader.sending = False
            return
        uploader.sending = True
        self._at(tx.start_at + tx.duration, 5, uploader, tx.peer, tx.seq)

    def _upload_done(self, uploader: Viewer, asker: str, seq: int) -> None:
        if uploader.left is not None:
            return
        if uploader.is_seed:
            # A seed's upload is the swarm's way in for new chunks: how much of it goes there.
            fresh_seq = self.latest - round(1.0 / self.cfg.chunk_duration)
            self.counts["seed_sent_fresh" if seq >= fresh_seq else "seed_sent_old"] += 1
        other = self.peers[asker]
        nbytes = self.cfg.chunk_bytes
        uploader.uploaded += nbytes
        self.control_bytes += CHUNK_HEADER
        arrive = self.now + self._latency(uploader, other, nbytes)
        self._at(arrive, 6, other, uploader.name, seq)
        self._send_next(uploader)

    def _chunk_arrives(self, peer: Viewer, source: str, seq: int) -> None:
        if peer.left is not None:
            return
        nbytes = self.cfg.chunk_bytes
        measured = self.now >= self.cfg.warmup
        self._advance(peer)  # play out what was due before this chunk came
        fresh = peer.sched.on_chunk(seq, source, nbytes, self.now)
        self.media_all += nbytes
        if measured:
            self.media_bytes += nbytes
            if source == EDGE:
                self.cdn_bytes += nbytes
                self.window_cdn += nbytes
            elif fresh:
                self.p2p_bytes += nbytes
                self.window_p2p += nbytes
            if not fresh:
                self.wasted_bytes += nbytes
        if not fresh:
            return
        peer.queue.hold(seq)
        if not peer.started:
            has = peer.sched.has
            if all(has(q) for q in range(peer.start_seq, peer.present_seq + 1)):
                peer.started = True
                peer.first_at = self.now
                peer.play_seq = peer.present_seq
                # A stream younger than `lag` has no chunk that old: hold the first frame
                # until it is, as a player buffers before it starts.
                d = self.cfg.chunk_duration
                peer.play_time = max(self.now, peer.present_seq * d + self.cfg.lag)
        elif seq == peer.play_seq:
            self._stall_until_now(peer)
        self._advance(peer)
        if peer.uploads:
            for name in peer.neighbours:
                other = self.peers[name]
                self.control_bytes += HAVE
                if not other.sched.has(seq):
                    self._at(self.now + self._latency(peer, other, HAVE), 7, other, peer.name, seq)
        self._poke(peer, self.now)

    def _have_arrives(self, peer: Viewer, source: str, seq: int) -> None:
        if peer.left is None and peer.sched.on_have(source, seq):
            self._poke(peer, self.now + 0.005)

    def _busy_arrives(self, peer: Viewer, source: str, refusal: tuple[int, float]) -> None:
        if peer.left is None:
            peer.sched.on_refused(refusal[0], source, self.now, refusal[1])
            self._poke(peer, self.now)

    def _cancel_arrives(self, uploader: Viewer, asker: str, seq: int) -> None:
        uploader.queue.cancel(asker, seq)

    # -- playback ------------------------------------------------------------------------

    def _advance(self, peer: Viewer) -> None:
        """Play what is due. A chunk missing at its time stalls playback: `_chunk_arrives`
        restarts the clock when it comes, and counts the stall."""
        if not peer.started:
            return
        now, step, has = self.now, self.cfg.chunk_duration, peer.sched.has
        while peer.play_time <= now and has(peer.play_seq):
            peer.play_seq += 1
            peer.play_time += step
            peer.played += 1

    def _stall_until_now(self, peer: Viewer) -> None:
        """Playback has waited for ``play_seq`` since its time: count it, restart the clock."""
        if peer.started and peer.play_time < self.now:
            peer.measured_stall += self.measured(peer.play_time, self.now)
            peer.late += 1
            peer.play_time = self.now

    def measured(self, a: float, b: float) -> float:
        return max(0.0, min(b, self.cfg.duration) - max(a, self.cfg.warmup))

    def _finish_playback(self, peer: Viewer) -> None:
        self._advance(peer)
        if not peer.sched.has(peer.play_seq):
            self._stall_until_now(peer)


def main(argv: list[str] | None = None) -> int:
    args = sim_cli.build_parser().parse_args(argv)
    sim = Simulation(sim_cli.config_from_args(args))
    sim_cli.show(sim.run(), sim.counts, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
