"""The chunk scheduler's behaviours, on a virtual clock (no sockets, no sleeping)."""

from __future__ import annotations

import random

from xp2p.swarm.scheduler import (
    AbandonPeer,
    Busy,
    CancelRequest,
    ChunkScheduler,
    EdgeRequest,
    PeerRequest,
    Playback,
    SchedulerConfig,
    UploadQueue,
)

D = 0.33
CONFIG = SchedulerConfig(chunk_duration=D, exploration=0.0)


def scheduler(config: SchedulerConfig = CONFIG, seed: int = 1) -> ChunkScheduler:
    return ChunkScheduler(config, random.Random(seed))


def requests(decisions: list[object]) -> list[object]:
    return [d for d in decisions if isinstance(d, PeerRequest | EdgeRequest)]


def test_near_deadline_goes_to_the_edge_far_to_peers() -> None:
    s = scheduler()
    s.add_peer("a", 0.0)
    for seq in range(100, 120):
        s.on_have("a", seq)
    # seq 100 is due in 0.5 s (inside the 0.9 s edge margin); 110 in 3.8 s.
    out = s.decide(0.0, Playback(100, 0.5), edge_latest=130)
    assert EdgeRequest(100) in out and EdgeRequest(101) in out  # 101 due at 0.83 s
    peer_seqs = [d.seq for d in out if isinstance(d, PeerRequest)]
    assert peer_seqs and all(seq >= 102 for seq in peer_seqs)
    assert not any(isinstance(d, EdgeRequest) and d.seq >= 103 for d in out)


def test_nothing_from_the_edge_that_it_does_not_have_yet() -> None:
    s = scheduler()
    out = s.decide(0.0, Playback(100, 0.1), edge_latest=99)
    assert requests(out) == []


def test_rarest_first_beyond_the_urgent_window() -> None:
    s = scheduler(SchedulerConfig(chunk_duration=D, exploration=0.0, max_peer_requests=1))
    for name in "abc":
        s.add_peer(name, 0.0)
    # Everything is due later than the urgent window; 210 is held by one peer, 209 by three.
    for seq in range(200, 210):
        for name in "abc":
            s.on_have(name, seq)
    s.on_have("c", 210)
    out = s.decide(0.0, Playback(200, 10.0), edge_latest=210)
    assert requests(out) == [PeerRequest(210, "c")]


def test_deadline_order_inside_the_urgent_window() -> None:
    s = scheduler(SchedulerConfig(chunk_duration=D, exploration=0.0, max_peer_requests=1))
    s.add_peer("a", 0.0)
    s.add_peer("b", 0.0)
    for seq in range(50, 56):
        s.on_have("a", seq)
    s.on_have("b", 55)  # rarer, but 50 is due first
    out = s.decide(0.0, Playback(50, 1.2), edge_latest=60)
    assert requests(out) == [PeerRequest(50, "a")]


def test_bandwidth_weighted_choice() -> None:
    s = scheduler(SchedulerConfig(chunk_duration=D, exploration=0.0, per_peer_requests=10))
    s.add_peer("fast", 0.0)
    s.add_peer("slow", 0.0)
    # Measure: fast delivers 80 kB in 0.1 s, slow in 2 s.
    for peer, seq, took in (("fast", 1, 0.1), ("slow", 2, 2.0)):
        s.on_have(peer, seq)
        s.decide(0.0, Playback(1, 50.0), edge_latest=0)
        s._pending.clear()  # white-box: force one request per peer to measure it
        s._peers[peer].outstanding[seq] = 0.0
        s.on_chunk(seq, peer, 80_000, took)
    chosen = []
    for seq in range(10, 200):
        s.on_have("fast", seq)
        s.on_have("slow", seq)
        chosen.append(s._choose(seq, 5.0))
    assert chosen.count("fast") > 5 * chosen.count("slow") > 0


