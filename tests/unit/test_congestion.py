"""xp2p-bbr's decisions on a simulated path with a virtual clock (no sockets, no waiting).

The simulator is a sender (the controller and ``ModelPacer``, driven exactly as aioquic's
loss recovery drives them), a bottleneck (rate, drop-tail queue bounded in queueing delay
like the link conditioner's, random loss before it) and a receiver that acknowledges every
packet after half the RTT. Lost packets are declared by aioquic's rules (three packets or
9/8 RTT later than an acknowledged one). Everything is seeded, so each run is the same.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch

from xp2p.link.bbr import INITIAL_WINDOW_PACKETS, BbrState, Xp2pBbr
from xp2p.link.congestion import BBR, ModelPacer, use_xp2p_pacer

MSS = 1200
T0 = 5000.0


@dataclass
class PathModel:
    rate_bps: float
    rtt: float = 0.05
    loss: float = 0.0
    queue_delay: float = 0.25  #: queueing delay past which the bottleneck drops


@dataclass
class Stats:
    sent: list[float] = field(default_factory=list)  #: send time of every packet
    arrived: list[float] = field(default_factory=list)  #: arrival time at the receiver
    queue_drops: int = 0
    random_drops: int = 0
    max_inflight_after: dict[float, int] = field(default_factory=dict)
    max_backlog: int = 0  #: live source: bytes produced but not yet sent, at worst

    def rate(self, times: list[float], start: float, end: float) -> float:
        """Bits/s of packets whose time falls in [start, end)."""
        n = sum(1 for t in times if start <= t < end)
        return n * MSS * 8 / (end - start)


class Simulation:
    def __init__(
        self,
        path: PathModel,
        *,
        seed: int = 1,
        live_bps: float | None = None,
        fps: int = 25,
        watch_inflight_from: float = 3.0,
    ) -> None:
        self.path = path
        self.cc = Xp2pBbr(max_datagram_size=MSS, seed=seed)
        self.pacer = ModelPacer(max_datagram_size=MSS, controller=self.cc)
        self.rng = random.Random(seed)
        # Times are relative to T0, which is far from zero, as the event loop's clock is: a
        # controller must not take "now > 0 + window" for an expired measurement.
        self.now = T0
        self.stats = Stats()
        self._events: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._sent: dict[int, QuicSentPacket] = {}
        self._pn = 0
        self._largest_acked = -1
        self._srtt: float | None = None
        self._latest_rtt = 0.0
        self._busy_until = 0.0
        self._wake_at: float | None = None
        self._watch_from = watch_inflight_from
        self.live_bps = live_bps
        self.backlog = 0 if live_bps else -1  #: bytes waiting to be sent; -1 = bulk, endless
        if live_bps:
            self._frame_bytes = int(live_bps / 8 / fps)
            self._frame_interval = 1 / fps
            self._push(T0, "frame", 0)

    # ---- event plumbing ----------------------------------------------------------------

    def _push(self, at: float, kind: str, value: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, value))

    def run(self, until: float) -> Simulation:
        """Run to ``until`` seconds after the start."""
        until += T0
        self._try_send()
        while self._events and self._events[0][0] <= until:
            at, _, kind, value = heapq.heappop(self._events)
            self.now = at
            if kind == "ack":
                self._on_ack(value)
            elif kind == "frame":
                self.backlog += self._frame_bytes
                self._push(at + self._frame_interval, "frame", 0)
            elif kind == "wake" and self._wake_at == at:
                self._wake_at = None
            self._try_send()
        self.now = until
        return self

    # ---- sender ------------------------------------------------------------------------

    def _try_send(self) -> None:
        while self.backlog != 0:
            if self.cc.congestion_window - self.cc.bytes_in_flight < MSS:
                break
            at = self.pacer.next_send_time(self.now)
            if at is not None:
                if self._wake_at is None or at < self._wake_at:
                    self._wake_at = at
                    self._push(at, "wake", 0)
                break
            self._send_one()
        self.stats.max_backlog = max(self.stats.max_backlog, self.backlog)

    def _send_one(self) -> None:
        packet = QuicSentPacket(
            epoch=Epoch.ONE_RTT,
            in_flight=True,
            is_ack_eliciting=True,
            is_crypto_packet=False,
            packet_number=self._pn,
            packet_type=QuicPacketType.ONE_RTT,
            sent_time=self.now,
            sent_bytes=MSS,
        )
        self._pn += 1
        if self.backlog > 0:
            self.backlog = max(0, self.backlog - MSS)
        self._sent[packet.packet_number] = packet
        self.cc.on_packet_sent(packet=packet)
        self.pacer.update_after_send(self.now)
        self.stats.sent.append(self.now - T0)
        if self.now - T0 >= self._watch_from:
            key = self._watch_from
            self.stats.max_inflight_after[key] = max(
                self.stats.max_inflight_after.get(key, 0), self.cc.bytes_in_flight
            )
        self._through_path(packet.packet_number)

    def _on_ack(self, packet_number: int) -> None:
        packet = self._sent.pop(packet_number, None)
        if packet is None:
            return  # declared lost before its ACK came (a late packet)
        assert packet.sent_time is not None
        self.cc.on_packet_acked(now=self.now, packet=packet)
        self._largest_acked = max(self._largest_acked, packet_number)
        rtt = self.now - packet.sent_time
        self._latest_rtt = rtt
        self._srtt = rtt if self._srtt is None else 7 / 8 * self._srtt + rtt / 8
        self.cc.on_rtt_measurement(now=self.now, rtt=rtt)
        self._detect_loss()
        self.pacer.update_rate(self.cc.congestion_window, self._srtt)

    def _detect_loss(self) -> None:
        assert self._srtt is not None
        threshold = self.now - 9 / 8 * max(self._latest_rtt, self._srtt)
        lost = []
        # In-flight packets are kept in send order, so the lost ones are a prefix.
        for number, packet in self._sent.items():
            assert packet.sent_time is not None
            if number > self._largest_acked:
                break
            if number <= self._largest_acked - 3 or packet.sent_time <= threshold:
                lost.append(packet)
            else:
                break
        for packet in lost:
            del self._sent[packet.packet_number]
        if lost:
            self.cc.on_packets_lost(now=self.now, packets=lost)

    # ---- path and receiver ---------------------------------------------------------------

    def _through_path(self, packet_number: int) -> None:
        path = self.path
        if path.loss and self.rng.random() < path.loss:
            self.stats.random_drops += 1
            return
        start = max(self.now, self._busy_until)
        if start - self.now > path.queue_delay:
            self.stats.queue_drops += 1
            return
        self._busy_until = start + MSS * 8 / path.rate_bps
        arrival = self._busy_until + path.rtt / 2
        self.stats.arrived.append(arrival - T0)
        self._push(arrival + path.rtt / 2, "ack", packet_number)


def bdp_bytes(path: PathModel) -> float:
    return path.rate_bps / 8 * path.rtt


# ---- the tests -------------------------------------------------------------------------------


def test_reaches_the_bottleneck_rate() -> None:
    path = PathModel(rate_bps=20e6, rtt=0.05)
    sim = Simulation(path).run(10.0)
    goodput = sim.stats.rate(sim.stats.arrived, 4.0, 10.0)
    assert goodput >= 0.85 * path.rate_bps
    assert sim.cc.state == BbrState.PROBE_BW
    assert 0.8 * path.rate_bps / 8 <= sim.cc.bandwidth <= 1.3 * path.rate_bps / 8
    assert 0.045 <= sim.cc.min_rtt <= 0.06
    # On a path with a deep buffer and no random loss, BBR fills the pipe without overflowing.
    assert sim.stats.queue_drops <= 0.01 * len(sim.stats.sent)


@pytest.mark.parametrize(("loss", "fraction"), [(0.01, 0.8), (0.05, 0.75)])
def test_holds_the_rate_under_random_loss(loss: float, fraction: float) -> None:
    path = PathModel(rate_bps=20e6, rtt=0.05, loss=loss)
    sim = Simulation(path, seed=7).run(20.0)
    # Every 4-second window, not just the average: the rate must not collapse at any point.
    for start in range(4, 20, 4):
        goodput = sim.stats.rate(sim.stats.arrived, start, start + 4)
        assert goodput >= fraction * path.rate_bps, (start, goodput)
    assert sim.cc.bandwidth >= 0.7 * path.rate_bps / 8


def test_does_not_exceed_a_capped_rate_for_long() -> None:
    """A slow bottleneck with a shallow buffer (a policer-like cap): the sender's rate is
    the cap's, give or take its probes, and the queue rarely overflows."""
    path = PathModel(rate_bps=6e6, rtt=0.05, queue_delay=0.03)
    sim = Simulation(path, seed=3).run(20.0)
    sent = sim.stats.sent
    for start in range(4, 20, 2):
        assert sim.stats.rate(sent, start, start + 2) <= 1.4 * path.rate_bps, start
    assert sim.stats.rate(sent, 4.0, 20.0) <= 1.15 * path.rate_bps
    assert sim.stats.queue_drops <= 0.05 * len(sent)
    assert sim.stats.rate(sim.stats.arrived, 4.0, 20.0) >= 0.85 * path.rate_bps


