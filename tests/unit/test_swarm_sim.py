"""A small simulated swarm: sane figures, the bound respected, reproducible with a seed."""

from __future__ import annotations

import dataclasses
import math

from xp2p.swarm.metrics import report_rows
from xp2p.swarm.sim import SimConfig, Simulation, main
from xp2p.swarm.tracker import Tracker

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


def test_the_simulated_edge_is_the_tracker() -> None:
    """Neighbour lists and seeds are the edge's `Tracker`'s, not a picking of the sim's own."""
    sim = Simulation(SMALL)
    sim.run()
    assert isinstance(sim.tracker, Tracker)
    assert set(sim.seeds) <= set(sim.tracker.seeds()) and sim.seeds
    for name, peer in sim.online.items():
        tracked = sim.tracker.peers[name]
        assert set(peer.listed) == set(tracked.out)  # what the edge last pushed
        assert tracked.upload == peer.uploads and peer.is_seed == (name in sim.seeds)


# Long enough, with churn fast enough, to show the decay the seed rule and the link timeouts
# cure: before them this run fell from 0.96 in its first 30 s windows to 0.65-0.8 in its last,
# and stayed there. One seed, as in a small room, is where the trap bites hardest. A seed
# that vanishes without a word costs a window a dip, not a decay: the tracker replaces it
# once it misses three stats reports (`SILENT_AFTER`), and meanwhile nobody pulls new
# chunks from the edge ahead of time (0.78-0.87 in such windows here, the next one back at
# 0.95). Hence the mean of the second half, and a floor for every window. About 5 s.
LONG = SimConfig(peers=40, duration=300.0, mean_session=60.0, flash_joins=20, seeds=1, seed=1)


def test_offload_holds_over_a_long_run() -> None:
    report = Simulation(LONG).run()
    offload = [w.offload for w in report.windows]
    assert len(offload) >= 8
    early = sum(offload[:2]) / 2
    assert early > 0.9
    late = offload[len(offload) // 2 :]
    assert sum(late) / len(late) >= early - 0.05 and min(offload) > 0.75, offload
    assert report.offload > 0.9 and report.rebuffer_p95 <= 0.005


def test_without_the_seed_rule_offload_decays() -> None:
    """The trap itself: a seed that serves old chunks (deadline rescues) spends on them the
    first-hop copies of new chunks, which then spread late and need rescuing in turn."""
    report = Simulation(dataclasses.replace(LONG, seed_fresh_chunks=None)).run()
    offload = [w.offload for w in report.windows]
    late = offload[len(offload) // 2 :]
    assert sum(late) / len(late) < 0.85, offload
