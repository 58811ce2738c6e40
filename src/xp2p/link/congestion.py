"""Congestion control and pacing tuned for live video's first frame.

A viewer's first request is answered with the FLV header, the sequence headers and the
current GOP at once (docs/architecture.md: first frame costs one round trip). aioquic's
cubic starts with RFC 9002's 10-datagram window (~12 KB) and paces it over a whole RTT, so a
20-40 KB keyframe took two or three round trips (bench/first_frame.py: 150 ms at 100 ms RTT,
207 ms p95). ``xp2p-cubic`` is cubic with a 32-datagram initial window (what Google QUIC
deployed) also after an idle reset, and the pacer lets that window leave in one burst, as
Linux and Chromium do in slow start.

``xp2p-bbr`` (link.bbr, the default) keeps that first flight and otherwise paces at its own
model of the path (``ModelPacer``): loss-based cubic managed 2-3.4 Mbit/s on a 50 ms path
with 1 % loss, under a 4 Mbit/s live stream.
"""

from __future__ import annotations

from aioquic.quic.congestion.base import QuicCongestionControl, register_congestion_control
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import K_MICRO_SECOND, K_SECOND, QuicPacketPacer

from xp2p.link.bbr import INITIAL_WINDOW_PACKETS, Xp2pBbr
from xp2p.link.quic_internals import max_datagram_size, replace_pacer

CUBIC = "xp2p-cubic"
PACING_SLACK = 1e-7  #: seconds
BBR = "xp2p-bbr"


class Xp2pCubic(CubicCongestionControl):
    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.congestion_window = INITIAL_WINDOW_PACKETS * max_datagram_size

    def reset(self) -> None:
        # cubic resets to the initial window after an idle period: keep ours.
        super().reset()
        self.congestion_window = INITIAL_WINDOW_PACKETS * max_datagram_size(self)


class BurstPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer, with a bucket deep enough for the initial window."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        if self.packet_time is None:
            return
        mss = max_datagram_size(self)
        burst = INITIAL_WINDOW_PACKETS * mss
        pacing_rate = mss / self.packet_time
        self.bucket_max = max(self.bucket_max, burst / pacing_rate)


class ModelPacer(QuicPacketPacer):
    """Paces at ``Xp2pBbr.pacing_rate`` (gain x modelled bandwidth) rather than aioquic's
    cwnd / srtt, which for a window of two BDPs would be twice the path's rate; the bucket
    still holds the initial window, so a first keyframe leaves in one burst.

    aioquic calls ``update_rate`` on every RTT sample and every loss, which is when the
    controller's rate changes; its arguments are ignored once the controller has a rate.

    The bucket is also strict: aioquic's lets a packet go on *any* positive credit, so ACKs
    arriving faster than the pacing rate clock packets out at the ACK rate, and a phase that
    paces below the delivery rate (BBR's drain, gain 0.35 or 0.75) would never drain.
    """

    def __init__(self, *, max_datagram_size: int, controller: Xp2pBbr) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.controller = controller

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        rate = self.controller.pacing_rate
        if rate <= 0:
            super().update_rate(congestion_window, smoothed_rtt)
            return
        mss = max_datagram_size(self)
        self.packet_time = max(K_MICRO_SECOND, min(mss / rate, K_SECOND))
        bucket = max(2 * mss, min(congestion_window // 4, 16 * mss), INITIAL_WINDOW_PACKETS * mss)
        self.bucket_max = bucket / rate
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max

    # aioquic annotates this as float but returns None for "send now", as here.
    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]
        if self.packet_time is None:
            return None
        self.update_bucket(now=now)
        deficit = self.packet_time - self.bucket_time
        # A timer fires a hair early or late; a 1 % slack keeps it from re-arming for
        # nanoseconds (the credit it borrows is paid back: the bucket may go negative).
        if deficit <= max(PACING_SLACK, 0.01 * self.packet_time):
            return None
        return now + deficit

    def update_after_send(self, now: float) -> None:
        if self.packet_time is None:
            return
        self.update_bucket(now=now)
        self.bucket_time -= self.packet_time


def use_xp2p_pacer(quic: QuicConnection) -> None:
    """Give a connection the pacer its xp2p controller needs (none for aioquic's own)."""
    replace_pacer(quic, _pacer_for)


def _pacer_for(controller: QuicCongestionControl, mss: int) -> QuicPacketPacer | None:
    if isinstance(controller, Xp2pBbr):
        return ModelPacer(max_datagram_size=mss, controller=controller)
    if isinstance(controller, Xp2pCubic):
        return BurstPacer(max_datagram_size=mss)
    return None


register_congestion_control(CUBIC, Xp2pCubic)
register_congestion_control(BBR, Xp2pBbr)
