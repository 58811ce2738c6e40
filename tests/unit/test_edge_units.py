"""The edge's sans-IO parts: tracker (neighbours, seeds), peer tokens, the chunk store, and
the checks against issue 10's attacks (source policy, URL forms, buffer budget, stats bounds)."""

from __future__ import annotations

import random
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.cloud.config import ConfigError
from xp2p.cloud.edge import EdgeConfig
from xp2p.cloud.edge.peers import PeerSession
from xp2p.cloud.edge.policy import (
    PolicyResolver,
    SourcePolicy,
    SourceRefused,
    SourceUnresolved,
    parse_allowed,
)
from xp2p.cloud.edge.store import BufferBudget, ChunkStore, Lookup
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


def test_store_is_bounded_by_age_when_timestamps_are_frozen() -> None:
    store = ChunkStore(keep_seconds=30)
    for seq in range(1000):  # one 0 ms chunk a second for 1000 s
        store.add(_chunk(seq, duration=0), b"z" * 10, now=1000.0 + seq)
    assert len(store) <= 61 and store.held_bytes <= 610


def test_budget_bounds_all_rooms_and_the_biggest_gives_way() -> None:
    budget = BufferBudget(50_000)
    quiet = ChunkStore(keep_seconds=30, max_bytes=1 << 20, budget=budget)
    hog = ChunkStore(keep_seconds=30, max_bytes=1 << 20, budget=budget)
    for seq in range(10):
        quiet.add(_chunk(seq), b"q" * 1000)
    for seq in range(500):  # a hostile source: 0 ms chunks, 5 MB
        hog.add(_chunk(seq, duration=0), b"h" * 10_000)
    assert budget.used == quiet.held_bytes + hog.held_bytes <= 50_000
    assert len(quiet) == 10  # the quiet room kept all it had
    hog.clear()
    assert budget.used == quiet.held_bytes and len(hog) == 0 and hog.init_data is None


# --- against SSRF (issue 10 item 2) ----------------------------------------------------------

REFUSED_HOSTS = [
    "127.0.0.1", "localhost", "0x7f000001", "2130706433", "[::1]", "[::ffff:127.0.0.1]",
    "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "224.0.0.1", "0.0.0.0",
    "100.64.0.1", "240.0.0.1", "[fe80::1]", "[fc00::1]", "[64:ff9b::7f00:1]", "[::]",
    "192.0.2.7",
]  # fmt: skip


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_sources_on_internal_addresses_are_refused(host: str) -> None:
    with pytest.raises(SourceRefused):
        await SourcePolicy().check(f"http://{host}:8080/live/x.flv")


async def test_public_and_allowed_sources_pass() -> None:
    await SourcePolicy().check("http://8.8.8.8/x.flv")
    await SourcePolicy().check("https://[2001:4860:4860::8888]:8443/x.flv")
    policy = SourcePolicy(parse_allowed(("HTTP://127.0.0.1:8090",)))
    await policy.check("http://127.0.0.1:8090/live/test.flv?x=1")
    for other in ("http://127.0.0.1:8091/x", "https://127.0.0.1:8090/x", "http://localhost:8090/"):
        with pytest.raises(SourceRefused):
            await policy.check(other)
    assert policy.host_is_allowed("127.0.0.1", 8090) and not policy.host_is_allowed("x", 8090)
    with pytest.raises(ValueError, match="origin"):
        parse_allowed(("ftp://x",))


async def test_the_resolver_drops_internal_answers_dns_rebinding() -> None:
    class Rebinding(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                ResolveResult(
                    hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0
                )
                for a in ("127.0.0.1", "93.184.215.14")
            ]

        async def close(self) -> None:
            pass

    resolver = PolicyResolver(SourcePolicy(parse_allowed(("http://allowed:80",))), Rebinding())
    assert [r["host"] for r in await resolver.resolve("evil.example", 80)] == ["93.184.215.14"]
    assert len(await resolver.resolve("allowed", 80)) == 2  # an allowed origin's host
    with pytest.raises(OSError, match="no public address"):
        await PolicyResolver(SourcePolicy(), _OnlyLoopback()).resolve("evil.example", 80)


