"""The handover's pure core: re-offer shape, its proof, replay protection and when to move."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xp2p.link.errors import LinkError
from xp2p.link.handover import (
    Action,
    Direction,
    PathWatch,
    SeqCheck,
    build,
    derive_key,
    is_handover,
    link_ref,
    parse,
    verify,
)
from xp2p.link.ice import IceParameters

KEY = derive_key(b"c" * 32, b"s" * 32)
ICE = IceParameters("uf", "p" * 22, ("1 1 udp 2130706431 10.0.0.1 4000 typ host",))


def test_key_depends_on_both_secrets_and_their_order() -> None:
    assert derive_key(b"a", b"b") != derive_key(b"b", b"a")
    assert derive_key(b"a", b"b") != derive_key(b"a", b"c")
    assert len(KEY) == 32 and len(link_ref(KEY)) == 32
    with pytest.raises(ValueError):
        derive_key(b"", b"b")


def test_round_trip_and_direction() -> None:
    offer = build(KEY, Direction.OFFER, 3, ICE, "full-cone")
    assert is_handover(offer) and not is_handover({"v": 1, "grant": "g"})
    message = parse(offer)
    assert (message.seq, message.ice, message.nat) == (3, ICE, "full-cone")
    verify(KEY, Direction.OFFER, message)
    # An offer's MAC does not pass as an answer's (nor the reverse): no reflection.
    with pytest.raises(LinkError) as reflected:
        verify(KEY, Direction.ANSWER, message)
    assert reflected.value.reason == "bad_handover"


@pytest.mark.parametrize(
    "field,value",
    [
        (("ice", "pwd"), "q" * 22),
        (("ice", "candidates"), ["1 1 udp 2130706431 6.6.6.6 4000 typ host"]),
        (("nat",), "open"),
        (("handover", "seq"), 4),
    ],
)
def test_any_change_breaks_the_proof(field: tuple[str, ...], value: Any) -> None:
    """The cloud relays the re-offer: it must not be able to steer it (new candidates, say)."""
    offer = copy.deepcopy(build(KEY, Direction.OFFER, 3, ICE, "full-cone"))
    target = offer
    for name in field[:-1]:
        target = target[name]
    target[field[-1]] = value
    with pytest.raises(LinkError) as refused:
        verify(KEY, Direction.OFFER, parse(offer))
    assert refused.value.reason == "bad_handover"


def test_another_links_key_is_refused() -> None:
    other = derive_key(b"x" * 32, b"y" * 32)
    offer = build(other, Direction.OFFER, 1, ICE, "unknown")
    offer["handover"]["ref"] = link_ref(KEY)  # names our link, proved with another key
    with pytest.raises(LinkError, match="proof does not match"):
        verify(KEY, Direction.OFFER, parse(offer))


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"v": 2, "handover": {}},
        {"v": 1},
        {"v": 1, "handover": "x"},
        {"v": 1, "handover": {"ref": "AB" * 16, "seq": 1, "mac": "0" * 64}, "ice": {}},
        {"v": 1, "handover": {"ref": "ab" * 16, "seq": 0, "mac": "0" * 64}},
        {"v": 1, "handover": {"ref": "ab" * 16, "seq": True, "mac": "0" * 64}},
        {"v": 1, "handover": {"ref": "ab" * 16, "seq": 2**40, "mac": "0" * 64}},
        {"v": 1, "handover": {"ref": "ab" * 16, "seq": 1, "mac": "0" * 63}},
        {"v": 1, "handover": {"ref": "ab" * 16, "seq": 1, "mac": "0" * 64}, "nat": 5},
        {"v": 1, "handover": {"ref": "ab" * 16, "seq": 1, "mac": "0" * 64}, "ice": []},
    ],
)
def test_malformed_is_bad_signal(doc: Any) -> None:
    with pytest.raises(LinkError) as bad:
        parse(doc)
    assert bad.value.reason == "bad_signal"


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=8))
def test_parse_never_raises_anything_else(doc: Any) -> None:
    for candidate in (doc, {"v": 1, "handover": doc}, {"v": 1, "handover": {"seq": doc}}):
        try:
            parse(candidate)
        except LinkError:
            pass


def test_seq_only_grows() -> None:
    seqs = SeqCheck()
    seqs.take(1)
    seqs.take(5)
    for old in (5, 3):
        with pytest.raises(LinkError, match="not newer"):
            seqs.take(old)
    seqs.take(6)


def test_path_watch_probes_then_moves_on_silence() -> None:
    watch = PathWatch(silence=0.8, probe_timeout=0.4)
    assert watch.step(0.5, last_received=0.0, address_gone=False) is Action.NONE
    assert watch.step(0.9, last_received=0.0, address_gone=False) is Action.PROBE
    assert watch.step(1.1, last_received=0.0, address_gone=False) is Action.NONE
    assert watch.step(1.3, last_received=0.0, address_gone=False) is Action.HANDOVER


def test_path_watch_waits_three_round_trips_on_a_long_path() -> None:
    watch = PathWatch(silence=0.5, probe_timeout=0.3)
    assert watch.step(0.6, 0.0, address_gone=False, rtt=0.2) is Action.PROBE
    assert watch.step(1.0, 0.0, address_gone=False, rtt=0.2) is Action.NONE  # 0.4 < 0.6
    assert watch.step(1.25, 0.0, address_gone=False, rtt=0.2) is Action.HANDOVER


def test_path_watch_answered_probe_is_no_handover() -> None:
    """An idle link's PING answered within a round trip: quiet, not dead."""
    watch = PathWatch(silence=0.8, probe_timeout=0.4)
    assert watch.step(0.9, last_received=0.0, address_gone=False) is Action.PROBE
    assert watch.step(1.0, last_received=0.95, address_gone=False) is Action.NONE
    assert watch.probe_sent_at is None
    assert watch.step(1.5, last_received=0.95, address_gone=False) is Action.NONE


