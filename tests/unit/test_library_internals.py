"""Guards for the aioquic and aioice internals xp2p reaches into.

aioquic's private attributes are used only in ``xp2p.link.quic_internals``, aioice's only in
``xp2p.link.ice``. Each test below exercises one of them against the installed release, so
an upgrade that renames or reshapes one fails here, by name, instead of as a stalled
download or a link that never nominates a relay.
"""

from __future__ import annotations

import inspect
import ipaddress

import aioice
import pytest
from aioice import stun
from aioice.ice import CandidatePair, StunProtocol, relayed_candidate, server_reflexive_candidate
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer

from xp2p.link import quic_internals
from xp2p.link.congestion import BBR, CUBIC, ModelPacer, Xp2pCubic, use_xp2p_pacer
from xp2p.link.ice import IceConnection


def client(congestion: str = "reno") -> quic_internals.ReceiveWindowQuic:
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"])
    config.congestion_control_algorithm = congestion
    quic = quic_internals.ReceiveWindowQuic(configuration=config)
    quic.connect(("192.0.2.1", 4433), now=0.0)
    return quic


def parameters(function: object) -> list[str]:
    assert callable(function)
    return list(inspect.signature(function).parameters)


# ---- aioquic ---------------------------------------------------------------------------


def test_unacked_bytes_reads_the_senders_buffer() -> None:
    quic = client()
    stream_id = quic.get_next_available_stream_id()
    assert quic_internals.unacked_bytes(quic, stream_id) == 0
    quic.send_stream_data(stream_id, b"x" * 1000)
    assert quic_internals.unacked_bytes(quic, stream_id) == 1000


def test_smoothed_rtt_is_loss_recoverys() -> None:
    quic = client()
    assert quic_internals.smoothed_rtt(quic) == 0.0  # no sample yet
    quic._loss._rtt_smoothed = 0.042
    assert quic_internals.smoothed_rtt(quic) == 0.042


def test_receive_window_due_reads_the_stream_limits() -> None:
    quic = client()
    stream_id = quic.get_next_available_stream_id()
    assert quic_internals.receive_window_due(quic, stream_id + 4000, 0, 1 << 20) is False
    quic.send_stream_data(stream_id, b"request")
    stream = quic._streams[stream_id]
    assert isinstance(stream.receiver.starting_offset(), int)
    assert isinstance(stream.max_stream_data_local, int)
    window = stream.max_stream_data_local
    # Nothing read and nothing unread: the limit equals the window, not half a window past it.
    assert quic_internals.receive_window_due(quic, stream_id, 0, window) is False
    assert quic_internals.receive_window_due(quic, stream_id, -window, window) is True


def test_stream_limit_hook_has_the_shape_receive_window_quic_overrides() -> None:
    assert parameters(QuicConnection._write_stream_limits) == ["self", "builder", "space", "stream"]
    assert callable(QuicConnection._on_max_stream_data_delivery)
    quic = client()
    assert isinstance(quic._configuration.max_stream_data, int)
    stream = quic._streams.get(quic.get_next_available_stream_id())
    assert stream is None  # streams appear on first use; the override handles both
    quic.tracked = {}
    quic.datagrams_to_send(now=0.0)  # builds packets through the overridden hook


def test_replace_pacer_swaps_loss_recoverys_pacer() -> None:
    quic = client(BBR)
    before = quic._loss._pacer
    assert isinstance(before, QuicPacketPacer)
    assert quic_internals.max_datagram_size(before) == quic._configuration.max_datagram_size
    cubic = client(CUBIC)._loss._cc
    assert isinstance(cubic, Xp2pCubic)
    assert quic_internals.max_datagram_size(cubic) == quic._configuration.max_datagram_size
    use_xp2p_pacer(quic)
    assert isinstance(quic._loss._pacer, ModelPacer)
    assert quic._loss._pacer is not before


# ---- aioice ----------------------------------------------------------------------------


def test_connection_private_state_ice_connection_uses() -> None:
    ice = aioice.Connection(ice_controlling=True)
    for name in (
        "_nominated",
        "_local_candidates",
        "_local_candidates_start",
        "_local_candidates_end",
        "_protocols",
        "_check_list",
        "_transport_policy",
    ):
        assert hasattr(ice, name), f"aioice.Connection lost {name}"
    assert isinstance(ice._nominated, dict)
    assert isinstance(ice._local_candidates, list)
    assert isinstance(ice._protocols, list)
    assert isinstance(ice._check_list, list)


