"""ICE through aioice: candidate gathering, the offer/answer halves, and a bounded connect."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aioice
from aioice import Candidate, TransportPolicy, stun
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import CandidatePair, StunProtocol, relayed_candidate, server_reflexive_candidate
from aioice.mdns import is_mdns_hostname

from xp2p.link.config import IceServer, LinkConfig
from xp2p.link.errors import LinkError

logger = logging.getLogger("xp2p.link")

MAX_CANDIDATES = 32
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
#: Bound on gathering (reflexive address and TURN allocations).
GATHER_TIMEOUT = 3.0
#: Once one relay candidate is in, how much longer the others may take.
RELAY_GATHER_GRACE = 0.3
#: How long a relayed pair that answered waits for a direct pair before it is nominated,
#: when nothing says whether a direct path can exist (see ``link.nat.direct_possible``).
RELAY_GRACE = 0.5
#: First retransmission timeout of a connectivity check (aioice: 0.5 s for everything).
CHECK_RTO = 0.15
#: Bounds on what one offer can make this end send before the peer proved it holds the
#: offer's address (a check of its own with our password, or an answer to one of ours):
#: an offer is unauthenticated ICE input, and without them it aims a packet cannon
#: (docs/protocol.md §12). A real peer offers a handful of candidates, at most two or three
#: per address (host, reflexive, relay); each pair costs up to 7 checks (six retries).
MAX_CANDIDATES_PER_HOST = 4
MAX_UNPROVEN_CHECKS = 96


@dataclass(frozen=True, slots=True)
class IceParameters:
    """What one side tells the other through signalling."""

    ufrag: str
    pwd: str
    candidates: tuple[str, ...]  #: SDP candidate lines, without the "candidate:" prefix

    def to_json(self) -> dict[str, Any]:
        return {"ufrag": self.ufrag, "pwd": self.pwd, "candidates": list(self.candidates)}

    @classmethod
    def from_json(cls, data: Any) -> IceParameters:
        if not isinstance(data, dict):
            raise LinkError("bad_signal", "ICE parameters are not an object")
        ufrag, pwd, cands = data.get("ufrag"), data.get("pwd"), data.get("candidates")
        if not isinstance(ufrag, str) or not isinstance(pwd, str) or not isinstance(cands, list):
            raise LinkError("bad_signal", "ICE parameters lack ufrag, pwd or candidates")
        if len(cands) > MAX_CANDIDATES or not all(isinstance(c, str) for c in cands):
            raise LinkError("bad_signal", "ICE candidate list is malformed or too long")
        return cls(ufrag, pwd, tuple(cands))


def _parse_server(url: str) -> tuple[str, tuple[str, int], str]:
    """``stun:host:port`` / ``turn:host:port?transport=tcp`` → (scheme, (host, port), transport)."""
    scheme, _, rest = url.partition(":")
    rest, _, query = rest.partition("?")
    parts = urlsplit("//" + rest)
    if parts.hostname is None:
        raise ValueError(f"ICE server URL without host: {url}")
    default_port = 5349 if scheme in ("turns", "stuns") else 3478
    transport = "tcp" if "transport=tcp" in query or scheme == "turns" else "udp"
    return scheme, (parts.hostname, parts.port or default_port), transport


@dataclass(frozen=True, slots=True)
class TurnServer:
    """One TURN URL with its credentials: each gives the link one relay candidate."""

    address: tuple[str, int]
    transport: str  #: "udp" or "tcp"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: ``turns:``: True verifies against the system trust store, a context against its CAs.
    ssl: bool | ssl.SSLContext = False


def split_ice_servers(
    servers: tuple[IceServer, ...],
) -> tuple[tuple[str, int] | None, list[TurnServer]]:
    """The first STUN server (one reflexive address is all ICE needs) and every TURN URL.

    Every TURN URL counts: TURN over UDP for most networks, over TCP (or TLS) for those that
    block UDP outright, and more than one server for redundancy.
    """
    stun_server: tuple[str, int] | None = None
    turn: list[TurnServer] = []
    for server in servers:
        for url in server.urls:
            try:
                scheme, addr, transport = _parse_server(url)
            except ValueError:
                logger.warning("ignoring malformed ICE server URL %r", url)
                continue
            if scheme in ("stun", "stuns") and stun_server is None:
                stun_server = addr
            elif scheme in ("turn", "turns"):
                turn.append(
                    TurnServer(
                        addr, transport, server.username, server.credential, scheme == "turns"
                    )
                )
    return stun_server, turn


def _is_relayed(pair: Any) -> bool:
    return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)


class _CheckProtocol(StunProtocol):
    """aioice's socket protocol, with connectivity checks retransmitted sooner, and on demand.

    aioice starts every STUN transaction with a 500 ms retransmission timeout. A check that a
    NAT drops because the peer's own check has not opened the way yet is retried only after
    that, so a path that needs the second try (one side symmetric, say) lost the race against
    the relay. 150 ms keeps six tries inside 9.5 s, past the connect timeout. And when the
    peer's check arrives on a pair whose own check is still waiting to be resent, the way is
    open now: ``resend_check`` sends it at once (RFC 8445 §7.3.1.4; aioice waits).
    """

    def __init__(self, receiver: Any) -> None:
        super().__init__(receiver)
        self._checks: dict[tuple[str, int], stun.Message] = {}  #: in flight, by destination

    def resend_check(self, addr: tuple[str, int]) -> None:
        request = self._checks.get(addr)
        if request is not None:
            self.send_stun(request, addr)

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        # Every check, first try or retransmission, goes through here: the budget of a
        # peer that has not proved itself yet is counted per datagram.
        is_check = message.message_class == stun.Class.REQUEST and (
            "ICE-CONTROLLING" in message.attributes or "ICE-CONTROLLED" in message.attributes
        )
        receiver = self.receiver
        if is_check and isinstance(receiver, IceConnection) and not receiver.allow_check():
            return  # dropped: the transaction times out and the pair fails
        super().send_stun(message, addr)

    async def request(
        self,
        request: stun.Message,
        addr: tuple[str, int],
        integrity_key: bytes | None = None,
        retransmissions: int | None = None,
    ) -> tuple[stun.Message, tuple[str, int]]:
        is_check = "ICE-CONTROLLING" in request.attributes or "ICE-CONTROLLED" in request.attributes
        if not is_check or retransmissions is not None:
            return await super().request(request, addr, integrity_key, retransmissions)
        if integrity_key is not None:
            request.add_message_integrity(integrity_key)
        transaction = stun.Transaction(request, addr, self, integrity_key=integrity_key)
        transaction._Transaction__timeout_delay = CHECK_RTO  # type: ignore[attr-defined]
        self.transactions[request.transaction_id] = transaction
        self._checks[addr] = request
        try:
            return await transaction.run()
        finally:
            del self.transactions[request.transaction_id]
            if self._checks.get(addr) is request:
                del self._checks[addr]


class IceConnection(aioice.Connection):
    """aioice's connection with our own candidate gathering and a relay of last resort.

    * Host candidates on the caller's addresses: aioice always leaves out loopback, so a
      machine with only 127.0.0.1 (or a test that wants one interface) could never pair.
    * Every TURN URL gives a relay candidate (aioice takes one TURN server), gathered at the
      same time as the reflexive address; gathering ends early once a relay candidate is in
      and the rest had ``RELAY_GATHER_GRACE`` more, so a UDP-blocked network does not wait
      out the STUN timeout.
    * The controlling side nominates a relayed pair only when no direct pair has succeeded
      ``relay_grace`` seconds after it, or when no direct pair is left to try: aioice
      nominates aggressively, so the first pair to answer (often the relay, on a fast
      server) would win. Relayed checks therefore go without USE-CANDIDATE until then.
    """

    def __init__(
        self,
        *,
        host_addresses: list[str],
        stun_server: tuple[str, int] | None = None,
        turn_servers: list[TurnServer] | None = None,
        relay_grace: float = RELAY_GRACE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._xp2p_host_addresses = host_addresses
        self._xp2p_stun = stun_server
        self._xp2p_turn = list(turn_servers or ())
        self.relay_grace = relay_grace
        #: Why each TURN server gave no relay candidate, for the error of a relay-only end.
        self.relay_failures: list[str] = []
        #: Set by the link once QUIC runs: each datagram then goes straight to it from the
        #: socket's callback, instead of through aioice's queue and a task switch each.
        self.datagram_handler: Callable[[bytes], None] | None = None
        self._relay_ready: list[Any] = []  #: relayed pairs that answered, not yet nominated
        #: The peer proved it holds an address it offered (``MAX_UNPROVEN_CHECKS``).
        self.peer_proved = False
        self.unproven_checks = 0  #: checks sent before it did
        self._relay_nominating: Any = None
        self._relay_timer: asyncio.TimerHandle | None = None

    def allow_check(self) -> bool:
        """Whether one more connectivity check may go out now."""
        if self.peer_proved:
            return True
        if self.unproven_checks >= MAX_UNPROVEN_CHECKS:
            if self.unproven_checks == MAX_UNPROVEN_CHECKS:
                logger.info(
                    "ICE: %d checks and no answer: no more until the peer answers",
                    MAX_UNPROVEN_CHECKS,
                )
                self.unproven_checks += 1  # logged once
            return False
        self.unproven_checks += 1
        return True

    def data_received(self, data: bytes, component: int) -> None:
        if self.datagram_handler is not None:
            self.datagram_handler(data)
        else:
            super().data_received(data, component)

    def send_now(self, data: bytes) -> None:
        """``send()`` without a coroutine per datagram.

        aioice's ``send`` only looks up the nominated pair and calls its transport's
        ``sendto`` (a TURN relay's transport queues the send itself), so doing the same here
        sends exactly the same way. Raises ConnectionError when there is no pair (closed).
        """
        pair = self._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        pair.protocol.transport.sendto(data, pair.remote_addr)

    # ---- gathering ------------------------------------------------------------------

    async def gather_candidates(self) -> None:
        if self._local_candidates_start:
            return
        self._local_candidates_start = True
        relay_only = self._transport_policy == TransportPolicy.RELAY
        hosts = [] if relay_only else await self._bind_hosts()
        self._local_candidates = [p.local_candidate for p in hosts]
        stun_server = self._xp2p_stun
        reflexive: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(server_reflexive_candidate(p, stun_server))
            for p in hosts
            if stun_server is not None and ipaddress.ip_address(p.local_candidate.host).version == 4
        ]
        relays: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._allocate(server)) for server in self._xp2p_turn
        ]
        for task in await _gather_bounded(reflexive, relays):
            candidate, protocol = task.result()
            self._local_candidates.append(candidate)
            if protocol is not None:
                self._protocols.append(protocol)
        self._local_candidates_end = True

    async def _bind_hosts(self) -> list[StunProtocol]:
        loop = asyncio.get_running_loop()
        protocols: list[StunProtocol] = []
        for address in self._xp2p_host_addresses:
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _CheckProtocol(self), local_addr=(address, 0)
                )
            except OSError as exc:
                logger.info("cannot bind a host candidate on %s: %s", address, exc)
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # aioice asks for 256 KiB; a download burst at 100 ms RTT overflowed it and the
                # drops shrank the congestion window (bench/download.py: 38 -> 61 Mbit/s with
                # 4 MiB). The kernel caps the request at net.core.rmem_max.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=1,
                transport="udp",
                priority=candidate_priority(1, "host"),
                host=host,
                port=port,
                type="host",
            )
            protocols.append(protocol)
        self._protocols += protocols
        return protocols

    async def _allocate(self, server: TurnServer) -> tuple[Candidate, StunProtocol]:
        try:
            candidate, protocol = await relayed_candidate(
                component=1,
                hide_related_address=self._transport_policy == TransportPolicy.RELAY,
                protocol_factory=lambda: _CheckProtocol(self),
                turn_server=server.address,
                turn_username=server.username,
                turn_password=server.password,
                # aioice annotates bool but hands it to create_connection, which takes a context.
                turn_ssl=server.ssl,  # type: ignore[arg-type]
                turn_transport=server.transport,
            )
        except Exception as exc:
            kind = "tls" if server.ssl else server.transport
            failure = f"TURN {server.address[0]}:{server.address[1]}/{kind}: {exc or '?'}"
            self.relay_failures.append(failure)
            logger.info("no relay from %s", failure)
            raise
        if server.transport != "udp":
            # Prefer a UDP relay: TCP adds head-of-line blocking under the link's own QUIC.
            candidate.priority = candidate_priority(1, "relay", local_pref=0)
        return candidate, protocol

    def empty_reason(self) -> str:
        """Why gathering found nothing to offer: a relay-only end that got no relay."""
        if self.relay_failures:
            return "; ".join(self.relay_failures)
        if not self._xp2p_turn:
            return "relay only, and no TURN server configured"
        return f"no TURN server answered within {GATHER_TIMEOUT:.0f} s"

    # ---- nomination -----------------------------------------------------------------

    def check_incoming(self, message: stun.Message, addr: tuple[str, int], protocol: Any) -> None:
        # The peer's check got through, so its NAT now lets ours through too: resend ours at
        # once rather than after its retransmission timeout (the controlled side cannot
        # finish ICE, and so cannot answer QUIC, before its own check on the pair succeeds).
        pair = next(
            (p for p in self._check_list if p.protocol is protocol and p.remote_addr == addr),
            None,
        )
        # aioice calls this only for a check that carries our password's integrity: the
        # peer holds this address and read our answer.
        self.peer_proved = True
        if pair is not None and pair.state == CandidatePair.State.IN_PROGRESS:
            if isinstance(protocol, _CheckProtocol):
                protocol.resend_check(addr)
        super().check_incoming(message, addr, protocol)

    def build_request(self, pair: Any, nominate: bool) -> stun.Message:
        if nominate and _is_relayed(pair) and pair is not self._relay_nominating:
            nominate = False  # checked now, nominated only as the last resort
        return super().build_request(pair, nominate)

    def check_complete(self, pair: Any) -> None:
        if pair.state == CandidatePair.State.SUCCEEDED:
            self.peer_proved = True  # it answered one of our checks with our password
        if (
            self.ice_controlling
            and pair.state == CandidatePair.State.SUCCEEDED
            and pair.nominated
            and _is_relayed(pair)
            and pair is not self._relay_nominating
        ):
            # aioice marked it nominated because it asked to; the peer was not told.
            pair.nominated = False
            pair.task = None
            self._relay_ready.append(pair)
            if not self._direct_pending():
                self._nominate_relay()
            elif self._relay_timer is None:
                loop = asyncio.get_running_loop()
                self._relay_timer = loop.call_later(self.relay_grace, self._nominate_relay)
            return
        super().check_complete(pair)
        if self._relay_ready and not self._nominated and not self._direct_pending():
            self._nominate_relay()

    def _direct_pending(self) -> bool:
        """A direct pair that may still succeed."""
        return any(
            not _is_relayed(p)
            and p.state not in (CandidatePair.State.SUCCEEDED, CandidatePair.State.FAILED)
            for p in self._check_list
        )

    def _nominate_relay(self) -> None:
        if self._relay_timer is not None:
            self._relay_timer.cancel()
            self._relay_timer = None
        if self._nominated or self._relay_nominating is not None or not self._relay_ready:
            return
        best = max(self._relay_ready, key=lambda p: p.local_candidate.priority)
        self._relay_ready.remove(best)
        self._relay_nominating = best
        logger.info("no direct path: nominating the relayed pair %s", best)
        best.task = asyncio.ensure_future(self.check_start(best))

    async def close(self) -> None:
        if self._relay_timer is not None:
            self._relay_timer.cancel()
            self._relay_timer = None
        await super().close()


async def _gather_bounded(
    reflexive: list[asyncio.Future[Any]], relays: list[asyncio.Future[Any]]
) -> list[asyncio.Future[Any]]:
    """Wait for the gathering tasks within GATHER_TIMEOUT; stop RELAY_GATHER_GRACE after the
    first relay candidate. Returns the tasks that succeeded; cancels the rest."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[Any]] = {*reflexive, *relays}
    deadline = loop.time() + GATHER_TIMEOUT
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
        if any(r.done() and not r.cancelled() and r.exception() is None for r in relays):
            deadline = min(deadline, loop.time() + RELAY_GATHER_GRACE)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return [
        t for t in (*reflexive, *relays) if t.done() and not t.cancelled() and t.exception() is None
    ]


def host_addresses(config: LinkConfig) -> list[str]:
    if config.host_addresses is not None:
        return list(config.host_addresses)
    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=config.use_ipv6)
    return list(found) or ["127.0.0.1"]


