"""NAT behaviour discovery: the pure classifier, the sans-IO probe sequence against simulated
NATs on a virtual clock, the asyncio probe against the real responder on loopback, and the
module's natChanged/natError events with a real cloud."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aioice import stun

from tests.support.stack import Stack
from xp2p import ErrorCode, XP2PError
from xp2p.cloud import CloudConfig, CloudServer, start_stun_server
from xp2p.cloud.stun import ALL_SOCKETS, ResponderAddresses, binding_response
from xp2p.link import LinkError
from xp2p.link.nat import (
    BehaviourDiscovery,
    ProbeSocket,
    ProbeTimings,
    Transmit,
    discover_nat_behaviour,
)
from xp2p.link.nat_behaviour import Dependence, NatBehaviour, NatType, ProbeResults, classify
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.viewer import module as module_module

EI, AD, APD, UNK = (
    Dependence.ENDPOINT_INDEPENDENT,
    Dependence.ADDRESS_DEPENDENT,
    Dependence.ADDRESS_AND_PORT_DEPENDENT,
    Dependence.UNKNOWN,
)
SERVER = ("203.0.113.1", 3478)
OTHER = ("203.0.113.2", 3479)
LOCAL = ("192.0.2.2", 5000)
M1, M2, M3 = ("198.51.100.1", 5000), ("198.51.100.1", 6000), ("198.51.100.1", 7000)

# ---- the pure classifier ---------------------------------------------------------------

#: (answered change IP+port, answered change port) → filtering. None = the server could
#: not make that change (refused it or ignored it).
FILTERING = {
    (True, True): EI,
    (True, False): EI,  # the change-port answer was lost; change-IP+port is the stronger fact
    (True, None): EI,
    (False, True): AD,
    (False, False): APD,
    (False, None): UNK,
    (None, True): UNK,  # one IP: EIF or ADF
    (None, False): APD,
    (None, None): UNK,
}

#: Two-IP server: (mapping via other IP, via other address) → (mapping, nat type if the
#: filtering were known to be endpoint-independent).
MAPPING_TWO_IPS: dict[tuple[Any, Any], tuple[Dependence, str]] = {
    (None, None): (UNK, "unknown"),
    (None, M1): (UNK, "unknown"),
    (M1, M1): (EI, "full-cone"),
    (M1, None): (EI, "full-cone"),  # test II decides EIM alone
    (M1, M2): (EI, "full-cone"),
    (M2, M2): (AD, "symmetric"),
    (M2, M3): (APD, "symmetric"),
    (M2, M1): (APD, "symmetric"),
    (M2, None): (UNK, "symmetric"),  # not EIM; which kind is lost with test III
}

CONES = {EI: "full-cone", AD: "restricted-cone", APD: "port-restricted", UNK: "unknown"}


def _results(**kw: Any) -> ProbeResults:
    base: dict[str, Any] = {"server": SERVER, "local": LOCAL, "mapped": M1, "other": OTHER}
    base.update(kw)
    return ProbeResults(**base)


@pytest.mark.parametrize(("mapped_ii", "mapped_iii"), list(MAPPING_TWO_IPS))
@pytest.mark.parametrize(("both", "port"), list(FILTERING))
def test_classify_every_outcome_with_two_ips(
    mapped_ii: Any, mapped_iii: Any, both: bool | None, port: bool | None
) -> None:
    result = classify(
        _results(
            mapped_via_other_ip=mapped_ii,
            mapped_via_other=mapped_iii,
            answered_change_ip_port=both,
            answered_change_port=port,
        )
    )
    mapping, nat_type = MAPPING_TWO_IPS[(mapped_ii, mapped_iii)]
    filtering = FILTERING[(both, port)]
    assert (result.mapping, result.filtering) == (mapping, filtering)
    if nat_type == "full-cone":  # EIM: the cone's name comes from the filtering
        nat_type = CONES[filtering]
    assert result.nat_type == nat_type
    assert (result.local, result.mapped, result.server, result.other) == (LOCAL, M1, SERVER, OTHER)


@pytest.mark.parametrize("mapped_iii", [None, M1, M2])
@pytest.mark.parametrize(("both", "port"), list(FILTERING))
def test_classify_with_one_ip_says_only_what_it_can(
    mapped_iii: Any, both: bool | None, port: bool | None
) -> None:
    """Server with an alternate port only: a port-dependent mapping is symmetric; the same
    mapping for both ports could be EIM or address-dependent: unknown."""
    result = classify(
        _results(
            other=(SERVER[0], 3479),
            mapped_via_other=mapped_iii,
            answered_change_ip_port=both,
            answered_change_port=port,
        )
    )
    assert result.filtering == FILTERING[(both, port)]
    if mapped_iii == M2:
        assert (result.mapping, result.nat_type) == (APD, "symmetric")
    else:
        assert (result.mapping, result.nat_type) == (UNK, "unknown")


def test_classify_without_alternate_address() -> None:
    result = classify(_results(other=None, answered_change_port=True))
    assert (result.nat_type, result.mapping, result.filtering) == ("unknown", UNK, UNK)


@pytest.mark.parametrize(("both", "port"), list(FILTERING))
def test_classify_open_when_the_server_sees_our_own_address(
    both: bool | None, port: bool | None
) -> None:
    result = classify(
        _results(mapped=LOCAL, answered_change_ip_port=both, answered_change_port=port)
    )
    assert result.nat_type == "open"
    assert result.mapping == EI and result.filtering == FILTERING[(both, port)]


def test_classify_no_answer_is_udp_blocked() -> None:
    for other in (None, OTHER):
        result = classify(ProbeResults(SERVER, LOCAL, other=other))
        assert result.nat_type == "udp-blocked" and result.failed
        assert (result.mapping, result.filtering, result.mapped) == (UNK, UNK, None)


def test_behaviour_describes_itself_in_one_line() -> None:
    result = classify(
        _results(mapped_via_other_ip=M1, answered_change_ip_port=False, answered_change_port=False)
    )
    line = result.describe()
    assert "\n" not in line
    assert line.startswith("port-restricted (mapping endpoint-independent, filtering ")
    assert "198.51.100.1:5000" in line and "203.0.113.2:3479" in line
    assert result.to_json() == {
        "nat_type": "port-restricted",
        "mapping": "endpoint-independent",
        "filtering": "address-and-port-dependent",
        "local": "192.0.2.2:5000",
        "mapped": "198.51.100.1:5000",
    }


# ---- the probe sequence against simulated NATs (virtual clock) ------------------------


FOUR_SOCKETS = ResponderAddresses(SERVER[0], SERVER[1], OTHER[0], OTHER[1])


@dataclass
class SimNat:
    """A NAT of given mapping and filtering behaviour in front of our two probe sockets, and
    the real responder's decision function behind it; datagrams take ``rtt / 2`` each way.

    ``host_permissions``: filtering permissions kept per host rather than per mapping (as
    the lab's iptables ``recent`` restricted cone does)."""

    mapping: Dependence
    filtering: Dependence
    rtt: float = 0.02
    drop: Callable[[Transmit, int], bool] = lambda _t, _n: False
    host_permissions: bool = False
    layout: ResponderAddresses = FOUR_SOCKETS
    no_nat: bool = False
    answers: bool = True
    _ports: dict[Any, int] = field(default_factory=dict)
    _permissions: dict[Any, set[tuple[str, int]]] = field(default_factory=dict)
    _sent: int = 0

    LOCAL_PORTS = {ProbeSocket.MAPPING: 5000, ProbeSocket.FILTERING: 5001}

    def outbound(self, t: Transmit) -> tuple[tuple[str, int], ProbeSocket] | None:
        """The source the server sees, or None when the datagram is lost."""
        self._sent += 1
        if self.drop(t, self._sent):
            return None
        local_port = self.LOCAL_PORTS[t.socket]
        if self.no_nat:
            return (LOCAL[0], local_port), t.socket
        key: Any = {
            EI: (t.socket,),
            AD: (t.socket, t.address[0]),
            APD: (t.socket, t.address),
        }[self.mapping]
        public = self._ports.setdefault(key, 40000 + len(self._ports))
        perm_key = "host" if self.host_permissions else public
        self._permissions.setdefault(perm_key, set()).add(t.address)
        return (M1[0], public), t.socket

    def inbound(self, source: tuple[str, int], public_port: int) -> bool:
        if self.no_nat or self.filtering == EI:
            return True
        allowed = self._permissions.get("host" if self.host_permissions else public_port, set())
        if self.filtering == AD:
            return source[0] in {ip for ip, _ in allowed}
        return source in allowed

    def server(self, t: Transmit, seen_from: tuple[str, int]) -> tuple[bytes, tuple[str, int]]:
        received_on = next(s for s in ALL_SOCKETS if self.layout.address(s) == t.address)
        reply = binding_response(t.data, seen_from, self.layout, received_on)
        assert reply is not None
        origin = self.layout.address(reply.send_from)
        assert origin is not None
        return reply.data, origin


def run_sim(
    nat: SimNat, timings: ProbeTimings | None = None, alt_port: int | None = None
) -> tuple[NatBehaviour, float, list[Transmit]]:
    """Drive the sans-IO probe against ``nat`` on a virtual clock: (result, end time, sent)."""
    machine = BehaviourDiscovery(SERVER, alt_port=alt_port, timings=timings)
    events: list[tuple[float, int, ProbeSocket, bytes, tuple[str, int]]] = []
    order = itertools.count()
    sent: list[Transmit] = []

    def send(transmits: list[Transmit], now: float) -> None:
        for t in transmits:
            sent.append(t)
            out = nat.outbound(t)
            if out is None or not nat.answers:
                continue
            seen_from, sock = out
            data, origin = nat.server(t, seen_from)
            if nat.inbound(origin, seen_from[1]):
                heapq.heappush(events, (now + nat.rtt, next(order), sock, data, origin))

    now = 0.0
    send(machine.start(now), now)
    while not machine.done:
        timer = machine.get_timer()
        assert timer is not None and timer >= now - 1e-9
        if events and events[0][0] <= timer:
            now, _, sock, data, origin = heapq.heappop(events)
            send(machine.datagram_received(sock, data, origin, now), now)
        else:
            now = timer
            send(machine.handle_timer(now), now)
    local = (LOCAL[0], SimNat.LOCAL_PORTS[ProbeSocket.MAPPING])
    return classify(machine.results(local)), now, sent


NAT_KINDS = [
    (EI, EI, "full-cone"),
    (EI, AD, "restricted-cone"),
    (EI, APD, "port-restricted"),
    (AD, EI, "symmetric"),
    (AD, AD, "symmetric"),
    (AD, APD, "symmetric"),
    (APD, EI, "symmetric"),
    (APD, AD, "symmetric"),
    (APD, APD, "symmetric"),
]


@pytest.mark.parametrize(("mapping", "filtering", "nat_type"), NAT_KINDS)
@pytest.mark.parametrize("rtt", [0.002, 0.3])
def test_probe_sequence_classifies_every_nat(
    mapping: Dependence, filtering: Dependence, nat_type: str, rtt: float
) -> None:
    result, end, _ = run_sim(SimNat(mapping, filtering, rtt=rtt))
    assert (result.nat_type, result.mapping, result.filtering) == (nat_type, mapping, filtering)
    assert result.mapped == (M1[0], 40000) and result.other == OTHER
    assert end <= ProbeTimings().total


@pytest.mark.parametrize(("mapping", "filtering", "nat_type"), NAT_KINDS)
def test_probe_sequence_survives_loss(
    mapping: Dependence, filtering: Dependence, nat_type: str
) -> None:
    """The first two copies of every request are lost: retransmissions carry the probe."""
    copies: dict[bytes, int] = {}

    def drop(t: Transmit, _n: int) -> bool:
        copies[t.data] = copies.get(t.data, 0) + 1
        return copies[t.data] <= 2

    result, end, _ = run_sim(SimNat(mapping, filtering, rtt=0.05, drop=drop))
    assert (result.nat_type, result.mapping, result.filtering) == (nat_type, mapping, filtering)
    assert end <= ProbeTimings().total


def test_host_wide_permissions_do_not_make_a_restricted_cone_look_full() -> None:
    """Mapping tests send to the other IP only after the filtering tests are over, so a NAT
    that lets in every address the host has sent to (on any port) still reads right."""
    result, _, sent = run_sim(SimNat(EI, AD, host_permissions=True))
    assert result.nat_type == "restricted-cone"
    to_other_ip = [i for i, t in enumerate(sent) if t.address[0] == OTHER[0]]
    filtering = [i for i, t in enumerate(sent) if t.socket == ProbeSocket.FILTERING]
    assert to_other_ip and min(to_other_ip) > max(filtering)
    assert all(t.address == SERVER for t in sent if t.socket == ProbeSocket.FILTERING)


def test_no_nat_is_open() -> None:
    result, _, _ = run_sim(SimNat(EI, EI, no_nat=True))
    assert (result.nat_type, result.filtering) == ("open", EI)


def test_no_answer_is_udp_blocked_at_answer_within() -> None:
    timings = ProbeTimings()
    result, end, sent = run_sim(SimNat(EI, EI, answers=False), timings)
    assert result.nat_type == "udp-blocked"
    assert end == pytest.approx(timings.answer_within)
    # Every test retransmitted on schedule and nothing was sent to the other address.
    assert len([t for t in sent if t.socket == ProbeSocket.MAPPING]) == len(timings.retransmit)
    assert all(t.address == SERVER for t in sent)


def test_one_ip_server_degrades_to_what_it_can_tell() -> None:
    one_ip = ResponderAddresses(SERVER[0], SERVER[1], None, 3479)
    for mapping, filtering, expected in [
        (APD, APD, ("symmetric", APD, APD)),
        (EI, APD, ("unknown", UNK, APD)),
        (EI, EI, ("unknown", UNK, UNK)),
        (AD, AD, ("unknown", UNK, UNK)),
    ]:
        nat = SimNat(mapping, filtering, layout=one_ip)
        result, end, _ = run_sim(nat, alt_port=3479)
        assert (result.nat_type, result.mapping, result.filtering) == expected, mapping
        assert result.other == (SERVER[0], 3479)
        assert end <= ProbeTimings().total


def test_server_without_alternates_is_unknown_at_once() -> None:
    nat = SimNat(EI, APD, layout=ResponderAddresses(*SERVER))
    result, end, _ = run_sim(nat)
    assert (result.nat_type, result.other) == ("unknown", None)
    assert end == pytest.approx(nat.rtt)  # refusals (420) end the filtering tests early


def test_total_bound_holds_on_a_very_slow_path() -> None:
    timings = ProbeTimings()
    result, end, _ = run_sim(SimNat(EI, APD, rtt=1.4), timings)
    assert end <= timings.total
    assert result.nat_type in ("port-restricted", "unknown")
    result, end, _ = run_sim(SimNat(EI, EI, rtt=2.5), timings)
    assert result.nat_type == "udp-blocked" and end <= timings.total


def test_stray_and_malformed_datagrams_are_ignored() -> None:
    machine = BehaviourDiscovery(SERVER)
    first = machine.start(0.0)
    assert {t.socket for t in first} == {ProbeSocket.MAPPING, ProbeSocket.FILTERING}
    stray = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    for data in (b"", b"\x00" * 20, bytes(stray)):
        assert machine.datagram_received(ProbeSocket.MAPPING, data, SERVER, 0.01) == []
    # A request's answer on the wrong socket does not count either.
    mapping_request = stun.parse_message(first[0].data)
    answer = stun.Message(
        stun.Method.BINDING,
        stun.Class.RESPONSE,
        transaction_id=mapping_request.transaction_id,
        attributes={"XOR-MAPPED-ADDRESS": M1},
    )
    machine.datagram_received(ProbeSocket.FILTERING, bytes(answer), SERVER, 0.02)
    assert machine.results(LOCAL).mapped is None and not machine.done


# ---- the asyncio probe against the real responder on loopback ------------------------

ALT_IP = "127.0.0.2"


async def test_probe_on_loopback_with_four_sockets_is_open() -> None:
    server = await start_stun_server("127.0.0.1", 0, alt_port=0, alt_host=ALT_IP)
    try:
        async with asyncio.timeout(ProbeTimings().total + 1):
            result = await discover_nat_behaviour(server.address)
    finally:
        server.close()
    assert (result.nat_type, result.mapping, result.filtering) == ("open", EI, EI)
    assert result.mapped == result.local and result.other == server.other_address


async def test_probe_on_loopback_with_one_ip() -> None:
    server = await start_stun_server("127.0.0.1", 0, alt_port=0)
    try:
        alt = server.alt_address
        assert alt is not None
        result = await discover_nat_behaviour(server.address, alt_port=alt[1])
    finally:
        server.close()
    assert result.nat_type == "open" and result.other == alt
    assert result.filtering == UNK  # the other port answered: EIF or ADF


class _Silent(asyncio.DatagramProtocol):
    """A UDP port that swallows everything: a server behind a firewall that drops UDP."""


async def test_probe_of_a_silent_server_is_udp_blocked_within_the_bound() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Silent, local_addr=("127.0.0.1", 0))
    timings = ProbeTimings(total=0.6, answer_within=0.4)
    try:
        async with asyncio.timeout(timings.total + 1):
            result = await discover_nat_behaviour(
                transport.get_extra_info("sockname"), timings=timings
            )
    finally:
        transport.close()
    assert result.nat_type == "udp-blocked" and result.mapped is None