def test_a_silent_peer_is_abandoned_after_about_two_seconds() -> None:
    s = scheduler()
    s.add_peer("quiet", 0.0)
    s.add_peer("good", 0.0)
    for seq in range(10, 20):
        s.on_have("quiet", seq)
    out = s.decide(0.0, Playback(10, 30.0), edge_latest=9)
    asked = [d.seq for d in out if isinstance(d, PeerRequest) and d.peer == "quiet"]
    assert asked
    t, abandoned_at = 0.0, None
    while t < 5.0 and abandoned_at is None:
        t = round(t + 0.1, 1)
        out = s.decide(t, Playback(10, 30.0), edge_latest=9)
        if AbandonPeer("quiet") in out:
            abandoned_at = t
    assert abandoned_at is not None and 1.9 <= abandoned_at <= 2.2
    assert "quiet" not in s.peers and "good" in s.peers
    # Its requests are free again: another holder gets them.
    for seq in asked:
        s.on_have("good", seq)
    out = s.decide(t + 0.1, Playback(10, 30.0), edge_latest=9)
    assert {d.peer for d in out if isinstance(d, PeerRequest)} == {"good"}


def test_a_slow_request_near_its_deadline_moves_to_the_edge() -> None:
    s = scheduler()
    s.add_peer("a", 0.0)
    s.on_have("a", 5)
    assert PeerRequest(5, "a") in s.decide(0.0, Playback(5, 3.0), edge_latest=5)
    out = s.decide(2.6, Playback(5, 3.0), edge_latest=5)  # 0.4 s left, nothing came
    assert CancelRequest(5, "a") in out and EdgeRequest(5) in out


def test_banned_peers_are_never_chosen() -> None:
    s = scheduler()
    s.add_peer("liar", 0.0)
    s.add_peer("honest", 0.0)
    s.ban_peer("liar")
    s.add_peer("liar", 1.0)  # a reconnect does not bring it back
    for seq in range(0, 30):
        s.on_have("liar", seq)
    assert "liar" not in s.peers and "liar" in s.banned
    out = s.decide(1.0, Playback(0, 20.0), edge_latest=-1)
    assert not any(isinstance(d, PeerRequest) and d.peer == "liar" for d in out)
    s.on_have("honest", 3)
    out = s.decide(1.1, Playback(0, 20.0), edge_latest=-1)
    assert requests(out) == [PeerRequest(3, "honest")]


def test_busy_peer_is_rested_and_others_asked() -> None:
    s = scheduler()
    for name in ("a", "b"):
        s.add_peer(name, 0.0)
        s.on_have(name, 7)
    first = requests(s.decide(0.0, Playback(7, 10.0), edge_latest=6))
    assert len(first) == 1 and isinstance(first[0], PeerRequest)
    s.on_refused(7, first[0].peer, 0.1, retry_after=0.3)
    second = requests(s.decide(0.1, Playback(7, 10.0), edge_latest=6))
    assert len(second) == 1 and isinstance(second[0], PeerRequest)
    assert second[0].peer != first[0].peer


def test_seed_pulls_every_new_chunk_from_the_edge() -> None:
    s = scheduler(SchedulerConfig(chunk_duration=D, seed=True))
    out = s.decide(0.0, Playback(40, 5.0), edge_latest=42)
    assert requests(out) == [EdgeRequest(40), EdgeRequest(41), EdgeRequest(42)]


def test_upload_cap_is_honoured() -> None:
    cap = 100_000.0  # bytes/s
    queue = UploadQueue(rate_cap=cap, max_backlog=20.0)
    now, sent = 0.0, []
    for seq in range(20):
        assert queue.offer("p", seq, 50_000, now) is None
    while (tx := queue.next_transmission(now)) is not None:
        sent.append(tx)
        now = tx.start_at + tx.duration
    # Any window from the first start holds at most cap x window (+ one chunk).
    assert len(sent) == 20
    assert sent[-1].start_at + sent[-1].duration >= 20 * 50_000 / cap - 1e-9
    # Past the backlog limit a request is refused at once, not queued for long.
    queue = UploadQueue(rate_cap=cap, max_backlog=1.0)
    answers = [queue.offer("p", seq, 50_000, 0.0) for seq in range(10)]
    assert sum(a is None for a in answers) == 3 and isinstance(answers[-1], Busy)
    assert queue.cancel("p", 0) and not queue.cancel("p", 0)


