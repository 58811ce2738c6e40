"""The simulator's figures, as the issue asks for them, beside the bound and the targets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sim import SimConfig


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; NaN for no values (a missing figure, never a made-up 0)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Window:
    """One stretch of a run (`SimConfig.window` long): a decay shows up as a trend here."""

    start: float
    end: float
    offload: float  #: as `SimReport.offload`, over this window only
    online: int  #: viewers online at its end
    neighbours: float  #: mean links per viewer at its end
    dead_neighbours: float  #: of those, mean links to viewers already gone
    refused: float  #: share of peer requests answered `Busy`
    rate_estimate: float  #: median of (a viewer's rate estimate / the peer's upload cap)
    seed_fresh: float  #: share of the seeds' uploads that were chunks < 1 s old


@dataclass(frozen=True)
class SimReport:
    config: SimConfig
    peers_mean: float  #: viewers online, time average over the measured span
    upload_mean: float  #: their mean upload capacity, in multiples of the bitrate
    offload: float  #: p2p / (p2p + cdn) bytes, duplicates from peers not counted as p2p
    bound: float  #: 1 - max(r, N r - Σu) / (N r)
    edge_copies: float  #: edge egress / bitrate
    rebuffer_p50: float  #: per session: stalled time / watched time
    rebuffer_p95: float
    continuity: float  #: share of chunks that were in the buffer when due
    startup_p50: float  #: join -> first keyframe chunk, seconds
    startup_p95: float
    flash_startup_p95: float
    lag_p50: float  #: playhead behind the edge's live edge, seconds
    lag_p95: float
    extra_p50: float  #: lag minus the lag of the same viewer pulling from the edge, seconds
    extra_p95: float
    control_overhead: float  #: swarm protocol bytes / media bytes
    wasted: float  #: duplicate chunk bytes / all chunk bytes
    sessions: int  #: sessions watched >= 10 s in the measured span
    never_started: int
    events: int
    wall_seconds: float
    windows: tuple[Window, ...] = ()


def report_rows(report: SimReport) -> list[dict[str, Any]]:
    """Rows {metric, value, unit, baseline, target}; the baseline is the theoretical bound
    for offload, and the no-P2P case (every viewer from the edge) for edge egress. Extra
    latency is over the same viewer pulling straight from the edge (from the newest keyframe
    chunk, as a player reading the edge's GOP cache does)."""
    n = report.config.peers
    big = n >= 1000
    return [
        {
            "metric": f"offload_n{n}",
            "value": report.offload,
            "unit": "ratio",
            "baseline": report.bound,
            "target": ">= 0.97" if big else None,
        },
        {
            "metric": f"offload_no_p2p_n{n}",
            "value": 0.0,
            "unit": "ratio",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"edge_egress_n{n}",
            "value": report.edge_copies,
            "unit": "copies",
            "baseline": report.peers_mean,
            "target": None,
        },
        {
            "metric": f"rebuffer_p50_n{n}",
            "value": report.rebuffer_p50,
            "unit": "ratio",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"rebuffer_p95_n{n}",
            "value": report.rebuffer_p95,
            "unit": "ratio",
            "baseline": None,
            "target": "<= 0.005" if big else None,
        },
        {
            "metric": f"continuity_n{n}",
            "value": report.continuity,
            "unit": "ratio",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"startup_p50_n{n}",
            "value": report.startup_p50,
            "unit": "s",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"startup_p95_n{n}",
            "value": report.startup_p95,
            "unit": "s",
            "baseline": None,
            "target": "<= 1",
        },
        {
            "metric": f"flash_startup_p95_n{n}",
            "value": report.flash_startup_p95,
            "unit": "s",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"latency_p50_n{n}",
            "value": report.lag_p50,
            "unit": "s",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"latency_p95_n{n}",
            "value": report.lag_p95,
            "unit": "s",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"extra_latency_p50_n{n}",
            "value": report.extra_p50,
            "unit": "s",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"extra_latency_p95_n{n}",
            "value": report.extra_p95,
            "unit": "s",
            "baseline": None,
            "target": "<= 1.5",
        },
        {
            "metric": f"control_overhead_n{n}",
            "value": report.control_overhead,
            "unit": "ratio",
            "baseline": None,
            "target": None,
        },
        {
            "metric": f"duplicate_bytes_n{n}",
            "value": report.wasted,
            "unit": "ratio",
            "baseline": None,
            "target": None,
        },
    ]


def format_rows(rows: list[dict[str, Any]]) -> str:
    return _table(["metric", "value", "unit", "baseline", "target"], rows)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(header: list[str], rows: list[dict[str, Any]]) -> str:
    cells = [header] + [[_fmt(r[h]) for h in header] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def format_windows(windows: tuple[Window, ...]) -> str:
    rows = [
        {
            "window, s": f"{w.start:.0f}-{w.end:.0f}",
            "offload": w.offload,
            "online": w.online,
            "links": w.neighbours,
            "dead links": w.dead_neighbours,
            "refused": w.refused,
            "rate est/cap": w.rate_estimate,
            "seed fresh": w.seed_fresh,
        }
        for w in windows
    ]
    if not rows:
        return ""
    return _table(list(rows[0]), rows)