async def test_probe_of_an_unresolvable_server_raises_link_error() -> None:
    with pytest.raises(LinkError) as info:
        await discover_nat_behaviour(("no-such-host.invalid", 3478))
    assert info.value.reason == "nat_probe"


# ---- the module's events with a real cloud ------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, event: str, detail: Any) -> None:
        self.seen.append((event, detail))

    def named(self, name: str) -> list[Any]:
        return [d for e, d in self.seen if e == name]


def _params(cloud: CloudServer) -> AppParams:
    app = cloud.config.apps[0]
    return AppParams(cloud.url, app.key, app.secret)


@pytest.fixture
async def rfc5780_cloud() -> AsyncIterator[CloudServer]:
    config = CloudConfig.demo(port=0, stun_port=0, stun_alt_port=0, stun_alt_host=ALT_IP)
    async with CloudServer(config) as cloud:
        yield cloud


async def test_init_probes_and_reports_the_nat(rfc5780_cloud: CloudServer) -> None:
    events = Events()
    module = P2PModule()
    assert module.nat_type == "unknown" and module.nat_behaviour is None
    await module.init(_params(rfc5780_cloud), event_handler=events)
    try:
        assert module.nat_type == "open"
        behaviour = module.nat_behaviour
        assert behaviour is not None and behaviour.filtering == EI
        assert behaviour.other == (ALT_IP, rfc5780_cloud.stun_info.alt_port)
        await module.reset_p2p()  # same network: nothing to report
        assert events.seen == []
    finally:
        await module.destroy()
    assert module.nat_type == "unknown"


