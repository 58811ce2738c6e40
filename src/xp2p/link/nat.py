"""NAT behaviour discovery with STUN (RFC 5780 §4.3 mapping and §4.4 filtering tests).

Three layers, h11/aioquic style:

* :func:`classify` (pure): the tests' outcomes (:class:`ProbeResults`) → a
  :class:`NatBehaviour`: mapping and filtering behaviour and the common ``nat_type`` name.
* :class:`BehaviourDiscovery` (sans-IO): the probe sequence as a state machine. It is given
  datagrams and the time, and hands back datagrams to send and the time it next wants to be
  woken; it never reads a clock or touches a socket.
* :func:`discover_nat_behaviour`: the asyncio shell with two UDP sockets.

The sequence, with two local sockets (a mapping socket and a filtering socket)::

    t0   mapping:   Binding → primary                       (test I: mapped address, OTHER-ADDRESS)
         filtering: Binding + change IP+port → primary      (answered: endpoint-independent)
         filtering: Binding + change port → primary         (answered: address-dependent)
    then mapping:   Binding → other IP, primary port        (test II: same mapping = EIM)
         mapping:   Binding → other IP, other port          (test III: same as II = address-dep.)

The filtering tests wait for answers that may never come, so they run at once, together with
test I, and stop waiting a settle time after test I's answer (longer on a slow path). The
mapping tests II and III wait until the filtering tests are over: they send to the server's
other IP, and a NAT that keeps its address-dependent permissions per host rather than per
mapping would then let the other IP's answers reach the filtering socket too, and look
endpoint-independent. Everything stops at ``ProbeTimings.total`` (3 s).

A server with one IP (only an alternate port, ``StunInfo.alt_port``) still tells symmetric
mappings (the mapping changes with the port) and address-and-port-dependent filtering apart;
what it cannot tell is reported ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import socket
from dataclasses import dataclass
from typing import Any

from aioice import stun

from xp2p.link.errors import LinkError
from xp2p.link.nat_behaviour import (
    Address,
    NatBehaviour,
    ProbeResults,
    classify,
    same_ip,
)

logger = logging.getLogger("xp2p.link")


_CHANGE_IP = 0x4
_CHANGE_PORT = 0x2


# ---- the probe sequence (sans-IO) ------------------------------------------------------


class ProbeSocket(enum.StrEnum):
    MAPPING = "mapping"
    FILTERING = "filtering"


@dataclass(frozen=True, slots=True)
class Transmit:
    """A datagram the shell must send from ``socket`` to ``address``."""

    socket: ProbeSocket
    address: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class ProbeTimings:
    #: Bound on the whole probe, from the first datagram.
    total: float = 3.0
    #: No answer to test I by then: UDP is blocked (or the server is down).
    answer_within: float = 2.0
    #: After test I's answer, the other tests wait at least this long for theirs...
    settle: float = 0.5
    #: ...or this many of test I's round trips, on a slow path.
    settle_rtts: float = 4.0
    #: When each test (re)sends its request, from its start; a lost datagram must not read
    #: as filtering.
    retransmit: tuple[float, ...] = (0.0, 0.1, 0.3, 0.7, 1.5)


class _Outcome(enum.Enum):
    PENDING = enum.auto()
    ANSWERED = enum.auto()
    REFUSED = enum.auto()  # an error answer, or the server ignored the change it was asked
    TIMED_OUT = enum.auto()


@dataclass(eq=False)
class _Test:
    socket: ProbeSocket
    destination: Address
    change: int
    started: float
    deadline: float
    request: Any = None  # aioice's stun.Message
    sends: int = 0
    outcome: _Outcome = _Outcome.PENDING
    mapped: Address | None = None

    def __post_init__(self) -> None:
        attributes = {"CHANGE-REQUEST": self.change} if self.change else {}
        self.request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes=attributes)

    @property
    def pending(self) -> bool:
        return self.outcome is _Outcome.PENDING

    def next_send(self, timings: ProbeTimings) -> float | None:
        if self.sends >= len(timings.retransmit):
            return None
        return self.started + timings.retransmit[self.sends]


class BehaviourDiscovery:
    """The RFC 5780 probe sequence against one STUN server, sans-IO.

    Drive it with :meth:`start`, then :meth:`datagram_received` for every datagram either
    socket receives and :meth:`handle_timer` whenever :meth:`get_timer` comes due, sending
    what each returns, until :attr:`done`; then :meth:`results`.
    """

    def __init__(
        self,
        server: Address,
        *,
        alt_port: int | None = None,
        timings: ProbeTimings | None = None,
    ) -> None:
        self.server = server
        self._alt_port = alt_port
        self.timings = timings or ProbeTimings()
        self._t0 = 0.0
        self._end = 0.0
        self._first: _Test | None = None
        self._change_ip_port: _Test | None = None
        self._change_port: _Test | None = None
        self._via_other_ip: _Test | None = None
        self._via_other: _Test | None = None
        self._other: Address | None = None
        self._settle = 0.0  # how long tests after test I wait, once its round trip is known
        self._mapping_started = False
        self.done = False

    # ---- driving ------------------------------------------------------------------------

    def start(self, now: float) -> list[Transmit]:
        t = self.timings
        self._t0, self._end = now, now + t.total
        first_deadline = now + min(t.answer_within, t.total)
        self._first = _Test(ProbeSocket.MAPPING, self.server, 0, now, first_deadline)
        # Until test I answers, the filtering tests' deadline is the whole probe's.
        self._change_ip_port = _Test(
            ProbeSocket.FILTERING, self.server, _CHANGE_IP | _CHANGE_PORT, now, self._end
        )
        self._change_port = _Test(ProbeSocket.FILTERING, self.server, _CHANGE_PORT, now, self._end)
        return self._due(now)

    def datagram_received(
        self, sock: ProbeSocket, data: bytes, source: Address, now: float
    ) -> list[Transmit]:
        if self.done:
            return []
        try:
            message = stun.parse_message(data)
        except Exception:  # aioice raises ValueError, struct.error...: not our answer
            return []
        test = next(
            (
                t
                for t in self._tests()
                if t.pending
                and t.socket == sock
                and t.request.transaction_id == message.transaction_id
            ),
            None,
        )
        if test is None or message.message_method != stun.Method.BINDING:
            return []
        if message.message_class == stun.Class.ERROR and test is not self._first:
            # (A plain Binding is never refused: an error to test I is not our server's.)
            test.outcome = _Outcome.REFUSED
        elif message.message_class == stun.Class.RESPONSE:
            self._answered(test, message, source, now)
        return self._advance(now)

    def handle_timer(self, now: float) -> list[Transmit]:
        if self.done:
            return []
        for test in self._tests():
            if test.pending and now >= test.deadline:
                test.outcome = _Outcome.TIMED_OUT
        return self._advance(now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (None once done)."""
        if self.done:
            return None
        times = [self._end]
        for test in self._tests():
            if test.pending:
                times.append(test.deadline)
                when = test.next_send(self.timings)
                if when is not None:
                    times.append(when)
        return min(times)

    # ---- results --------------------------------------------------------------------------

    def results(self, local: Address) -> ProbeResults:
        """What the tests found; ``local`` is the mapping socket's own address."""
        first = self._first
        if first is None or first.mapped is None:
            return ProbeResults(self.server, local)
        return ProbeResults(
            self.server,
            local,
            mapped=first.mapped,
            other=self._other,
            mapped_via_other_ip=self._via_other_ip.mapped if self._via_other_ip else None,
            mapped_via_other=self._via_other.mapped if self._via_other else None,
            answered_change_ip_port=_answered(self._change_ip_port),
            answered_change_port=_answered(self._change_port),
        )

    # ---- internals ------------------------------------------------------------------------

    def _tests(self) -> list[_Test]:
        tests = (
            self._first,
            self._change_ip_port,
            self._change_port,
            self._via_other_ip,
            self._via_other,
        )
        return [t for t in tests if t is not None]

    def _answered(self, test: _Test, message: Any, source: Address, now: float) -> None:
        if test.socket == ProbeSocket.FILTERING:
            # The answer only says something about filtering if it came from where we asked.
            changed_ip = not same_ip(source[0], self.server[0])
            changed_port = source[1] != self.server[1]
            wanted_ip = bool(test.change & _CHANGE_IP)
            ok = changed_port and changed_ip == wanted_ip
            test.outcome = _Outcome.ANSWERED if ok else _Outcome.REFUSED
            return
        mapped = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get(
            "MAPPED-ADDRESS"
        )
        if mapped is None:
            if test is not self._first:  # without test I's answer nothing else counts
                test.outcome = _Outcome.REFUSED
            return
        test.outcome = _Outcome.ANSWERED
        test.mapped = (str(mapped[0]), int(mapped[1]))
        if test is self._first:
            self._first_answered(message, now)

    def _first_answered(self, message: Any, now: float) -> None:
        t = self.timings
        rtt = now - self._t0
        self._settle = max(t.settle, t.settle_rtts * rtt)
        other = message.attributes.get("OTHER-ADDRESS")
        if other is not None:
            self._other = (str(other[0]), int(other[1]))
        elif self._alt_port is not None and self._alt_port != self.server[1]:
            self._other = (self.server[0], self._alt_port)
        deadline = min(self._end, now + self._settle)
        for test in (self._change_ip_port, self._change_port):
            assert test is not None
            test.deadline = min(test.deadline, deadline)

    def _start_mapping_tests(self, now: float) -> None:
        self._mapping_started = True
        other = self._other
        if other is None or now >= self._end:
            return
        deadline = min(self._end, now + self._settle)
        if not same_ip(other[0], self.server[0]):
            self._via_other_ip = _Test(
                ProbeSocket.MAPPING, (other[0], self.server[1]), 0, now, deadline
            )
        self._via_other = _Test(ProbeSocket.MAPPING, other, 0, now, deadline)

    def _advance(self, now: float) -> list[Transmit]:
        first = self._first
        assert first is not None
        if now >= self._end:
            for test in self._tests():
                if test.pending:
                    test.outcome = _Outcome.TIMED_OUT
        if first.outcome is _Outcome.TIMED_OUT:
            self.done = True  # nothing else means anything without test I
            return []
        filtering = (self._change_ip_port, self._change_port)
        if (
            first.outcome is _Outcome.ANSWERED
            and not self._mapping_started
            and not any(t is not None and t.pending for t in filtering)
        ):
            self._start_mapping_tests(now)
        if self._mapping_started and not any(t.pending for t in self._tests()):
            self.done = True
            return []
        return self._due(now)

    def _due(self, now: float) -> list[Transmit]:
        out = []
        for test in self._tests():
            while test.pending:
                when = test.next_send(self.timings)
                if when is None or when > now:
                    break
                test.sends += 1
                out.append(Transmit(test.socket, test.destination, bytes(test.request)))
                # Catching up after a late wake-up sends one copy, not a burst.
                while (nxt := test.next_send(self.timings)) is not None and nxt <= now:
                    test.sends += 1
        return out


