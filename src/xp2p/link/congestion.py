"""Congestion control and pacing tuned for live video's first frame.

A viewer's first request is answered with the FLV header, the sequence headers and the
current GOP at once (DESIGN: first frame costs one round trip). aioquic's cubic starts with
RFC 9002's 10-datagram window (~12 KB) and paces it over a whole RTT, so a 20-40 KB keyframe
took two or three round trips (bench/first_frame.py: 150 ms at 100 ms RTT, 207 ms p95).
``xp2p-cubic`` is cubic with a 32-datagram initial window (what Google QUIC deployed) also
after an idle reset, and the pacer lets that window leave in one burst, as Linux and
Chromium do in slow start.
"""

from __future__ import annotations

from aioquic.quic.congestion.base import register_congestion_control
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer

INITIAL_WINDOW_PACKETS = 32
CONGESTION_CONTROL = "xp2p-cubic"


class Xp2pCubic(CubicCongestionControl):
    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.congestion_window = INITIAL_WINDOW_PACKETS * max_datagram_size

    def reset(self) -> None:
        # cubic resets to the initial window after an idle period: keep ours.
        super().reset()
        self.congestion_window = INITIAL_WINDOW_PACKETS * self._max_datagram_size


class BurstPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer, with a bucket deep enough for the initial window."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        if self.packet_time is None:
            return
        burst = INITIAL_WINDOW_PACKETS * self._max_datagram_size
        pacing_rate = self._max_datagram_size / self.packet_time
        self.bucket_max = max(self.bucket_max, burst / pacing_rate)


def use_burst_pacer(quic: QuicConnection) -> None:
    """Give a connection the BurstPacer (aioquic builds its pacer inside loss recovery and
    offers no hook, hence the private attribute)."""
    recovery = quic._loss
    recovery._pacer = BurstPacer(max_datagram_size=recovery._pacer._max_datagram_size)


register_congestion_control(CONGESTION_CONTROL, Xp2pCubic)