async def test_unanswered_probe_is_nat_error_and_init_still_succeeds() -> None:
    # Clients are told to use a STUN address nobody answers at.
    config = CloudConfig.demo(port=0, stun_port=0, public_host="127.0.0.9")
    async with CloudServer(config) as cloud:
        events = Events()
        module = P2PModule()
        await module.init(_params(cloud), event_handler=events)
        try:
            assert module.nat_type == "udp-blocked"
            (error,) = events.named("natError")
            assert error["code"] == -2202 == ErrorCode.NAT_PROBE_ERROR
            assert "127.0.0.9" in error["message"]
            assert events.named("natChanged") == []
        finally:
            await module.destroy()


class ScriptedProbe:
    """Stands in for discover_nat_behaviour: each call returns (or raises) the next item;
    a call waits for ``gate`` when one is set."""

    def __init__(self, *script: NatBehaviour | Exception) -> None:
        self.script = list(script)
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, server: tuple[str, int], **_kw: Any) -> NatBehaviour:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def _behaviour(nat_type: str, mapped: tuple[str, int] | None = M1) -> NatBehaviour:
    base = classify(_results(mapped_via_other_ip=M1, answered_change_ip_port=True))
    return replace(base, nat_type=NatType(nat_type), mapped=mapped)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ScriptedProbe]:
    def install(*script: NatBehaviour | Exception) -> ScriptedProbe:
        probe = ScriptedProbe(*script)
        monkeypatch.setattr(module_module, "discover_nat_behaviour", probe)
        return probe

    return install