def _answered(test: _Test | None) -> bool | None:
    if test is None or test.outcome in (_Outcome.REFUSED, _Outcome.PENDING):
        return None
    return test.outcome is _Outcome.ANSWERED


# ---- the asyncio shell -----------------------------------------------------------------


class _ProbeProtocol(asyncio.DatagramProtocol):
    def __init__(
        self, sock: ProbeSocket, inbox: asyncio.Queue[tuple[ProbeSocket, bytes, Address]]
    ) -> None:
        self._sock = sock
        self._inbox = inbox

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._inbox.put_nowait((self._sock, data, (str(addr[0]), int(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a NAT or a down server: the timeouts say the same, later.
        logger.debug("NAT probe %s socket: %s", self._sock, exc)


async def discover_nat_behaviour(
    server: tuple[str, int],
    *,
    alt_port: int | None = None,
    local_host: str = "0.0.0.0",
    timings: ProbeTimings | None = None,
) -> NatBehaviour:
    """Classify the NAT between this host and the STUN ``server`` (IPv4), in at most
    ``timings.total`` seconds (3 s by default). ``alt_port`` is the server's alternate port
    when it has no second IP (``StunInfo.alt_port``).

    Returns a ``udp-blocked`` result when the server does not answer; raises
    :class:`LinkError` (reason ``nat_probe``) only when the probe cannot run at all (no
    local socket, a server name that does not resolve).
    """
    loop = asyncio.get_running_loop()
    host, port = server
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        server_ip = (str(infos[0][4][0]), port)
    except (OSError, IndexError) as exc:
        raise LinkError("nat_probe", f"cannot resolve STUN server {host}: {exc}") from exc
    inbox: asyncio.Queue[tuple[ProbeSocket, bytes, Address]] = asyncio.Queue()
    transports: dict[ProbeSocket, asyncio.DatagramTransport] = {}
    try:
        for sock in ProbeSocket:
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_ProbeProtocol, sock, inbox),
                local_addr=(local_host, 0),
                family=socket.AF_INET,
            )
            transports[sock] = transport
        machine = BehaviourDiscovery(server_ip, alt_port=alt_port, timings=timings)

        def send(transmits: list[Transmit]) -> None:
            for t in transmits:
                with contextlib.suppress(OSError):  # unreachable now = no answer later
                    transports[t.socket].sendto(t.data, t.address)

        send(machine.start(loop.time()))
        while not machine.done:
            timer = machine.get_timer()
            assert timer is not None
            try:
                sock, data, source = await asyncio.wait_for(
                    inbox.get(), max(0.0, timer - loop.time())
                )
            except TimeoutError:
                send(machine.handle_timer(loop.time()))
            else:
                send(machine.datagram_received(sock, data, source, loop.time()))
        local = transports[ProbeSocket.MAPPING].get_extra_info("sockname")[:2]
        local = (str(local[0]), int(local[1]))
        if local[0] in ("0.0.0.0", ""):
            local = (_route_address(server_ip[0]), local[1])
        return classify(machine.results(local))
    except OSError as exc:
        raise LinkError("nat_probe", f"cannot probe the NAT: {exc}") from exc
    finally:
        for transport in transports.values():
            transport.close()


def _route_address(remote_host: str) -> str:
    """The local address the kernel would use to reach remote_host (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((remote_host, 9))
        except OSError:  # no route: the probe got no answer either
            return "0.0.0.0"
        address: str = sock.getsockname()[0]
        return address
