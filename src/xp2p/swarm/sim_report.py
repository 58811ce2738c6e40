"""A simulation's figures: the report at the end, and the time series along the way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .metrics import SimReport, Window, percentile

if TYPE_CHECKING:
    from .sim import Simulation


def close_window(sim: Simulation) -> Window:
    """One point of the time series: what a decay over a long run shows up in."""
    online = sim.online
    links = [len(p.neighbours) for p in online.values()]
    dead = [sum(1 for n in p.neighbours if n not in online) for p in online.values()]
    ratios = []
    for p in online.values():
        for name in p.neighbours:
            other = online.get(name)
            rate = p.sched.peer_rate(name)
            if other is not None and other.uploads and rate > 0:
                ratios.append(rate / other.upload_rate)
    c, c0 = sim.counts, sim.window_counts
    asked = sum(c[k] - c0[k] for k in ("PeerRequest", "PeerRequest_seed"))
    refused = sum(
        c[k] - c0[k] for k in ("busy_queue", "busy_missing", "busy_noupload", "busy_stale")
    )
    fresh = c["seed_sent_fresh"] - c0["seed_sent_fresh"]
    seed_sent = fresh + c["seed_sent_old"] - c0["seed_sent_old"]
    total = sim.window_p2p + sim.window_cdn
    return Window(
        start=sim.window_start,
        end=sim.now,
        offload=sim.window_p2p / total if total else 0.0,
        online=len(online),
        neighbours=sum(links) / max(len(links), 1),
        dead_neighbours=sum(dead) / max(len(dead), 1),
        refused=refused / asked if asked else 0.0,
        rate_estimate=percentile(ratios, 50),
        seed_fresh=fresh / seed_sent if seed_sent else 0.0,
    )


def build_report(sim: Simulation, wall: float) -> SimReport:
    cfg = sim.cfg
    r = cfg.bitrate / 8
    span = cfg.duration - cfg.warmup
    n_mean = sim.n_sum / max(sim.samples, 1)
    u_mean = sim.u_sum / max(sim.samples, 1)
    bound = 1 - max(r, n_mean * r - u_mean) / (n_mean * r) if n_mean else 0.0
    rebuffer: list[float] = []
    startup: list[float] = []
    flash_startup: list[float] = []
    lag: list[float] = []
    extra: list[float] = []
    late = played = never_started = 0
    for p in sim.peers.values():
        end = p.left if p.left is not None else cfg.duration
        if not p.started:
            if p.joined >= cfg.warmup and end - p.joined > cfg.startup_deadline:
                never_started += 1
            continue
        if p.joined >= cfg.warmup:
            startup.append(p.first_at - p.joined)
            if p.flash:
                flash_startup.append(p.first_at - p.joined)
        watch = sim.measured(p.first_at, end)
        if watch >= 10.0:
            rebuffer.append(p.measured_stall / watch)
            behind = max(p.play_time, end) - p.play_seq * cfg.chunk_duration
            lag.append(behind)
            extra.append(behind - p.edge_lag)
        late += p.late
        played += p.played
    total = sim.p2p_bytes + sim.cdn_bytes
    return SimReport(
        config=cfg,
        peers_mean=n_mean,
        upload_mean=u_mean / r if n_mean == 0 else u_mean / (n_mean * r),
        offload=sim.p2p_bytes / total if total else 0.0,
        bound=bound,
        edge_copies=sim.cdn_bytes / (r * span) if span > 0 else 0.0,
        rebuffer_p50=percentile(rebuffer, 50),
        rebuffer_p95=percentile(rebuffer, 95),
        continuity=1 - late / played if played else 0.0,
        startup_p50=percentile(startup, 50),
        startup_p95=percentile(startup, 95),
        flash_startup_p95=percentile(flash_startup, 95),
        lag_p50=percentile(lag, 50),
        lag_p95=percentile(lag, 95),
        extra_p50=percentile(extra, 50),
        extra_p95=percentile(extra, 95),
        control_overhead=sim.control_bytes / max(sim.media_all, 1),
        wasted=sim.wasted_bytes / total if total else 0.0,
        sessions=len(rebuffer),
        never_started=never_started,
        events=sim.events,
        wall_seconds=wall,
        windows=tuple(sim.windows),
    )