async def test_nat_changed_and_nat_error_on_reset(
    rfc5780_cloud: CloudServer, scripted: Callable[..., ScriptedProbe]
) -> None:
    scripted(
        _behaviour("full-cone"),
        _behaviour("full-cone", ("198.51.100.1", 9999)),  # new port only: a new socket's
        _behaviour("full-cone", ("198.51.100.7", 5000)),  # new public address
        _behaviour("symmetric", ("198.51.100.7", 5000)),  # new type
        LinkError("nat_probe", "no socket"),  # cannot probe at all
        _behaviour("udp-blocked", None),  # no answer
        _behaviour("symmetric", ("198.51.100.7", 5000)),  # back
    )
    events = Events()
    module = P2PModule()
    await module.init(_params(rfc5780_cloud), event_handler=events)
    try:
        assert module.nat_type == "full-cone" and events.seen == []
        await module.reset_p2p()
        assert events.seen == []
        await module.reset_p2p()
        (changed,) = events.named("natChanged")
        assert changed["nat_type"] == "full-cone" and changed["previous"] == "full-cone"
        assert changed["mapped"] == "198.51.100.7:5000"
        assert changed["previous_mapped"] == "198.51.100.1:9999"
        await module.reset_p2p()
        assert events.named("natChanged")[-1]["nat_type"] == "symmetric"
        assert events.named("natChanged")[-1]["previous"] == "full-cone"
        assert events.named("natChanged")[-1]["mapping"] == "endpoint-independent"
        await module.reset_p2p()
        assert events.seen[-1] == ("natError", {"code": -2202, "message": "no socket"})
        assert module.nat_type == "symmetric"  # a probe that could not run changes nothing
        await module.reset_p2p()
        assert events.seen[-1][0] == "natError" and events.seen[-1][1]["code"] == -2202
        assert module.nat_type == "udp-blocked"
        await module.reset_p2p()
        assert events.seen[-1][0] == "natChanged"
        assert events.seen[-1][1]["previous"] == "udp-blocked"
        assert [e for e, _ in events.seen] == [
            "natChanged",
            "natChanged",
            "natError",
            "natError",
            "natChanged",
        ]
    finally:
        await module.destroy()


