"""``python -m xp2p.swarm.sim``: its arguments, and one simulated room's figures as a table.

`xp2p.swarm.sim.main` runs the simulation between the two (this module does not import the
simulator, so that no import runs in a circle)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from .metrics import SimReport, format_rows, format_windows, report_rows
from .sim_model import DEFAULT_UPLOAD_MIX, SimConfig


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


def show(report: SimReport, counts: Counter[str], args: argparse.Namespace) -> None:
    print(format_rows(report_rows(report)))
    if args.windows:
        print(format_windows(report.windows))
    if args.counts:
        print(dict(counts))
    print(
        f"{report.events} events, {report.wall_seconds:.1f} s wall, "
        f"mean {report.peers_mean:.0f} viewers, upload {report.upload_mean:.2f} x bitrate",
        file=sys.stderr,
    )