def test_download_only_never_serves() -> None:
    queue = UploadQueue(upload=False)
    for seq in range(10):
        assert isinstance(queue.offer("p", seq, 1000, float(seq)), Busy)
    assert queue.next_transmission(100.0) is None and queue.sent_bytes == 0


def test_a_seed_serves_only_fresh_chunks() -> None:
    queue = UploadQueue(rate_cap=1_250_000.0, max_backlog=1.0, fresh_chunks=3)
    for seq in range(100, 121):
        queue.hold(seq)
    assert queue.offer("p", 120, 82_500, 0.0) is None
    assert queue.offer("p", 117, 82_500, 0.0) is None
    # Older than 3 behind the newest held: refused at once, "not this chunk", not "full".
    assert queue.offer("p", 116, 82_500, 0.0) == Busy(116, 0.0)
    # What it is asked for does not move the line; what it holds does.
    queue.hold(130)
    assert queue.offer("q", 120, 82_500, 0.0) == Busy(120, 0.0)
    assert [queue.next_transmission(0.0) for _ in range(2)][-1] is not None
    # Everyone else (the default) serves any chunk it holds.
    plain = UploadQueue(rate_cap=1_250_000.0, max_backlog=1.0)
    plain.hold(130)
    assert plain.offer("p", 100, 82_500, 0.0) is None


def test_refusing_one_chunk_is_not_refusing_the_viewer() -> None:
    s = scheduler()
    for name in ("seed", "b"):
        s.add_peer(name, 0.0)
    s.on_have("seed", 7)
    s.on_have("seed", 8)
    s.on_have("b", 7)
    # Measure "seed" first, so its rate shows whether the refusal touched it.
    s._peers["seed"].outstanding[1] = 0.0  # white-box: a request long answered
    s.on_chunk(1, "seed", 82_500, 0.2)
    rate = s.peer_rate("seed")
    s.on_refused(7, "seed", 1.0, retry_after=0.0)
    assert s.peer_rate("seed") == rate
    out = requests(s.decide(1.0, Playback(7, 10.0), edge_latest=6))
    # 7 goes to the other holder; "seed" is not rested, so it is still asked for 8.
    assert PeerRequest(7, "b") in out and PeerRequest(8, "seed") in out
    assert PeerRequest(7, "seed") not in out
    # A real Busy (it is full) rests the peer and lowers its rate.
    s.on_refused(8, "seed", 1.1, retry_after=0.3)
    assert s.peer_rate("seed") < rate
    out = s.decide(1.1, Playback(7, 10.0), edge_latest=6)
    assert not any(isinstance(d, PeerRequest) and d.peer == "seed" for d in out)


def test_a_start_mid_gop_makes_the_whole_prefix_due_with_the_first_frame() -> None:
    s = scheduler()
    s.add_peer("a", 0.0)
    for seq in range(60, 66):
        s.on_have("a", seq)
    # Decode from keyframe chunk 60, show 64 first, at t = 1.2: all of 60..64 due then.
    start = Playback(60, 1.2, first_shown=64)
    out = s.decide(0.0, start, edge_latest=70)
    assert not any(isinstance(d, EdgeRequest) for d in out)  # 1.2 s left: neighbours first
    assert {d.seq for d in out if isinstance(d, PeerRequest)} <= set(range(60, 65))
    # Within the edge margin of the first frame, whatever is missing of it goes to the edge.
    out = s.decide(0.35, start, edge_latest=70)
    edge = {d.seq for d in out if isinstance(d, EdgeRequest)}
    assert edge and edge <= set(range(60, 65))
    # Without first_shown the prefix would be due a chunk apart, 60 at once: the old way.
    plain = scheduler()
    out = plain.decide(0.0, Playback(60, 1.2 - 4 * D), edge_latest=70)
    assert EdgeRequest(60) in out