async def test_concurrent_resets_are_refused_with_2201(
    rfc5780_cloud: CloudServer, scripted: Callable[..., ScriptedProbe]
) -> None:
    probe = scripted(_behaviour("open"), _behaviour("open"))
    module = P2PModule()
    await module.init(_params(rfc5780_cloud))
    try:
        probe.gate = asyncio.Event()
        first = asyncio.create_task(module.reset_p2p())
        await asyncio.sleep(0)
        with pytest.raises(XP2PError) as info:
            await module.reset_p2p()
        assert info.value.code == ErrorCode.NAT_PROBE_STARTED_TWICE
        probe.gate.set()
        await first
    finally:
        await module.destroy()


async def test_reset_before_init_is_2002() -> None:
    with pytest.raises(XP2PError) as info:
        await P2PModule().reset_p2p()
    assert info.value.code == ErrorCode.NOT_INITIALISED


async def test_lost_link_re_probes_in_the_background(
    stack: Stack, scripted: Callable[..., ScriptedProbe]
) -> None:
    probe = scripted(_behaviour("full-cone"), _behaviour("symmetric", ("198.51.100.9", 1)))
    events = Events()
    changed = asyncio.Event()
    module = P2PModule()

    def on_event(event: str, detail: Any) -> None:
        events(event, detail)
        changed.set()

    await module.init(stack.app_params, event_handler=on_event)
    try:
        await module.start_p2p_service("cam", StreamInfo(product_id="DEMO", device_name="cam1"))
        assert probe.calls == 1
        await stack.device.close()  # the link dies under the service: maybe a new network
        async with asyncio.timeout(15):
            await changed.wait()
        assert probe.calls == 2
        (detail,) = events.named("natChanged")
        assert detail["nat_type"] == "symmetric" and detail["previous"] == "full-cone"
    finally:
        await module.destroy()


async def test_stopping_a_service_does_not_re_probe(
    stack: Stack, scripted: Callable[..., ScriptedProbe]
) -> None:
    probe = scripted(_behaviour("full-cone"))
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", StreamInfo(product_id="DEMO", device_name="cam1"))
        await module.stop_p2p_service("cam")
        for _ in range(5):
            await asyncio.sleep(0)
        assert probe.calls == 1
    finally:
        await module.destroy()