def test_inflight_stays_near_two_bdp() -> None:
    """Behind a deep buffer, a loss-based sender would fill it; this one keeps what is in
    flight (and so the queue) near its two-BDP window."""
    path = PathModel(rate_bps=20e6, rtt=0.05, queue_delay=1.0)
    sim = Simulation(path, seed=5, watch_inflight_from=3.0).run(15.0)
    assert sim.stats.max_inflight_after[3.0] <= 2.6 * bdp_bytes(path) + 8 * MSS
    assert sim.stats.queue_drops == 0
    assert sim.cc.congestion_window <= 2.6 * bdp_bytes(path) + 8 * MSS


def test_heavy_persistent_loss_backs_off() -> None:
    """30 % loss is not a lossy radio any more: the sender must not keep blasting."""
    path = PathModel(rate_bps=20e6, rtt=0.05, loss=0.30)
    sim = Simulation(path, seed=11).run(20.0)
    assert sim.stats.rate(sim.stats.sent, 10.0, 20.0) <= 0.5 * path.rate_bps
    assert sim.cc.congested_rounds > 0


def test_live_stream_keeps_up_on_a_lossy_path() -> None:
    """4 Mbit/s of 25 fps frames over a 50 Mbit/s, 50 ms path with 1 % and 5 % loss: the
    sender never falls behind the camera (frames leave as they come)."""
    for loss in (0.01, 0.05):
        path = PathModel(rate_bps=50e6, rtt=0.05, loss=loss)
        sim = Simulation(path, seed=13, live_bps=4e6).run(20.0)
        # The largest backlog is one frame (20 KB) plus a little: no queue builds up.
        assert sim.stats.max_backlog <= 2 * 4e6 / 8 / 25, loss
        assert sim.stats.rate(sim.stats.sent, 2.0, 20.0) >= 0.95 * 4e6
        assert sim.cc.pacing_rate >= 4e6 / 8


