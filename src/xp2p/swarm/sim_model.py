"""The simulated room's parameters, and one simulated viewer's state (`xp2p.swarm.sim`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from . import protocol as proto
from .edge_routes import STATS_INTERVAL
from .scheduler import ChunkScheduler, SchedulerConfig, UploadQueue
from .tracker import TrackerConfig

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
    #: The edge's tracker, as `xp2p.cloud.edge.room` makes it (`TrackerConfig()`): lists of
    #: 6 at join, topped up to 4-8, 16 links per uploader, seeds 2 % of the room (1-20).
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    seeds: int | None = None  #: a fixed number of seeds instead of the tracker's 2 %
    #: The viewer's side (`xp2p.viewer.swarm.neighbours`): it asks the edge for more
    #: neighbours when it has fewer than `MIN_NEIGHBOURS` links and dials, at most every
    #: `NEED_INTERVAL` s; it accepts and opens `MAX_PIPES` links at most.
    need_below: int = 4
    need_interval: float = 2.0
    max_pipes: int = proto.MAX_PEERS
    #: An offer to a viewer that has gone without a word goes unanswered this long
    #: (`LinkConfig.connect_timeout`).
    connect_timeout: float = 8.0
    #: The edge notices a silent leaver when its WebSocket heartbeat fails: aiohttp pings 20 s
    #: after the last frame (a stats report, 0-2 s before it went) and waits 10 s for the
    #: pong. Until then the tracker may hand it out (`Tracker.select_seeds` passes over it
    #: as a seed once it misses reports).
    edge_ws_timeout: tuple[float, float] = (28.0, 30.0)
    stats_interval: float = STATS_INTERVAL  #: a viewer's stats report, for the seed ranking
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

    def tracker_config(self) -> TrackerConfig:
        if self.seeds is None:
            return self.tracker
        # The tracker's target is min(share of the room, uploaders, max_seeds): a share of
        # 1 makes it exactly `seeds` once that many can upload.
        return dataclasses.replace(self.tracker, seed_fraction=1.0, max_seeds=self.seeds)


class Viewer:
    __slots__ = (
        "decide_at",
        "delay",
        "dials",
        "edge_lag",
        "failed",
        "first_at",
        "flash",
        "is_seed",
        "joined",
        "last_need",
        "late",
        "left",
        "listed",
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
        "uploaded",
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
        # The viewer's side of the tracker (`Neighbourhood`): the edge's latest list, offers
        # out to peers that will never answer, peers it failed to link to, its last ask.
        self.listed: tuple[str, ...] = ()
        self.dials: dict[str, None] = {}
        self.failed: set[str] = set()
        self.last_need = -math.inf
        self.uploaded = 0  #: bytes, cumulative: what its stats report to the edge
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