def turn_tls_context(ca_pem: str) -> ssl.SSLContext:
    """Verification of ``turns:`` servers against this CA alone, hostname (or IP) included:
    an operator's private CA must not also let any public certificate pass as the relay.
    (Not ``create_default_context(cadata=...)``: that loads the system store for an empty
    string.) PROTOCOL_TLS_CLIENT requires a certificate and checks the hostname."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise LinkError("bad_config", f"turn_tls_ca is not a PEM CA certificate: {exc}") from exc
    return context


def create_ice(
    config: LinkConfig, *, controlling: bool, relay_grace: float = RELAY_GRACE
) -> IceConnection:
    stun_server, turn_servers = split_ice_servers(config.ice_servers)
    if config.nat_type == "udp-blocked":
        # Asking would only wait out timeouts: no reflexive address, relays over TCP only.
        stun_server = None
        turn_servers = [t for t in turn_servers if t.transport != "udp"]
    if config.turn_tls_ca is not None and any(t.ssl for t in turn_servers):
        tls = turn_tls_context(config.turn_tls_ca)
        turn_servers = [replace(t, ssl=tls) if t.ssl else t for t in turn_servers]
    return IceConnection(
        host_addresses=host_addresses(config),
        stun_server=stun_server,
        turn_servers=turn_servers,
        relay_grace=relay_grace,
        ice_controlling=controlling,
        components=1,
        use_ipv6=config.use_ipv6,
        transport_policy=TransportPolicy.RELAY if config.relay_only else TransportPolicy.ALL,
    )


def local_parameters(ice: aioice.Connection) -> IceParameters:
    return IceParameters(
        ufrag=ice.local_username,
        pwd=ice.local_password,
        candidates=tuple(c.to_sdp() for c in ice.local_candidates),
    )


async def set_remote_parameters(ice: aioice.Connection, remote: IceParameters) -> None:
    ice.remote_username = remote.ufrag
    ice.remote_password = remote.pwd
    added = 0
    per_host: dict[str, int] = {}
    for line in remote.candidates:
        try:
            candidate = Candidate.from_sdp(line)
        except (ValueError, IndexError):
            logger.debug("skipping malformed remote candidate %r", line)
            continue
        if not 0 < candidate.port < 65536:
            # asyncio treats the OverflowError of such a sendto as fatal and closes our socket,
            # which would take the good pairs on that socket down with it.
            logger.debug("skipping remote candidate with a bad port %r", line)
            continue
        if is_mdns_hostname(candidate.host):
            # aioice peers never offer mDNS names, and resolving one costs a second of
            # multicast queries each, which a hostile offer would turn into a 32 s stall.
            logger.debug("skipping mDNS remote candidate %r", line)
            continue
        refusal = unprobeable(candidate.host)
        if refusal is not None:
            logger.debug("skipping remote candidate %r: %s", line, refusal)
            continue
        if per_host.get(candidate.host, 0) >= MAX_CANDIDATES_PER_HOST:
            logger.debug("skipping remote candidate %r: too many on one address", line)
            continue
        per_host[candidate.host] = per_host.get(candidate.host, 0) + 1
        await ice.add_remote_candidate(candidate)
        added += 1
    await ice.add_remote_candidate(None)
    if not added:
        raise LinkError("no_candidates", "the peer offered no usable ICE candidates")


def unprobeable(host: str) -> str | None:
    """Why a remote candidate's address must not be sent checks, or None if it may.

    Only literal IP addresses (a name would make us resolve what the peer chose), and none
    that reaches more than one host or none: multicast, broadcast, unspecified, reserved."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "not an IP address"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255") or address.is_reserved
    ):
        return "broadcast or reserved"
    return None


def selected_pair(ice: aioice.Connection) -> tuple[Candidate, Candidate] | None:
    """(local, remote) candidates of the nominated pair, for logs and ``link_mode``."""
    pair = getattr(ice, "_nominated", {}).get(1)
    if pair is None:
        return None
    return pair.local_candidate, pair.remote_candidate


async def connect_ice(ice: aioice.Connection, timeout: float) -> None:
    try:
        await asyncio.wait_for(ice.connect(), timeout)
    except TimeoutError as exc:
        raise LinkError("ice_timeout", f"no ICE path to the peer within {timeout:.0f} s") from exc
    except ConnectionError as exc:
        raise LinkError("ice_failed", f"ICE negotiation failed: {exc}") from exc
