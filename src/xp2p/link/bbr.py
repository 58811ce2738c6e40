"""``xp2p-bbr``: a model-based congestion controller for aioquic, after BBR (v1, with v2's
loss response).

Why not cubic: on a 50 ms path with 1 % random loss, aioquic's reno and cubic read every
loss as congestion and halved their window to 2-3.4 Mbit/s, under a 4 Mbit/s camera stream,
while kernel TCP with BBR did 52 Mbit/s (docs/platform.md). This controller sends at what the
path delivers instead: it keeps a model of the bottleneck (the windowed maximum of delivery
rate samples, the windowed minimum RTT), paces at ``pacing_gain x bandwidth`` and bounds
what is in flight at about two bandwidth-delay products. Random loss barely moves the
model, so it barely moves the rate. Two things keep it from blasting into a path that is
really congested: the delivery rate of a rate-capped bottleneck *is* the cap, and a round
in which more than ``LOSS_THRESH`` of the packets were lost cuts a short-term bound
(``bw_lo``) by ``BETA``, as BBRv2 does; heavy random loss also drags the model down by
itself, because each probe then delivers less than the model.

It is sans-IO like the rest of aioquic's congestion controllers: packets and the time come
in (``on_packet_sent`` reads the packet's ``sent_time``), ``congestion_window`` and
``pacing_rate`` go out. ``tests/test_congestion.py`` drives it with a virtual clock.

Per-packet delivery state lives here (aioquic's ``QuicSentPacket`` has no room for it),
keyed by packet number space and number, and is dropped when the packet is acknowledged,
lost or expired.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aioquic.quic.congestion.base import QuicCongestionControl
from aioquic.quic.packet_builder import QuicSentPacket

#: The first flight: 32 datagrams, so a viewer's first keyframe (20-40 KB) leaves at once
#: (link.congestion explains why; the pacer lets it go in one burst).
INITIAL_WINDOW_PACKETS = 32
MIN_WINDOW_PACKETS = 4
#: 2/ln(2): the smallest gain that doubles the delivery rate every round in startup.
STARTUP_GAIN = 2.885
DRAIN_GAIN = 1 / STARTUP_GAIN
CWND_GAIN = 2.0
#: Probe up for a round, drain what that queued for a round, cruise for six.
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW = 10.0  #: seconds a min-RTT sample stays valid before PROBE_RTT re-measures
#: An RTT sample this close to the minimum counts as seeing it again (seconds, and share).
MIN_RTT_TOLERANCE = 0.001
MIN_RTT_TOLERANCE_RATIO = 0.02
PROBE_RTT_TIME = 0.2
FULL_BW_GROWTH = 1.25  #: startup ends when the bandwidth grew less than this...
FULL_BW_ROUNDS = 3  #: ...for this many rounds in a row
#: A round losing more than this is congestion, not noise. Far above BBRv2's 2 % on purpose:
#: the paths this link is for (Wi-Fi, cellular) lose 1-5 % at random, and that must not cost
#: rate; a queue overflowing under a probe loses far more.
LOSS_THRESH = 0.15
LOSS_MIN_PACKETS = 4  #: ...and at least this many packets (a few losses in a thin round)
BETA = 0.7  #: multiplicative cut of the short-term bound per congested round
#: A sender idle for longer than this many packet times (at the pacing rate) with room in its
#: window had nothing to send: the samples that follow measure the application, not the path.
APP_LIMITED_GAP_PACKETS = 4.0
APP_LIMITED_GAP_MIN = 0.002  #: seconds; below it, event-loop jitter looks like idleness
DEFAULT_RTT = 0.1  #: before any sample (aioquic's initial RTT)
#: The window is sized for at least this RTT. On a LAN or loopback the min RTT is under a
#: millisecond, but an ACK leaves only when the peer's event loop gets to it (aioquic waits
#: 1 ms, a busy loop longer): a window of 2 x bw x 0.3 ms starved a loopback transfer at
#: 6 MB/s where cubic did 9 MB/s. Paths of tens of ms, the ones that matter, never see it.
BDP_MIN_RTT = 0.01
#: ACKs come in bursts (aioquic acks after 1 ms, a busy event loop later still): the window
#: gets room for the largest burst of "more acknowledged than the model expected" seen over
#: this many rounds, capped at this much time at the modelled rate (Linux BBR's extra_acked).
EXTRA_ACKED_ROUNDS = 10
EXTRA_ACKED_MAX_TIME = 0.1


class BbrState(Enum):
    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


@dataclass(slots=True)
class _SentState:
    """What the connection looked like when a packet left (delivery-rate estimation, as in
    draft-cheng-iccrg-delivery-rate-estimation)."""

    size: int
    sent_time: float
    delivered: int
    delivered_time: float
    first_sent_time: float
    app_limited: bool


class Xp2pBbr(QuicCongestionControl):
    """BBR-style controller for aioquic (register it with ``register_congestion_control``).

    ``pacing_rate`` (bytes/s) is what ``link.congestion.ModelPacer`` paces at; aioquic's own
    pacer would pace ``cwnd / srtt``, which here is twice the bandwidth.
    """

    def __init__(self, *, max_datagram_size: int, seed: int | None = None) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._mss = max_datagram_size
        self.congestion_window = INITIAL_WINDOW_PACKETS * max_datagram_size
        self.bytes_in_flight = 0
        self.ssthresh = None
        self._rng = random.Random(seed)
        self._packets: dict[tuple[Any, int], _SentState] = {}

        # delivery-rate estimation
        self.delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._app_limited_until = 0  #: delivered mark until which samples are app-limited
        self._last_sent_time: float | None = None
        self._last_send_cwnd_limited = False

        # rounds and their loss
        self.round_count = 0
        self._next_round_delivered = 0
        self._round_acked = 0
        self._round_lost = 0
        self._round_lost_packets = 0
        self._last_sample_app_limited = True

        # the model
        self._bw_by_round: list[tuple[int, float]] = []  #: (round, best sample of that round)
        self.max_bw = 0.0
        self.bw_lo = math.inf
        self.min_rtt = math.inf
        self._min_rtt_stamp = 0.0
        self._rtt_hint = DEFAULT_RTT
        self.congested_rounds = 0
        self._extra_acked = [0, 0]  #: two half-windows of the ack-aggregation maximum
        self._extra_acked_rounds = 0
        self._ack_epoch_start = 0.0
        self._ack_epoch_acked = 0

        # the state machine
        self.state = BbrState.STARTUP
        self.pacing_gain = STARTUP_GAIN
        self.cwnd_gain = STARTUP_GAIN
        self.full_bw_reached = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done: float | None = None
        self._probe_rtt_round = 0
        self._prior_cwnd = 0
        self.pacing_rate = 0.0
        self._set_pacing_rate()

    # ---- the model ------------------------------------------------------------------------

    @property
    def bandwidth(self) -> float:
        """Bytes/s the model believes the path carries (never so low that pacing stalls)."""
        rtt = self.min_rtt if math.isfinite(self.min_rtt) else self._rtt_hint
        floor = MIN_WINDOW_PACKETS * self._mss / max(rtt, 0.001)
        return max(min(self.max_bw, self.bw_lo), floor)

    def bdp(self, gain: float = 1.0) -> int:
        if not math.isfinite(self.min_rtt) or self.max_bw <= 0:
            return INITIAL_WINDOW_PACKETS * self._mss
        return int(gain * self.bandwidth * max(self.min_rtt, BDP_MIN_RTT))

    def _target_cwnd(self) -> int:
        # Three extra datagrams leave room for ACKs that come in pairs, the aggregation term
        # for ACKs that come in bursts.
        target = self.bdp(self.cwnd_gain) + self._aggregation_cwnd() + 3 * self._mss
        return max(target, MIN_WINDOW_PACKETS * self._mss)

    def _update_max_bw(self, bw: float) -> None:
        rounds = self._bw_by_round
        if rounds and rounds[-1][0] == self.round_count:
            if bw > rounds[-1][1]:
                rounds[-1] = (self.round_count, bw)
        else:
            rounds.append((self.round_count, bw))
        # Samples expire only when a new one comes: an application-limited stretch (a live
        # stream well under the path's rate) keeps the last real measurement.
        oldest = self.round_count - BW_WINDOW_ROUNDS
        while rounds and rounds[0][0] <= oldest:
            rounds.pop(0)
        self.max_bw = max(b for _, b in rounds)

    # ---- aioquic's interface --------------------------------------------------------------

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        now = packet.sent_time if packet.sent_time is not None else self._delivered_time
        if self.bytes_in_flight == 0:
            # Nothing in flight: rate samples start from here, not from before the pause.
            self._first_sent_time = self._delivered_time = now
        if self._last_sent_time is not None and not self._last_send_cwnd_limited:
            packet_time = self._mss / max(self.pacing_rate, 1.0)
            gap = now - self._last_sent_time
            if gap > max(APP_LIMITED_GAP_PACKETS * packet_time, APP_LIMITED_GAP_MIN):
                self._app_limited_until = max(self.delivered + self.bytes_in_flight, 1)
        if self.state == BbrState.PROBE_RTT:
            # The window is cut on purpose here: what it delivers says nothing of the path.
            self._app_limited_until = max(self.delivered + self.bytes_in_flight, 1)
        self.bytes_in_flight += packet.sent_bytes
        self._packets[(packet.epoch, packet.packet_number)] = _SentState(
            size=packet.sent_bytes,
            sent_time=now,
            delivered=self.delivered,
            delivered_time=self._delivered_time,
            first_sent_time=self._first_sent_time,
            app_limited=self._app_limited_until > 0,
        )
        self._last_sent_time = now
        self._last_send_cwnd_limited = self.bytes_in_flight + self._mss > self.congestion_window

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.bytes_in_flight -= packet.sent_bytes
        sent = self._packets.pop((packet.epoch, packet.packet_number), None)
        if sent is None:
            return
        self.delivered += sent.size
        self._delivered_time = now
        self._round_acked += sent.size
        if self._app_limited_until and self.delivered > self._app_limited_until:
            self._app_limited_until = 0
        self._update_min_rtt(now, now - sent.sent_time)

        # aioquic reports the packets of one ACK in ascending order, so this one is the
        # newest acknowledged so far: the next sample's send interval starts at it.
        send_elapsed = sent.sent_time - sent.first_sent_time
        ack_elapsed = now - sent.delivered_time
        self._first_sent_time = sent.sent_time
        interval = max(send_elapsed, ack_elapsed)
        self._last_sample_app_limited = sent.app_limited
        # An interval under the min RTT means compressed ACKs: it would overstate the rate.
        if interval > 0 and interval >= (self.min_rtt if math.isfinite(self.min_rtt) else 0):
            bw = (self.delivered - sent.delivered) / interval
            if not sent.app_limited or bw >= self.max_bw:
                self._update_max_bw(bw)

        round_start = sent.delivered >= self._next_round_delivered
        if round_start:
            self._next_round_delivered = self.delivered
            self.round_count += 1
            self._on_round_end()
        self._update_ack_aggregation(now, sent.size, round_start)
        self._update_state(now)
        self._update_cwnd(sent.size)
        self._set_pacing_rate()

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self._packets.pop((packet.epoch, packet.packet_number), None)

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            if self._packets.pop((packet.epoch, packet.packet_number), None) is not None:
                self._round_lost += packet.sent_bytes
                self._round_lost_packets += 1

    def on_persistent_congestion(self) -> None:
        # Every packet over three PTOs lost: the path went away or collapsed. Restart from
        # the minimum window; it regrows by what is acknowledged, towards the (cut) model.
        self._cut_bw_lo()
        self.congestion_window = MIN_WINDOW_PACKETS * self._mss
        self._set_pacing_rate()

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        # min_rtt comes from each acknowledged packet; this only seeds the startup rate.
        self._rtt_hint = rtt

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.update(
            {
                "bbr_state": self.state.value,
                "bbr_bw": self.bandwidth,
                "bbr_min_rtt": self.min_rtt,
                "pacing_rate": self.pacing_rate,
            }
        )
        return data

    # ---- decisions -------------------------------------------------------------------------

    def _update_min_rtt(self, now: float, rtt: float) -> None:
        if math.isfinite(self.min_rtt) and rtt <= self.min_rtt + max(
            MIN_RTT_TOLERANCE, MIN_RTT_TOLERANCE_RATIO * self.min_rtt
        ):
            # As good as the minimum: the queue was (nearly) empty just now, so there is no
            # need to drain it to look. A live stream well under the path's rate shows this
            # on every frame and is spared PROBE_RTT's dip.
            self._min_rtt_stamp = now
        # The first sample is not an expiry (the clock need not start at zero).
        expired = math.isfinite(self.min_rtt) and now > self._min_rtt_stamp + MIN_RTT_WINDOW
        if rtt < self.min_rtt or expired:
            # An expired minimum is replaced even by a larger sample: the path may have changed.
            self.min_rtt = rtt
            self._min_rtt_stamp = now
            if expired and self.state != BbrState.PROBE_RTT:
                # No empty-queue RTT seen for a while: drain the queue and look.
                self._enter_probe_rtt()

    def _update_ack_aggregation(self, now: float, acked: int, round_start: bool) -> None:
        if round_start:
            self._extra_acked_rounds += 1
            if self._extra_acked_rounds >= EXTRA_ACKED_ROUNDS // 2:
                self._extra_acked_rounds = 0
                self._extra_acked = [self._extra_acked[1], 0]
        expected = self.bandwidth * (now - self._ack_epoch_start)
        if self._ack_epoch_acked <= expected:
            # ACKs are keeping pace with the model: a new aggregation epoch starts here.
            self._ack_epoch_start = now
            self._ack_epoch_acked = 0
            expected = 0.0
        self._ack_epoch_acked += acked
        extra = min(int(self._ack_epoch_acked - expected), self.congestion_window)
        if extra > self._extra_acked[1]:
            self._extra_acked[1] = extra

    def _aggregation_cwnd(self) -> int:
        if not self.full_bw_reached:
            return 0
        cap = self.bandwidth * EXTRA_ACKED_MAX_TIME
        return int(min(max(self._extra_acked), cap))

    def _cut_bw_lo(self) -> None:
        self.bw_lo = max(min(self.bw_lo, self.max_bw) * BETA, 1.0)

    def _on_round_end(self) -> None:
        total = self._round_acked + self._round_lost
        congested = (
            self._round_lost_packets >= LOSS_MIN_PACKETS
            and total > 0
            and self._round_lost / total > LOSS_THRESH
        )
        self._round_acked = self._round_lost = self._round_lost_packets = 0
        if congested:
            self.congested_rounds += 1
            self._cut_bw_lo()
            if self.state == BbrState.STARTUP:
                self._full_bw_reached()
            elif self.state == BbrState.PROBE_BW and self.pacing_gain > 1:
                self._enter_cycle_phase(1, self._delivered_time)  # stop probing: drain
            return
        if self.state == BbrState.STARTUP and not self._last_sample_app_limited:
            if self.max_bw >= self._full_bw * FULL_BW_GROWTH:
                self._full_bw = self.max_bw
                self._full_bw_count = 0
            else:
                self._full_bw_count += 1
                if self._full_bw_count >= FULL_BW_ROUNDS:
                    self._full_bw_reached()

    def _full_bw_reached(self) -> None:
        self.full_bw_reached = True
        self.state = BbrState.DRAIN
        self.pacing_gain = DRAIN_GAIN
        self.cwnd_gain = STARTUP_GAIN

    def _enter_cycle_phase(self, index: int, now: float) -> None:
        if index == 0:
            # A new probe for more bandwidth: forget the loss-based bound, as BBRv2 does; if
            # the path still loses that much, the next round cuts it again.
            self.bw_lo = math.inf
        self._cycle_index = index
        self._cycle_stamp = now
        self.pacing_gain = PROBE_BW_GAINS[index]

    def _enter_probe_bw(self, now: float) -> None:
        self.state = BbrState.PROBE_BW
        self.cwnd_gain = CWND_GAIN
        # Start anywhere but the draining phase, so flows sharing a path do not synchronise.
        index = self._rng.choice([i for i in range(len(PROBE_BW_GAINS)) if i != 1])
        self._enter_cycle_phase(index, now)

    def _enter_probe_rtt(self) -> None:
        self.state = BbrState.PROBE_RTT
        self.pacing_gain = 1.0
        self._prior_cwnd = max(self._prior_cwnd, self.congestion_window)
        self._probe_rtt_done = None

    def _probe_rtt_cwnd(self) -> int:
        # BBRv2's half BDP rather than v1's four packets: a live stream keeps flowing.
        return max(self.bdp(0.5), MIN_WINDOW_PACKETS * self._mss)

    def _update_state(self, now: float) -> None:
        if self.state == BbrState.DRAIN and self.bytes_in_flight <= self.bdp():
            self._enter_probe_bw(now)
        elif self.state == BbrState.PROBE_BW:
            gain = self.pacing_gain
            full = now - self._cycle_stamp > self.min_rtt
            if gain > 1:
                advance = full and self.bytes_in_flight >= self.bdp(gain) * 0.9
                # An application-limited sender never fills the probe: move on regardless.
                advance = advance or (full and self._app_limited_until > 0)
            elif gain < 1:
                advance = full or self.bytes_in_flight <= self.bdp()
            else:
                advance = full
            if advance:
                self._enter_cycle_phase((self._cycle_index + 1) % len(PROBE_BW_GAINS), now)
        elif self.state == BbrState.PROBE_RTT:
            if self._probe_rtt_done is None:
                if self.bytes_in_flight <= self._probe_rtt_cwnd() + self._mss:
                    self._probe_rtt_done = now + PROBE_RTT_TIME
                    self._probe_rtt_round = self.round_count
            elif now >= self._probe_rtt_done and self.round_count > self._probe_rtt_round:
                self._min_rtt_stamp = now
                self.congestion_window = max(self.congestion_window, self._prior_cwnd)
                self._prior_cwnd = 0
                if self.full_bw_reached:
                    self._enter_probe_bw(now)
                else:
                    self.state = BbrState.STARTUP
                    self.pacing_gain = self.cwnd_gain = STARTUP_GAIN

    def _update_cwnd(self, acked: int) -> None:
        if self.state == BbrState.PROBE_RTT:
            self.congestion_window = min(self.congestion_window, self._probe_rtt_cwnd())
            return
        target = self._target_cwnd()
        cwnd = self.congestion_window
        if self.full_bw_reached:
            cwnd = min(cwnd + acked, target)
        elif cwnd < target or self.delivered < INITIAL_WINDOW_PACKETS * self._mss:
            cwnd += acked
        self.congestion_window = max(cwnd, MIN_WINDOW_PACKETS * self._mss)

    def _set_pacing_rate(self) -> None:
        if self.max_bw <= 0:
            # No sample yet: the initial window over the RTT we know of, at startup gain.
            rate = STARTUP_GAIN * self.congestion_window / max(self._rtt_hint, 0.001)
        else:
            rate = self.pacing_gain * self.bandwidth
        # In startup the rate only grows: early samples (the handshake) say little.
        if self.full_bw_reached or rate > self.pacing_rate:
            self.pacing_rate = rate
