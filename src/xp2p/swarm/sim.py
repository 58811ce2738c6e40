"""A discrete-event simulation of one 1vN room, running the real `ChunkScheduler` per peer.

``python -m xp2p.swarm.sim --peers 1000 --duration 240`` (``--help`` for the rest). Virtual
time, one heapq of events, no threads, no sockets; seeded, so a run is reproducible.

What is modelled: the edge makes a chunk every ``chunk_duration`` (a keyframe chunk every
``gop_chunks``) and serves any request (it is the CDN: no capacity limit); each peer has a
one-way access delay (a pair's latency is the sum of both ends', the edge adds its own) and an
upload rate drawn from ``upload_mix`` (multiples of the bitrate; 0 = download-only), enforced
by its `UploadQueue`, one transmission at a time; downloads are limited only for edge
transfers (``download_multiple``). Messages travel reliably, as on QUIC: a loss costs a
retransmission, i.e. one more round trip, with probability ``loss`` per packet of 1200 B.
Viewers arrive as a Poisson process and stay an exponential time (mean ``mean_session``);
half of them leave silently (a crash, a dead network: neighbours find out by timeouts), the
rest close their links. A flash crowd adds ``flash_joins`` within ``flash_seconds``. The
tracker hands each joiner ``connect`` neighbours among uploading peers with fewer than
``max_degree``; the edge keeps ``seeds`` seeds among the fastest uploaders.

What is not: downstream limits between peers, per-packet congestion control, chunk size
variation (every chunk is bitrate x duration), the init chunk (a few hundred bytes per join).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import protocol as proto
from .metrics import SimReport, Window, format_rows, format_windows, percentile, report_rows
from .scheduler import (
    EDGE,
    AbandonPeer,
    CancelRequest,
    ChunkScheduler,
    EdgeRequest,
    PeerRequest,
    Playback,
    SchedulerConfig,
    UploadQueue,
)

#: Upload capacity in multiples of the bitrate, with the share of viewers at each. Mean
#: 1.675 r: Σu = 1.675 N·r, with 15 % that cannot upload at all (symmetric NAT, metered
#: mobile, upload=False) and a quarter below the bitrate (ADSL, busy Wi-Fi).
DEFAULT_UPLOAD_MIX: tuple[tuple[float, float], ...] = (
    (0.15, 0.0),
    (0.25, 0.5),
    (0.30, 1.5),
    (0.20, 3.0),
    (0.10, 5.0),
)

_HAVE = len(proto.frame(proto.Have(10**6)))
_REQUEST = len(proto.frame(proto.Request(10**6)))
_CANCEL = len(proto.frame(proto.Cancel(10**6)))
_BUSY = len(proto.frame(proto.Busy(10**6, 500)))
_CHUNK_HEADER = len(proto.frame(proto.ChunkData(10**6, b""))) + 31 + 67  # + wire header, proof
_HELLO = len(proto.frame(proto.Hello(1, "peer-000000", True)))
_BITFIELD = len(proto.frame(proto.Bitfield(0, bytes(proto.MAX_WINDOW // 8))))
_PACKET = 1200


@dataclass(frozen=True)
class SimConfig:
    peers: int = 100
    duration: float = 180.0  #: simulated seconds
    warmup: float = 30.0  #: measured from here on
    bitrate: float = 2_000_000.0  #: bit/s
    chunk_duration: float = 0.33
    gop_chunks: int = 6
    upload_mix: tuple[tuple[float, float], ...] = DEFAULT_UPLOAD_MIX
    download_multiple: float = 10.0
    delay_ms: tuple[float, float] = (5.0, 50.0)  #: one-way access delay, uniform
    edge_delay_ms: float = 10.0
    loss: float = 0.01
    mean_session: float | None = 120.0  #: None: no churn
    flash_joins: int = 50
    flash_seconds: float = 5.0
    flash_at: float | None = None  #: default: the middle of the measured span
    seeds: int | None = None  #: default: grows slowly with the swarm
    connect: int = 8
    max_degree: int = 16
    lag: float = 5.0  #: a joiner starts at the newest keyframe chunk at least this old
    startup_deadline: float = 1.2
    graceful_leave: float = 0.5
    #: The link layer's dead-peer detection (`LinkConfig.idle_timeout` and
    #: `keepalive_interval`): a silent leaver's links close after the idle timeout plus up
    #: to one keep-alive interval.
    link_idle_timeout: float = 7.0
    keepalive_interval: float = 2.5
    upload_backlog: float = 0.15  #: `UploadQueue.max_backlog`
    seed_fresh_chunks: int | None = 3  #: a seed's `UploadQueue.fresh_chunks`
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    seed: int = 1
    window: float = 30.0  #: the time series (`SimReport.windows`) is per this many seconds

    @property
    def chunk_bytes(self) -> int:
        return int(self.bitrate / 8 * self.chunk_duration)

    def seed_count(self) -> int:
        if self.seeds is not None:
            return self.seeds
        # About 2 % of the swarm (2 at N = 100, 20 at N = 1,000): enough first-hop copies that
        # a chunk reaches everyone in a few hops, under the 3 % of edge egress it costs.
        return max(2, min(20, round(self.peers / 50)))


class _Peer:
    __slots__ = (
        "decide_at",
        "delay",
        "first_at",
        "flash",
        "is_seed",
        "joined",
        "late",
        "left",
        "measured_stall",
        "name",
        "neighbours",
        "play_seq",
        "play_time",
        "played",
        "queue",
        "sched",
        "sending",
        "start_seq",
        "started",
        "upload_rate",
        "uploads",
    )

    def __init__(
        self, name: str, delay: float, upload_rate: float, sched: ChunkScheduler, backlog: float
    ):
        self.name = name
        self.delay = delay
        self.upload_rate = upload_rate
        self.uploads = upload_rate > 0
        self.sched = sched
        self.queue = UploadQueue(
            upload=self.uploads, rate_cap=upload_rate or None, max_backlog=backlog
        )
        self.sending = False
        # A dict, not a set: its order (insertion) is the same in every process, so a seeded
        # run is reproducible across runs, not only within one (str hashes are salted).
        self.neighbours: dict[str, None] = {}
        self.joined = 0.0
        self.left: float | None = None
        self.start_seq = 0
        self.started = False
        self.first_at = math.inf
        self.play_seq = 0
        self.play_time = 0.0
        self.measured_stall = 0.0
        self.decide_at = math.inf
        self.is_seed = False
        self.flash = False
        self.late = 0
        self.played = 0


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.now = 0.0
        self._events: list[tuple[float, int, int, Any, Any, Any]] = []
        self._counter = 0
        self.peers: dict[str, _Peer] = {}
        self.online: dict[str, _Peer] = {}
        self.uploaders: list[str] = []  # online uploaders, for the tracker's sampling
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
        self._window_start = config.warmup
        self._window_p2p = self._window_cdn = 0
        self._window_counts: Counter[str] = Counter()
        self._n_sum = 0.0
        self._u_sum = 0.0
        self._samples = 0
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
        return self._report(time.perf_counter() - wall)

    # -- the edge and the tracker --------------------------------------------------------

    def _produce(self, _a: Any, _b: Any, _c: Any) -> None:
        self.latest += 1
        self._at(self.now + self.cfg.chunk_duration, 0)
        if self.now >= self.cfg.warmup:
            self._samples += 1
            self._n_sum += len(self.online)
            self._u_sum += sum(p.upload_rate for p in self.online.values())
        for name in self._seeds():
            self._poke(self.online[name], self.now)
        if self.now >= self._window_start + self.cfg.window:
            self._close_window()

    def _close_window(self) -> None:
        """One point of the time series: what a decay over a long run shows up in."""
        online = self.online
        links = [len(p.neighbours) for p in online.values()]
        dead = [sum(1 for n in p.neighbours if n not in online) for p in online.values()]
        ratios = []
        for p in online.values():
            for name in p.neighbours:
                other = online.get(name)
                rate = p.sched.peer_rate(name)
                if other is not None and other.uploads and rate > 0:
                    ratios.append(rate / other.upload_rate)
        c, c0 = self.counts, self._window_counts
        asked = sum(c[k] - c0[k] for k in ("PeerRequest", "PeerRequest_seed"))
        refused = sum(
            c[k] - c0[k] for k in ("busy_queue", "busy_missing", "busy_noupload", "busy_stale")
        )
        fresh = c["seed_sent_fresh"] - c0["seed_sent_fresh"]
        seed_sent = fresh + c["seed_sent_old"] - c0["seed_sent_old"]
        total = self._window_p2p + self._window_cdn
        self.windows.append(
            Window(
                start=self._window_start,
                end=self.now,
                offload=self._window_p2p / total if total else 0.0,
                online=len(online),
                neighbours=sum(links) / max(len(links), 1),
                dead_neighbours=sum(dead) / max(len(dead), 1),
                refused=refused / asked if asked else 0.0,
                rate_estimate=percentile(ratios, 50),
                seed_fresh=fresh / seed_sent if seed_sent else 0.0,
            )
        )
        self._window_start = self.now
        self._window_p2p = self._window_cdn = 0
        self._window_counts = Counter(c)

    def _seeds(self) -> list[str]:
        """The edge keeps the fastest uploaders online as seeds (ties: the longest-standing).
        Only a viewer that can upload several copies qualifies: a slow seed would hold every
        new chunk back for the whole swarm."""
        floor = 2 * self.cfg.bitrate / 8
        ranked = sorted(
            (p for p in self.online.values() if p.started and p.upload_rate >= floor),
            key=lambda p: (-p.upload_rate, p.joined),
        )
        chosen = ranked[: self.cfg.seed_count()]
        for p in self.online.values():
            if p.is_seed and p not in chosen:
                p.is_seed = False
                p.sched.config = self._sched_cfg
                p.queue.fresh_chunks = None
        for p in chosen:
            if not p.is_seed:
                p.is_seed = True
                p.sched.config = self._seed_cfg
                p.queue.fresh_chunks = self.cfg.seed_fresh_chunks
                # A seed is the swarm's way in: the tracker fills its neighbour list, so
                # each new chunk has as many first-hop takers as the seed can serve.
                self._find_neighbours(p, self.cfg.max_degree - len(p.neighbours))
        return [p.name for p in chosen]

    def _find_neighbours(self, peer: _Peer, count: int) -> None:
        pool = self.uploaders
        tries = 0
        while count > 0 and pool and tries < 8 * count + 8:
            tries += 1
            other = self.online.get(self.rng.choice(pool))
            if (
                other is None
                or other is peer
                or other.name in peer.neighbours
                or len(other.neighbours) >= self.cfg.max_degree
            ):
                continue
            peer.neighbours[other.name] = None
            other.neighbours[peer.name] = None
            rtt = 2 * (peer.delay + other.delay)
            self.control_bytes += 2 * _HELLO + (_BITFIELD if peer.uploads else 0) + _BITFIELD
            # QUIC + ICE set-up: about two round trips before the first message.
            self._at(self.now + 2 * rtt, 11, peer.name, other.name)
            count -= 1

    def _link(self, a: str, b: str, _c: Any) -> None:
        pa, pb = self.online.get(a), self.online.get(b)
        if pa is None or pb is None or b not in pa.neighbours:
            return
        for x, y in ((pa, pb), (pb, pa)):
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
        peer = _Peer(name, delay, mult * cfg.bitrate / 8, sched, cfg.upload_backlog)
        peer.joined = self.now
        peer.flash = bool(flash)
        self.peers[name] = peer
        self.online[name] = peer
        if peer.uploads:
            self.uploaders.append(name)
        # The edge tells the joiner its live edge; it starts at the newest keyframe chunk
        # at least `lag` old, so that chunk is already spread through the swarm.
        newest = max(self.latest - round(cfg.lag / cfg.chunk_duration), 0)
        peer.start_seq = newest - newest % cfg.gop_chunks
        peer.play_seq = peer.start_seq
        peer.play_time = self.now + cfg.startup_deadline
        self._find_neighbours(peer, cfg.connect)
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
        if peer.uploads:
            self.uploaders.remove(name)
        cfg = self.cfg
        graceful = self.rng.random() < cfg.graceful_leave
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
        # A seed is kept at the full degree: its upload is the swarm's way in.
        want = self.cfg.max_degree if peer.is_seed else self.cfg.connect
        if len(peer.neighbours) < want:
            self._find_neighbours(peer, want - len(peer.neighbours))
        self._poke(peer, self.now)

    # -- one viewer's scheduler at work --------------------------------------------------

    def _poke(self, peer: _Peer, t: float) -> None:
        if t < peer.decide_at:
            peer.decide_at = t
            self._at(t, 3, peer, t)

    def _decide(self, peer: _Peer, t: float, _c: Any) -> None:
        if peer.left is not None or t != peer.decide_at:
            return  # gone, or superseded by an earlier wake-up
        peer.decide_at = math.inf
        now = self.now
        if len(peer.neighbours) < self.cfg.connect // 2:
            # Joined when few could take it, or lost most neighbours: ask the tracker again.
            self._find_neighbours(peer, self.cfg.connect - len(peer.neighbours))
        self._advance(peer)
        playback = Playback(peer.play_seq, peer.play_time)
        for d in peer.sched.decide(now, playback, self.latest):
            self.counts[type(d).__name__ + ("_seed" if peer.is_seed else "")] += 1
            if isinstance(d, PeerRequest):
                other = self.peers[d.peer]
                self.control_bytes += _REQUEST
                self._at(now + self._latency(peer, other, _REQUEST), 4, other, peer.name, d.seq)
            elif isinstance(d, EdgeRequest):
                nbytes = self.cfg.chunk_bytes
                rtt = 2 * (peer.delay + self.cfg.edge_delay_ms / 1000)
                rate = self.cfg.download_multiple * self.cfg.bitrate / 8
                arrive = now + rtt + nbytes / rate + self._loss_delay(rtt, nbytes)
                self.control_bytes += _REQUEST
                self._at(arrive, 6, peer, EDGE, d.seq)
            elif isinstance(d, CancelRequest):
                other = self.peers[d.peer]
                self.control_bytes += _CANCEL
                self._at(now + self._latency(peer, other, _CANCEL), 9, other, peer.name, d.seq)
            elif isinstance(d, AbandonPeer):
                self._unlink(peer.name, d.peer, None)
        self._poke(peer, max(peer.sched.wake_at, now + 0.005))

    def _latency(self, a: _Peer, b: _Peer, nbytes: int) -> float:
        one_way = a.delay + b.delay
        return one_way + self._loss_delay(2 * one_way, nbytes)

    def _loss_delay(self, rtt: float, nbytes: int) -> float:
        packets = nbytes // _PACKET + 1
        if self.rng.random() < 1 - (1 - self.cfg.loss) ** packets:
            return rtt
        return 0.0

    def _request_arrives(self, uploader: _Peer, asker: str, seq: int) -> None:
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
            self.control_bytes += _BUSY
            arrive = self.now + self._latency(uploader, other, _BUSY)
            self._at(arrive, 8, other, uploader.name, (seq, retry))
            return
        if not uploader.sending:
            self._send_next(uploader)

    def _send_next(self, uploader: _Peer) -> None:
        tx = uploader.queue.next_transmission(self.now)
        if tx is None:
            uploader.sending = False
            return
        uploader.sending = True
        self._at(tx.start_at + tx.duration, 5, uploader, tx.peer, tx.seq)

    def _upload_done(self, uploader: _Peer, asker: str, seq: int) -> None:
        if uploader.left is not None:
            return
        if uploader.is_seed:
            # A seed's upload is the swarm's way in for new chunks: how much of it goes there.
            fresh_seq = self.latest - round(1.0 / self.cfg.chunk_duration)
            self.counts["seed_sent_fresh" if seq >= fresh_seq else "seed_sent_old"] += 1
        other = self.peers[asker]
        nbytes = self.cfg.chunk_bytes
        self.control_bytes += _CHUNK_HEADER
        arrive = self.now + self._latency(uploader, other, nbytes)
        self._at(arrive, 6, other, uploader.name, seq)
        self._send_next(uploader)

    def _chunk_arrives(self, peer: _Peer, source: str, seq: int) -> None:
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
                self._window_cdn += nbytes
            elif fresh:
                self.p2p_bytes += nbytes
                self._window_p2p += nbytes
            if not fresh:
                self.wasted_bytes += nbytes
        if not fresh:
            return
        peer.queue.hold(seq)
        if not peer.started and seq == peer.start_seq:
            peer.started = True
            peer.first_at = self.now
            # A stream younger than `lag` has no chunk that old: hold the first frame until
            # it is, as a player buffers before it starts.
            peer.play_time = max(self.now, seq * self.cfg.chunk_duration + self.cfg.lag)
        elif seq == peer.play_seq:
            self._stall_until_now(peer)
        self._advance(peer)
        if peer.uploads:
            for name in peer.neighbours:
                other = self.peers[name]
                self.control_bytes += _HAVE
                if not other.sched.has(seq):
                    self._at(self.now + self._latency(peer, other, _HAVE), 7, other, peer.name, seq)
        self._poke(peer, self.now)

    def _have_arrives(self, peer: _Peer, source: str, seq: int) -> None:
        if peer.left is None and peer.sched.on_have(source, seq):
            self._poke(peer, self.now + 0.005)

    def _busy_arrives(self, peer: _Peer, source: str, refusal: tuple[int, float]) -> None:
        if peer.left is None:
            peer.sched.on_refused(refusal[0], source, self.now, refusal[1])
            self._poke(peer, self.now)

    def _cancel_arrives(self, uploader: _Peer, asker: str, seq: int) -> None:
        uploader.queue.cancel(asker, seq)

    # -- playback ------------------------------------------------------------------------

    def _advance(self, peer: _Peer) -> None:
        """Play what is due. A chunk missing at its time stalls playback: `_chunk_arrives`
        restarts the clock when it comes, and counts the stall."""
        if not peer.started:
            return
        now, step, has = self.now, self.cfg.chunk_duration, peer.sched.has
        while peer.play_time <= now and has(peer.play_seq):
            peer.play_seq += 1
            peer.play_time += step
            peer.played += 1

    def _stall_until_now(self, peer: _Peer) -> None:
        """Playback has waited for ``play_seq`` since its time: count it, restart the clock."""
        if peer.started and peer.play_time < self.now:
            peer.measured_stall += self._measured(peer.play_time, self.now)
            peer.late += 1
            peer.play_time = self.now

    def _measured(self, a: float, b: float) -> float:
        return max(0.0, min(b, self.cfg.duration) - max(a, self.cfg.warmup))

    def _finish_playback(self, peer: _Peer) -> None:
        self._advance(peer)
        if not peer.sched.has(peer.play_seq):
            self._stall_until_now(peer)

    # -- results -------------------------------------------------------------------------

    def _report(self, wall: float) -> SimReport:
        cfg = self.cfg
        r = cfg.bitrate / 8
        span = cfg.duration - cfg.warmup
        n_mean = self._n_sum / max(self._samples, 1)
        u_mean = self._u_sum / max(self._samples, 1)
        bound = 1 - max(r, n_mean * r - u_mean) / (n_mean * r) if n_mean else 0.0
        rebuffer: list[float] = []
        startup: list[float] = []
        flash_startup: list[float] = []
        lag: list[float] = []
        late = played = never_started = 0
        for p in self.peers.values():
            end = p.left if p.left is not None else cfg.duration
            if not p.started:
                if p.joined >= cfg.warmup and end - p.joined > cfg.startup_deadline:
                    never_started += 1
                continue
            if p.joined >= cfg.warmup:
                startup.append(p.first_at - p.joined)
                if p.flash:
                    flash_startup.append(p.first_at - p.joined)
            watch = self._measured(p.first_at, end)
            if watch >= 10.0:
                rebuffer.append(p.measured_stall / watch)
                lag.append(max(p.play_time, end) - p.play_seq * cfg.chunk_duration)
            late += p.late
            played += p.played
        total = self.p2p_bytes + self.cdn_bytes
        return SimReport(
            config=cfg,
            peers_mean=n_mean,
            upload_mean=u_mean / r if n_mean == 0 else u_mean / (n_mean * r),
            offload=self.p2p_bytes / total if total else 0.0,
            bound=bound,
            edge_copies=self.cdn_bytes / (r * span) if span > 0 else 0.0,
            rebuffer_p50=percentile(rebuffer, 50),
            rebuffer_p95=percentile(rebuffer, 95),
            continuity=1 - late / played if played else 0.0,
            startup_p50=percentile(startup, 50),
            startup_p95=percentile(startup, 95),
            flash_startup_p95=percentile(flash_startup, 95),
            lag_p50=percentile(lag, 50),
            lag_p95=percentile(lag, 95),
            control_overhead=self.control_bytes / max(self.media_all, 1),
            wasted=self.wasted_bytes / total if total else 0.0,
            sessions=len(rebuffer),
            never_started=never_started,
            events=self.events,
            wall_seconds=wall,
            windows=tuple(self.windows),
        )


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m xp2p.swarm.sim", description="Simulate one 1vN room."
    )
    parser.add_argument("--peers", type=int, default=d.peers)
    parser.add_argument("--duration", type=float, default=d.duration, help="simulated s")
    parser.add_argument("--warmup", type=float, default=d.warmup)
    parser.add_argument(
        "--mean-session", type=float, default=d.mean_session, help="seconds; 0 = no churn"
    )
    parser.add_argument("--flash-joins", type=int, default=d.flash_joins)
    parser.add_argument("--loss", type=float, default=d.loss)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--lag", type=float, default=d.lag)
    parser.add_argument(
        "--upload-mix",
        default=None,
        help="share:multiple,... e.g. 0.15:0,0.25:0.5,0.3:1.5,0.2:3,0.1:5",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--counts", action="store_true", help="also print decision counts")
    parser.add_argument(
        "--windows", action="store_true", help="also print the time series, per 30 s"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    mix = DEFAULT_UPLOAD_MIX
    if args.upload_mix:
        mix = tuple(
            (float(a), float(b))
            for a, b in (part.split(":") for part in args.upload_mix.split(","))
        )
    return SimConfig(
        peers=args.peers,
        duration=args.duration,
        warmup=args.warmup,
        mean_session=args.mean_session or None,
        flash_joins=args.flash_joins,
        loss=args.loss,
        seeds=args.seeds,
        lag=args.lag,
        upload_mix=mix,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sim = Simulation(config_from_args(args))
    report = sim.run()
    print(format_rows(report_rows(report)))
    if args.windows:
        print(format_windows(report.windows))
    if args.counts:
        print(dict(sim.counts))
    print(
        f"{report.events} events, {report.wall_seconds:.1f} s wall, "
        f"mean {report.peers_mean:.0f} viewers, upload {report.upload_mean:.2f} x bitrate",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
