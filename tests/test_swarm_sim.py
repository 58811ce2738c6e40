"""A small simulated swarm: sane figures, the bound respected, reproducible with a seed."""

from __future__ import annotations

import dataclasses
import math

from xp2p.swarm.metrics import report_rows
from xp2p.swarm.sim import SimConfig, Simulation, main

SMALL = SimConfig(peers=30, duration=60.0, warmup=15.0, flash_joins=10, seed=7)


def test_small_swarm_offloads_the_edge_within_the_bound() -> None:
    report = Simulation(SMALL).run()
    assert 0.5 < report.offload < report.bound < 1
    assert report.edge_copies < 0.5 * report.peers_mean
    assert 0.9 <= report.continuity <= 1
    assert report.sessions > 10
    for row in report_rows(report):
        value = row["value"]
        assert isinstance(value, float) and not math.isnan(value) and value >= 0, row


def test_same_seed_same_figures() -> None:
    first = Simulation(SMALL).run()
    again = Simulation(SMALL).run()
    other = Simulation(dataclasses.replace(SMALL, seed=8)).run()
    strip = {"wall_seconds": 0.0}
    assert dataclasses.replace(first, **strip) == dataclasses.replace(again, **strip)
    assert other.offload != first.offload


def test_no_upload_means_no_offload() -> None:
    report = Simulation(dataclasses.replace(SMALL, upload_mix=((1.0, 0.0),))).run()
    assert report.offload == 0 and report.bound == 1 - 1.0
    assert report.rebuffer_p95 <= 0.01  # the edge alone still carries everyone


def test_command_line(capsys: object) -> None:
    assert main(["--peers", "10", "--duration", "25", "--warmup", "10"]) == 0
