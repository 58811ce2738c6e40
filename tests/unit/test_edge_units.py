"""The edge's sans-IO parts: tracker (neighbours, seeds), peer tokens, the chunk store."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.cloud.edge.store import ChunkStore, Lookup
from xp2p.flv import FlvHeader
from xp2p.swarm import Chunk, InitChunk, peer_token
from xp2p.swarm import edge_messages as messages
from xp2p.swarm import edge_routes as routes
from xp2p.swarm.edge_messages import PeerStats
from xp2p.swarm.tracker import SILENT_AFTER, Tracker, TrackerConfig

NOW = 1_800_000_000.0


def _tracker(seed: int = 1, **config: object) -> Tracker:
    return Tracker(TrackerConfig(**config), rng=random.Random(seed))  # type: ignore[arg-type]


def _fill(tracker: Tracker, count: int, *, upload_every: int = 1, start: int = 0) -> None:
    for i in range(start, start + count):
        tracker.join(f"p{i}", "F" * 43, "open", i % upload_every == 0, NOW + i)


# --- tracker ------------------------------------------------------------------------------------


def test_every_viewer_gets_4_to_8_uploaders_and_no_uploader_is_overloaded() -> None:
    tracker = _tracker()
    _fill(tracker, 300, upload_every=3)  # a third upload
    for peer in tracker.peers.values():
        assert len(peer.out) <= 8 and peer.degree >= 4, peer
        assert all(tracker.peers[n].upload for n in peer.out)
        assert peer.peer_id not in peer.out
        if peer.upload:
            assert peer.degree <= tracker.config.max_degree
        else:
            assert len(peer.out) >= 4
    for peer in tracker.peers.values():  # directed, and each link known at both ends
        for other in peer.out:
            assert peer.peer_id in tracker.peers[other].inbound
            assert other not in peer.inbound


def test_download_only_viewers_are_never_handed_out() -> None:
    tracker = _tracker()
    _fill(tracker, 60, upload_every=4)
    handed = {n for p in tracker.peers.values() for n in p.out}
    assert handed and all(tracker.peers[n].upload for n in handed)
    assert tracker.seeds() and all(tracker.peers[s].upload for s in tracker.seeds())


def test_early_joiners_are_topped_up_when_uploaders_arrive() -> None:
    tracker = _tracker()
    update = tracker.join("watcher", "F" * 43, "open", False, NOW)
    assert update.neighbours == {"watcher": ()}  # nobody to hand out yet
    for i in range(5):
        update = tracker.join(f"u{i}", "F" * 43, "open", True, NOW + i)
    assert len(tracker.peers["watcher"].out) >= 4


def test_seeds_are_about_2_percent_and_the_fastest_uploaders() -> None:
    tracker = _tracker()
    _fill(tracker, 200)
    assert len(tracker.seeds()) == 4  # 2 % of 200
    for i, peer_id in enumerate(p for p in tracker.peers if tracker.peers[p].upload):
        tracker.report(peer_id, PeerStats(), NOW)
        tracker.report(peer_id, PeerStats(uploaded_bytes=i * 10_000), NOW + 2)
    update = tracker.select_seeds()
    fastest = sorted((p for p in tracker.peers.values() if p.upload), key=lambda p: -p.upload_rate)[
        :4
    ]
    assert set(tracker.seeds()) == {p.peer_id for p in fastest}
    assert {p for p, seed in update.seeds.items() if seed} == set(tracker.seeds())
    for seed in tracker.seeds():  # a seed is the swarm's way in: a full list of takers
        assert len(tracker.peers[seed].out) == tracker.config.max_neighbours


def test_at_least_one_seed_and_none_without_uploaders() -> None:
    tracker = _tracker()
    tracker.join("d", "F" * 43, "open", False, NOW)
    assert tracker.seeds() == []
    update = tracker.join("u", "F" * 43, "open", True, NOW)
    assert tracker.seeds() == ["u"] and update.seeds == {"u": True}
    update = tracker.leave("u")
    assert tracker.seeds() == [] and update.neighbours == {"d": ()}


def test_seeds_do_not_flap_on_small_differences() -> None:
    tracker = _tracker()
    for name in ("a", "b"):
        tracker.join(name, "F" * 43, "open", True, NOW)
        tracker.report(name, PeerStats(), NOW)
    (seed,) = tracker.seeds()
    other = "b" if seed == "a" else "a"
    tracker.report(seed, PeerStats(uploaded_bytes=100_000), NOW + 1)
    tracker.report(other, PeerStats(uploaded_bytes=110_000), NOW + 1)
    assert not tracker.select_seeds().seeds and tracker.seeds() == [seed]
    tracker.report(other, PeerStats(uploaded_bytes=2_000_000), NOW + 2)
    assert tracker.select_seeds().seeds == {seed: False, other: True}


def test_a_seed_that_stops_reporting_is_replaced() -> None:
    """A viewer that vanished keeps its WebSocket open at the edge until the heartbeat fails
    (about 30 s); it is not left a seed, nor made one, after missing three reports."""
    tracker = _tracker()
    for name in ("a", "b"):
        tracker.join(name, "F" * 43, "open", True, NOW)
        tracker.report(name, PeerStats(), NOW)
    (seed,) = tracker.seeds()
    other = "b" if seed == "a" else "a"
    tracker.report(seed, PeerStats(uploaded_bytes=1_000_000), NOW + 2)
    for t in range(1, 10):  # only the other one goes on reporting, slower than the seed was
        tracker.report(other, PeerStats(uploaded_bytes=t * 10), NOW + 2 * t)
    quiet = NOW + 2 + SILENT_AFTER
    assert not tracker.select_seeds(quiet).seeds  # not silent for long enough yet
    assert not tracker.select_seeds().seeds  # no clock given: rates alone, as before
    assert tracker.select_seeds(quiet + 1).seeds == {seed: False, other: True}
    assert not tracker.join("c", "F" * 43, "open", True, NOW + 19).seeds  # not the silent one
    assert tracker.leave(other, NOW + 19).seeds == {"c": True}


def test_a_leaver_is_replaced_in_every_list_that_held_it() -> None:
    tracker = _tracker()
    _fill(tracker, 40)
    gone = max(tracker.peers.values(), key=lambda p: len(p.inbound))
    holders = set(gone.inbound)
    update = tracker.leave(gone.peer_id)
    assert holders <= set(update.neighbours)
    for holder in holders:
        ids = {n.peer_id for n in update.neighbours[holder]}
        assert gone.peer_id not in ids and len(ids) >= 4
        assert tuple(update.neighbours[holder]) == tracker.neighbours_of(holder)
    assert all(gone.peer_id not in p.inbound and gone.peer_id not in p.out
               for p in tracker.peers.values())  # fmt: skip


def test_need_neighbours_drops_and_never_returns_the_excluded() -> None:
    tracker = _tracker()
    _fill(tracker, 20)
    peer = tracker.peers["p19"]
    bad = tuple(peer.out[:2])
    update = tracker.need_neighbours("p19", bad)
    ids = {n.peer_id for n in update.neighbours["p19"]}
    assert not ids & set(bad) and len(ids) == tracker.config.max_neighbours
    for b in bad:
        assert "p19" not in tracker.peers[b].inbound


def test_relay_only_nat_pairs_are_handed_out_last() -> None:
    tracker = _tracker()
    for i in range(6):
        tracker.join(f"sym{i}", "F" * 43, "symmetric", True, NOW)
    for i in range(6):
        tracker.join(f"cone{i}", "F" * 43, "full-cone", True, NOW)
    tracker.join("me", "F" * 43, "symmetric", False, NOW)
    assert all(n.startswith("cone") for n in tracker.peers["me"].out)


def test_room_totals_keep_what_departed_peers_reported() -> None:
    tracker = _tracker()
    _fill(tracker, 3)
    tracker.report("p0", PeerStats(p2p_bytes=100, stalls=1), NOW)
    tracker.report("p1", PeerStats(p2p_bytes=50), NOW)
    tracker.leave("p0")
    totals = tracker.totals()
    assert (totals.p2p_bytes, totals.stalls) == (150, 1)


# --- peer tokens --------------------------------------------------------------------------------


def _token(key: Ed25519PrivateKey, *, room: str = "R" * 22, exp: float = NOW + 600) -> str:
    return peer_token.sign_peer_token(key, peer_token.PeerToken(room, "peer1", "F" * 43, int(exp)))


def test_a_genuine_token_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    token = peer_token.verify_peer_token(_token(key), key.public_key(), now=NOW, room="R" * 22)
    assert token == peer_token.PeerToken("R" * 22, "peer1", "F" * 43, int(NOW + 600))


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("forged", "bad_signature"),
        ("tampered", "bad_signature"),
        ("expired", "expired"),
        ("other_room", "wrong_room"),
        ("own", "own_peer"),
        ("garbage", "malformed"),
        ("oversize", "malformed"),
    ],
)
def test_bad_tokens_are_refused(case: str, reason: str) -> None:
    key = Ed25519PrivateKey.generate()
    token = _token(key)
    kwargs: dict[str, object] = {"now": NOW, "room": "R" * 22}
    if case == "forged":
        token = _token(Ed25519PrivateKey.generate())
    elif case == "tampered":
        body, _, _sig = _token(key, room="S" * 22).partition(".")
        token = f"{body}.{token.partition('.')[2]}"
    elif case == "expired":
        kwargs["now"] = NOW + 600 + 31
    elif case == "other_room":
        kwargs["room"] = "S" * 22
    elif case == "own":
        kwargs["not_peer"] = "peer1"
    elif case == "garbage":
        token = "not.a.token"
    else:
        token = "A" * (routes.MAX_TOKEN_LENGTH + 1)
    with pytest.raises(peer_token.TokenError) as err:
        peer_token.verify_peer_token(token, key.public_key(), **kwargs)  # type: ignore[arg-type]
    assert err.value.reason == reason


def test_room_id_and_message_shapes() -> None:
    room = routes.room_id("http://127.0.0.1:8081/live/test.flv")
    assert routes.is_room_id(room) and len(room) == 22
    signal = messages.parse_peer_message('{"type":"offer","to":"b","request_id":"r","offer":{}}')
    assert isinstance(signal, messages.Signal)
    out = signal.relayed("a").to_json(outgoing=True)
    assert out == {"type": "offer", "from": "a", "request_id": "r", "offer": {}}
    assert messages.parse_edge_message(str(out).replace("'", '"')) == messages.Signal(
        "offer", "a", "r", {}
    )
    for bad, code in [
        ("[]", "bad_request"),
        ('{"type":"offer","to":"b c","request_id":"r","offer":{}}', "bad_request"),
        ('{"type":"offer","to":"b","request_id":"","offer":{}}', "bad_request"),
        ('{"type":"offer","to":"b","request_id":1,"offer":{"x":"' + "y" * 20000 + '"}}',
         "bad_request"),
        ('{"type":"offer","to":"b","request_id":1,"offer":{"x":"' + "y" * 40000 + '"}}',
         "frame_too_large"),
        ('{"type":"need_neighbours","exclude":"all"}', "bad_request"),
    ]:  # fmt: skip
        with pytest.raises(messages.MessageError) as err:
            messages.parse_peer_message(bad)
        assert err.value.code == code


# --- chunk store --------------------------------------------------------------------------------


def _chunk(seq: int, key: bool = False, duration: int = 330) -> Chunk:
    return Chunk(1, seq, 0, seq * duration, duration, key, b"x" * 100)


def test_store_keeps_30_s_and_answers_gone_and_not_yet() -> None:
    store = ChunkStore(keep_seconds=30)
    store.add_init(InitChunk(1, 0, FlvHeader(), b""), b"init")
    for seq in range(200):  # 66 s of 0.33 s chunks
        store.add(_chunk(seq, key=seq % 3 == 0), b"c%d" % seq)
    assert 30_000 <= store.held_ms < 30_000 + 330
    assert store.lookup(0) == (Lookup.GONE, None)
    assert store.lookup(199) == (Lookup.FOUND, b"c199")
    assert store.lookup(200) == (Lookup.NOT_YET, None)
    assert store.first_seq is not None and store.lookup(store.first_seq)[0] is Lookup.FOUND
    assert (store.live_seq, store.keyframe_seq) == (199, 198)
    with pytest.raises(ValueError, match="does not follow"):
        store.add(_chunk(500), b"")


def test_store_is_bounded_in_bytes_whatever_the_timestamps() -> None:
    store = ChunkStore(keep_seconds=30, max_bytes=10_000)
    for seq in range(100):
        store.add(_chunk(seq, duration=0), b"y" * 1000)
    assert store.held_bytes <= 10_000 and len(store) == 10