def test_connection_methods_ice_connection_overrides() -> None:
    expected = {
        "gather_candidates": ["self"],
        "data_received": ["self", "data", "component"],
        "check_incoming": ["self", "message", "addr", "protocol"],
        "build_request": ["self", "pair", "nominate"],
        "check_complete": ["self", "pair"],
        "check_start": ["self", "pair"],
        "close": ["self"],
    }
    for name, params in expected.items():
        assert parameters(getattr(aioice.Connection, name)) == params, name
        assert name in IceConnection.__dict__ or name == "check_start"


async def test_stun_protocol_and_transaction_internals() -> None:
    # (async: StunProtocol makes a future on the running loop)
    assert parameters(StunProtocol.request) == [
        "self",
        "request",
        "addr",
        "integrity_key",
        "retransmissions",
    ]
    assert callable(StunProtocol.send_stun)
    protocol = StunProtocol(receiver=None)
    assert isinstance(protocol.transactions, dict)
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    transaction = stun.Transaction(request, ("192.0.2.1", 3478), protocol)
    # The connectivity-check retransmission timeout xp2p shortens (link/ice.py CHECK_RTO).
    assert isinstance(transaction._Transaction__timeout_delay, float)  # type: ignore[attr-defined]


async def test_every_check_transmission_goes_through_send_stun() -> None:
    """``link.ice`` counts the checks of an offer whose peer has not proved itself in
    ``_CheckProtocol.send_stun``: a transaction must send and resend through its protocol's
    ``send_stun``, and the protocol keep the receiver (the connection) it was made with."""
    sent: list[tuple[str, int]] = []

    class Counting(StunProtocol):  # type: ignore[misc]
        def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
            sent.append(addr)

    receiver = object()
    protocol = Counting(receiver=receiver)
    assert protocol.receiver is receiver
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    transaction = stun.Transaction(request, ("192.0.2.1", 3478), protocol, retransmissions=2)
    transaction._Transaction__timeout_delay = 0.001  # type: ignore[attr-defined]
    with pytest.raises(stun.TransactionTimeout):
        await transaction.run()
    assert sent == [("192.0.2.1", 3478)] * 3


def test_check_incoming_follows_the_integrity_check() -> None:
    """``link.ice`` takes a call of ``check_incoming`` as the peer's proof that it read our
    answer: aioice must call it only after checking MESSAGE-INTEGRITY with our password."""
    source = inspect.getsource(aioice.Connection.request_received)
    assert "check_message_integrity(self.local_password" in source
    assert source.index("check_message_integrity") < source.index("self.check_incoming(")


async def test_candidate_pair_fields() -> None:
    for state in ("IN_PROGRESS", "SUCCEEDED", "FAILED"):
        assert hasattr(CandidatePair.State, state)
    candidate = aioice.Candidate(
        foundation="1",
        component=1,
        transport="udp",
        priority=1,
        host=str(ipaddress.ip_address("192.0.2.2")),
        port=9,
        type="host",
    )
    protocol = StunProtocol(receiver=None)
    protocol.local_candidate = candidate
    pair = CandidatePair(protocol, candidate)
    for name in ("protocol", "remote_addr", "nominated", "task", "local_candidate", "state"):
        assert hasattr(pair, name), f"CandidatePair lost {name}"
    assert pair.remote_addr == ("192.0.2.2", 9)


@pytest.mark.parametrize(
    ("function", "names"),
    [
        (
            relayed_candidate,
            [
                "component",
                "hide_related_address",
                "protocol_factory",
                "turn_server",
                "turn_username",
                "turn_password",
                "turn_ssl",
                "turn_transport",
            ],
        ),
        (server_reflexive_candidate, ["protocol", "stun_server"]),
    ],
)
def test_candidate_gatherers_take_our_keywords(function: object, names: list[str]) -> None:
    assert set(names) <= set(parameters(function))


async def test_aiortc_peer_connection_takes_the_devices_certificate() -> None:
    """``aiortc_internals.use_certificate``: the offer's fingerprint and the DTLS transport
    are the given certificate's, not the fresh one aiortc makes per connection."""
    from aiortc import RTCPeerConnection

    from xp2p.link import aiortc_internals
    from xp2p.link.webrtc import WebRtcIdentity
    from xp2p.link.webrtc_sdp import check_answer_fingerprint

    identity = WebRtcIdentity()
    pc = RTCPeerConnection()
    try:
        aiortc_internals.use_certificate(pc, identity.certificate)
        pc.createDataChannel("xp2p")
        await pc.setLocalDescription(await pc.createOffer())
        sha256 = [
            line
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=fingerprint:sha-256")
        ]
        check_answer_fingerprint("\r\n".join(sha256), identity.fingerprint)
        transceiver_dtls = pc.sctp.transport if pc.sctp is not None else None
        assert transceiver_dtls is not None
        assert transceiver_dtls.getLocalParameters().fingerprints[0].value == (
            identity.certificate.getFingerprints()[0].value
        )
    finally:
        await pc.close()
