"""The simulated room's parameters, and one simulated viewer's state (`xp2p.swarm.sim`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import protocol as proto
from .scheduler import ChunkScheduler, SchedulerConfig, UploadQueue

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

HAVE = len(proto.frame(proto.Have(10**6)))
REQUEST = len(proto.frame(proto.Request(10**6)))
CANCEL = len(proto.frame(proto.Cancel(10**6)))
BUSY = len(proto.frame(proto.Busy(10**6, 500)))
CHUNK_HEADER = len(proto.frame(proto.ChunkData(10**6, b""))) + 31 + 67  # + wire header, proof
HELLO = len(proto.frame(proto.Hello(1, "peer-000000", True)))
BITFIELD = len(proto.frame(proto.Bitfield(0, bytes(proto.MAX_WINDOW // 8))))
PACKET = 1200


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
    #: How far behind the live edge a joiner starts playing: the chunk this old, decoded from
    #: the keyframe chunk before it (or the newest keyframe chunk, if that is older already).
    #: The time the swarm has to spread a chunk; `SimReport.extra_p95` is what it costs.
    lag: float = 5.0
    #: A joiner's first frame is due this long after it joins: the keyframe chunk and the
    #: chunks up to the first shown come from neighbours if they can, from the edge once
    #: within `edge_margin` of it. 1.0 s: startup p95 0.37 s but 4.6 edge copies at N = 100;
    #: 1.2 s lets the links come up first (~2 round trips) and most of the prefix come from
    #: neighbours; 1.6 s: startup p95 over 1 s.
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


class Viewer:
    __slots__ = (
        "decide_at",
        "delay",
        "edge_lag",
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
        "present_seq",
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
        self.start_seq = 0  # the keyframe chunk it decodes from
        self.present_seq = 0  # the chunk it shows first
        self.edge_lag = 0.0  # behind live, had it pulled the stream straight from the edge
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