class _OnlyLoopback(AbstractResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


def test_urls_are_normalised_for_rooms_and_redacted_for_logs() -> None:
    same = [
        "http://origin.example/live/a.flv?t=1",
        "HTTP://Origin.Example:80/live/a.flv?t=1",
        "http://origin.example./live/a.flv?t=1#frag",
    ]
    assert len({routes.room_id(u) for u in same}) == 1
    assert routes.room_id("http://origin.example/live/a.flv?t=2") != routes.room_id(same[0])
    assert routes.normalise_url("https://H:443") == "https://h/"
    assert routes.url_origin("https://H/x") == "https://h:443"
    assert routes.url_origin("http://[::1]/") == "http://[::1]:80"
    redacted = routes.redact_url("http://user:p%40ss@cam.example:8080/live?token=SECRET&a=b#x")
    assert redacted == "http://cam.example:8080/live?token=&a="
    assert "SECRET" not in redacted and "p%40ss" not in redacted


# --- signals and stats (issue 10 item 7) ------------------------------------------------------


def test_only_assigned_neighbours_are_linked() -> None:
    tracker = _tracker()
    _fill(tracker, 30)
    peer = tracker.peers["p0"]
    for other in tracker.peers:
        expected = other in peer.out or other in peer.inbound
        assert tracker.linked("p0", other) == expected == tracker.linked(other, "p0")
    assert not tracker.linked("nobody", "p0")
    assert any(not tracker.linked("p0", o) for o in tracker.peers if o != "p0")


def test_impossible_stats_are_refused_and_not_counted() -> None:
    tracker = _tracker()
    tracker.join("a", "F" * 43, "open", True, NOW)
    assert tracker.report("a", PeerStats(p2p_bytes=5000, stalls=1), NOW + 2)
    assert not tracker.report("a", PeerStats(p2p_bytes=2**62), NOW + 4)
    assert not tracker.report("a", PeerStats(uploaded_bytes=routes.REPORT_SLACK + 1), NOW)
    assert not tracker.report("a", PeerStats(stalls=10**6), NOW + 4)
    assert not tracker.report("a", PeerStats(neighbours=10**6), NOW + 4)
    assert tracker.totals().p2p_bytes == 5000 and tracker.totals().stalls == 1
    assert tracker.report("a", PeerStats(p2p_bytes=routes.MAX_REPORT_RATE * 10), NOW + 10)
    assert not tracker.report("ghost", PeerStats(), NOW)


def test_signal_bucket_refuses_a_burst_beyond_its_size() -> None:
    bucket = PeerSession.__new__(PeerSession)
    bucket._tokens, bucket._tokens_at = float(routes.SIGNAL_BURST), None
    allowed = sum(bucket.may_signal(100.0) for _ in range(100))
    assert allowed == routes.SIGNAL_BURST
    assert bucket.may_signal(100.0 + 1 / routes.SIGNAL_RATE + 1e-6)
    assert not bucket.may_signal(100.0 + 1 / routes.SIGNAL_RATE + 2e-6)


def test_edge_config_checks_the_new_fields() -> None:
    config = EdgeConfig.from_dict(
        {"allowed_sources": ["http://127.0.0.1:8081"], "source_products": {
            "http://127.0.0.1:8081": "DEMO"}, "max_buffer_bytes": 1 << 28, "join_grace": 5}
    )  # fmt: skip
    assert config.product_of("http://127.0.0.1:8081/live/x.flv") == "DEMO"
    assert config.product_of("http://127.0.0.1:8082/live/x.flv") is None
    assert config.source_policy().is_allowed_origin("http://127.0.0.1:8081/a")
    cases: list[tuple[dict[str, object], str]] = [
        ({"allowed_sources": ["gopher://x"]}, "allowed_sources"),
        ({"allowed_sources": "http://x"}, "allowed_sources"),
        ({"max_buffer_bytes": 1 << 20}, "max_buffer_bytes"),
        ({"join_grace": 99}, "join_grace"),
        ({"max_rooms_per_app": 0}, "max_rooms_per_app"),
    ]
    for doc, field in cases:
        with pytest.raises(ConfigError, match=rf"edge\.{field}"):
            EdgeConfig.from_dict(doc)


async def test_a_host_that_does_not_resolve_is_unavailable_not_refused() -> None:
    with pytest.raises(SourceUnresolved):
        await SourcePolicy().check("http://no-such-host.invalid/x.flv")


def test_bad_frames_are_forgiven_slowly() -> None:
    session = PeerSession.__new__(PeerSession)
    session.errors, session._errors_at = 0.0, None
    assert [session.penalise(0.0) for _ in range(3)] == [1.0, 2.0, 3.0]
    assert session.penalise(120.0) == pytest.approx(2.0)  # two forgiven in two minutes
    assert session.penalise(10_000.0) == 1.0