def test_path_watch_address_gone_moves_at_once_and_bounds_attempts() -> None:
    watch = PathWatch(backoff=0.5, max_attempts=3)
    assert watch.step(0.0, 0.0, address_gone=True) is Action.HANDOVER
    watch.started()
    assert watch.step(0.1, 0.0, address_gone=True) is Action.NONE  # one at a time
    watch.finished(False, 1.0)
    assert watch.step(1.4, 0.0, address_gone=True) is Action.NONE  # backing off 0.5 s
    assert watch.step(1.5, 0.0, address_gone=True) is Action.HANDOVER
    watch.started()
    watch.finished(False, 2.0)
    assert watch.step(2.9, 0.0, address_gone=True) is Action.NONE  # then 1 s
    assert watch.step(3.0, 0.0, address_gone=True) is Action.HANDOVER
    watch.started()
    watch.finished(False, 3.0)
    assert watch.step(100.0, 0.0, address_gone=True) is Action.NONE  # three failed: give up


def test_path_watch_success_resets_and_waits_for_the_new_path() -> None:
    watch = PathWatch(silence=0.8)
    watch.started()
    watch.finished(True, 10.0)
    assert watch.attempts == 0
    # The new path's first datagram has not come yet: no immediate second handover.
    assert watch.step(10.5, last_received=5.0, address_gone=False) is Action.NONE
    assert watch.step(10.9, last_received=5.0, address_gone=False) is Action.PROBE


def test_both_ends_of_a_quic_handshake_derive_the_same_key() -> None:
    """``quic_internals.application_secrets`` against the installed aioquic: the client's
    and the server's key agree, and a second connection gets another."""
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import pull_quic_header

    from xp2p.link import quic_internals
    from xp2p.link.identity import LINK_SERVER_NAME, LinkIdentity

    identity = LinkIdentity.generate(common_name="t")

    def handshake() -> tuple[bytes, bytes]:
        client_config = QuicConfiguration(is_client=True, server_name=LINK_SERVER_NAME)
        client_config.cadata = identity.certificate_pem.encode()
        server_config = QuicConfiguration(is_client=False)
        server_config.certificate = identity.certificate
        server_config.private_key = identity.private_key
        client = QuicConnection(configuration=client_config)
        client.connect(("192.0.2.1", 1), now=0.0)
        first = client.datagrams_to_send(now=0.0)
        header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
        server = QuicConnection(
            configuration=server_config,
            original_destination_connection_id=header.destination_cid,
        )
        for data, _ in first:
            server.receive_datagram(data, ("192.0.2.2", 1), now=0.0)
        for _ in range(6):
            for data, _ in client.datagrams_to_send(now=0.0):
                server.receive_datagram(data, ("192.0.2.2", 1), now=0.0)
            for data, _ in server.datagrams_to_send(now=0.0):
                client.receive_datagram(data, ("192.0.2.1", 1), now=0.0)
        return (
            derive_key(*quic_internals.application_secrets(client)),
            derive_key(*quic_internals.application_secrets(server)),
        )

    first, second = handshake(), handshake()
    assert first[0] == first[1] and second[0] == second[1]
    assert first[0] != second[0]
    with pytest.raises(ValueError):
        quic_internals.application_secrets(
            QuicConnection(configuration=QuicConfiguration(is_client=True))
        )
