"""Every use of aioquic's private attributes, in one module.

aioquic has no public gauge for a stream's unacknowledged bytes or the smoothed RTT, no hook
for stream receive windows that follow the reader, builds its pacer inside loss recovery
with no way to swap it, has no TLS exporter (the handover key) and no way to say "the path
changed, probe now" (a handover). xp2p needs all six, so it reaches inside here and only here;
``tests/unit/test_library_internals.py`` exercises each one against the installed aioquic
and fails loudly when a release moves one. (aioice's internals live likewise in
``xp2p.link.ice`` alone.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aioquic import tls
from aioquic.quic.congestion.base import QuicCongestionControl
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream


class ReaderState(Protocol):
    """What the receive window needs to know of a stream: bytes the application has not
    taken yet (``xp2p.link.transport.StreamState`` is one)."""

    unread: int


class ReceiveWindowQuic(QuicConnection):
    """aioquic's connection, with stream receive windows that follow the reader.

    aioquic raises a stream's window as data *arrives* (doubling it once half is used), so a
    reader that stops reading never slows the sender: its unread bytes pile up in memory
    without bound. Here the peer may send at most ``max_stream_data`` bytes beyond what the
    application has taken; streams the link does not track keep aioquic's behaviour.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The link's streams by id (``Link`` shares its dict); only those get reader windows.
        self.tracked: Mapping[int, ReaderState] = {}

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        # Called for every stream (HTTP/3 has seven) in every packet built: keep it cheap.
        if not stream.max_stream_data_local:
            return  # a stream we only send on: aioquic does nothing for it either
        stream_id = stream.stream_id
        tracked = None if stream_id is None else self.tracked.get(stream_id)
        if stream_id is None or tracked is None:
            super()._write_stream_limits(builder, space, stream)
            return
        window = self._configuration.max_stream_data
        limit = stream.receiver.starting_offset() - tracked.unread + window
        # Raise in steps of half a window, like aioquic, so MAX_STREAM_DATA frames stay rare.
        if limit - stream.max_stream_data_local >= window // 2:
            stream.max_stream_data_local = limit
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


def receive_window_due(quic: QuicConnection, stream_id: int, unread: int, window: int) -> bool:
    """Whether ``ReceiveWindowQuic`` would raise the stream's window in its next packet."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return False
    limit = stream.receiver.starting_offset() - unread + window
    return limit - stream.max_stream_data_local >= window // 2


def smoothed_rtt(quic: QuicConnection) -> float:
    """Smoothed RTT in seconds as QUIC's loss recovery measures it."""
    rtt: float = quic._loss._rtt_smoothed
    return rtt


def unacked_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to the stream and not yet acknowledged: aioquic keeps them in the
    sender's buffer."""
    stream = quic._streams.get(stream_id)
    return 0 if stream is None else len(stream.sender._buffer)


def max_datagram_size(pacer_or_controller: QuicPacketPacer | QuicCongestionControl) -> int:
    """The datagram size aioquic built a pacer or congestion controller with."""
    size: int = pacer_or_controller._max_datagram_size  # type: ignore[union-attr]
    return size


PacerFactory = Callable[[QuicCongestionControl, int], QuicPacketPacer | None]


def replace_pacer(quic: QuicConnection, factory: PacerFactory) -> None:
    """Swap the connection's pacer for ``factory(controller, max_datagram_size)``, unless the
    factory returns None (keep aioquic's). aioquic builds its pacer inside loss recovery and
    offers no hook."""
    recovery = quic._loss
    pacer = factory(recovery._cc, max_datagram_size(recovery._pacer))
    if pacer is not None:
        recovery._pacer = pacer


def application_secrets(quic: QuicConnection) -> tuple[bytes, bytes]:
    """(client, server) 1-RTT traffic secrets, once the handshake completed; the handover
    key is derived from them (``xp2p.link.handover.derive_key``). Read at HandshakeCompleted,
    before any key update."""
    crypto = quic._cryptos.get(tls.Epoch.ONE_RTT)
    send = None if crypto is None else crypto.send.secret
    recv = None if crypto is None else crypto.recv.secret
    if not send or not recv:
        raise ValueError("no 1-RTT keys yet")
    return (send, recv) if quic.configuration.is_client else (recv, send)


def restart_probes(quic: QuicConnection) -> None:
    """Forget the probe timeout's back-off: the path under the connection changed, so the
    silence that doubled it says nothing about the new one (RFC 9002 §6.2.1 resets it on
    a new path too). The caller then sends a PING and re-arms the timer."""
    quic._loss._pto_count = 0