def _packet(number: int, now: float) -> QuicSentPacket:
    return QuicSentPacket(
        epoch=Epoch.ONE_RTT,
        in_flight=True,
        is_ack_eliciting=True,
        is_crypto_packet=False,
        packet_number=number,
        packet_type=QuicPacketType.ONE_RTT,
        sent_time=now,
        sent_bytes=MSS,
    )


def test_first_flight_leaves_in_one_burst() -> None:
    """After the handshake's few packets (and their RTT samples, on a clock far from zero),
    a first keyframe's 32 datagrams still leave at once (bench/first_frame.py)."""
    cc = Xp2pBbr(max_datagram_size=MSS, seed=1)
    pacer = ModelPacer(max_datagram_size=MSS, controller=cc)
    assert cc.congestion_window == INITIAL_WINDOW_PACKETS * MSS
    now = T0
    handshake = [_packet(n, now) for n in range(3)]
    for packet in handshake:
        cc.on_packet_sent(packet=packet)
        pacer.update_after_send(now)
    now += 0.05
    for packet in handshake:
        cc.on_packet_acked(now=now, packet=packet)
        cc.on_rtt_measurement(now=now, rtt=0.05)
        pacer.update_rate(cc.congestion_window, 0.05)
    now += 0.01
    assert cc.state == BbrState.STARTUP
    for number in range(3, 3 + INITIAL_WINDOW_PACKETS):
        assert cc.congestion_window - cc.bytes_in_flight >= MSS
        assert pacer.next_send_time(now) is None
        cc.on_packet_sent(packet=_packet(number, now))
        pacer.update_after_send(now)


def test_initial_window_bursts_again_after_idle() -> None:
    """A live viewer's next request on an idle link also gets its keyframe in one burst."""
    path = PathModel(rate_bps=20e6, rtt=0.05)
    sim = Simulation(path).run(5.0)
    sim.backlog = 0  # the application stops sending
    sim.run(6.0)
    assert sim.cc.bytes_in_flight == 0
    for _ in range(INITIAL_WINDOW_PACKETS):
        assert sim.pacer.next_send_time(sim.now) is None
        sim.pacer.update_after_send(sim.now)


def test_registered_and_paced_in_aioquic() -> None:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    quic = QuicConnection(
        configuration=QuicConfiguration(is_client=True, congestion_control_algorithm=BBR)
    )
    use_xp2p_pacer(quic)
    assert isinstance(quic._loss._cc, Xp2pBbr)
    assert isinstance(quic._loss._pacer, ModelPacer)
