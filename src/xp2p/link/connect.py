"""Setting up a link: the viewer's offer, the device's answer, ICE, then the QUIC handshake.

Signalling messages are plain JSON objects the cloud relays without reading:

* offer  ``{"v": 1, "ice": {...}, "grant": "<access grant>"}``
* answer ``{"v": 1, "ice": {...}, "certificate": "<PEM>"}``

The viewer checks the answer's certificate against the fingerprint in xp2pInfo *before* it
trusts anything else in the answer, then pins that certificate as QUIC's only trust anchor: a
cloud or relay in the middle can drop the link but cannot impersonate the device.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import pull_quic_header

from xp2p.link import conditioner
from xp2p.link.config import LinkConfig
from xp2p.link.congestion import use_xp2p_pacer
from xp2p.link.errors import LinkError
from xp2p.link.ice import (
    RELAY_GRACE,
    IceConnection,
    IceParameters,
    connect_ice,
    create_ice,
    local_parameters,
    set_remote_parameters,
)
from xp2p.link.identity import LINK_SERVER_NAME, LinkIdentity, certificate_fingerprint
from xp2p.link.link import Link, RequestHandler
from xp2p.link.nat_behaviour import NatType
from xp2p.link.quic_internals import ReceiveWindowQuic

logger = logging.getLogger("xp2p.link")

ALPN = ["h3"]
MAX_CERTIFICATE_PEM = 4096
SIGNAL_VERSION = 1

Signaller = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _new_quic(configuration: QuicConfiguration, **kwargs: Any) -> ReceiveWindowQuic:
    quic = ReceiveWindowQuic(configuration=configuration, **kwargs)
    use_xp2p_pacer(quic)
    return quic


def _quic_configuration(config: LinkConfig, *, is_client: bool) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=ALPN,
        idle_timeout=config.idle_timeout,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
        congestion_control_algorithm=config.congestion_control,
        server_name=LINK_SERVER_NAME if is_client else None,
    )


async def open_link(
    config: LinkConfig,
    signal: Signaller,
    *,
    fingerprint: str,
    grant: str,
    peer_label: str,
    reoffer: Signaller | None = None,
) -> Link:
    """Viewer side: connect to a device whose certificate has this fingerprint.

    ``signal`` carries the offer to the device (through the cloud) and returns its answer.
    Bounded by ``config.connect_timeout`` from the moment candidates are gathered.
    ``reoffer``: the link follows network changes, its re-offers carried by this (a
    signaller like ``signal``, on a fresh connection to the cloud: the one ``signal`` used
    may sit on an address the machine lost) (``xp2p.link.handover``; the peer must accept
    re-offers, as ``DeviceAgent`` does).
    """
    loop = asyncio.get_running_loop()
    ice = create_ice(config, controlling=True)
    try:
        await ice.gather_candidates()
        if not ice.local_candidates:
            # A relay-only end whose TURN servers all failed (a certificate that does not
            # verify, say): the device would only refuse an empty offer, without the reason.
            raise LinkError("no_candidates", f"no ICE candidates to offer: {ice.empty_reason()}")
        offer = {
            "v": SIGNAL_VERSION,
            "ice": local_parameters(ice).to_json(),
            "grant": grant,
            "nat": config.nat_type,
        }
        deadline = loop.time() + config.connect_timeout
        try:
            answer = await asyncio.wait_for(signal(offer), config.connect_timeout)
        except TimeoutError as exc:
            # Callers handle LinkError; a bare TimeoutError would escape them.
            raise LinkError(
                "signal_timeout", f"no answer from the peer within {config.connect_timeout:.0f} s"
            ) from exc
        remote, certificate_pem = parse_answer(answer, fingerprint)
        ice.relay_grace = relay_grace(config.nat_type, answer.get("nat"))
        conditioner.attach(ice, config.conditions)
        await set_remote_parameters(ice, remote)
        await connect_ice(ice, max(0.1, deadline - loop.time()))
        quic_config = _quic_configuration(config, is_client=True)
        quic_config.verify_mode = ssl.CERT_REQUIRED
        quic_config.cadata = certificate_pem.encode("ascii")
        link = Link(ice, _new_quic(quic_config), config, peer_label=peer_label)
    except BaseException:
        await ice.close()
        raise
    link.start()
    await link.wait_handshake(max(0.1, deadline - loop.time()))
    logger.info("link %d to %s up (%s, %s)", link.id, peer_label, link.link_mode, link.path)
    if reoffer is not None:
        from xp2p.link.handover_io import ViewerMover

        ViewerMover(link, reoffer, relay_grace=relay_grace).start()
    return link


#: How long a working relay waits for a direct path that theory says exists (it normally
#: comes within a round trip or two; more than this means the theory was wrong).
DIRECT_WAIT = 1.5


def relay_grace(local_nat: str, remote_nat: Any) -> float:
    """Seconds a relayed pair that works waits for a direct one, from both ends' NAT types.

    No wait where no direct path can exist (a relay is then as fast as a direct attempt
    would be slow), a longer one where it can, aioice's default guess where a side is unknown.
    """
    kinds = {str(local_nat), str(remote_nat)}
    if NatType.UDP_BLOCKED in kinds:
        return 0.0
    if not kinds <= set(_DIRECT_RULES):
        return RELAY_GRACE
    a, b = (_DIRECT_RULES[str(n)] for n in (local_nat, remote_nat))
    return DIRECT_WAIT if direct_possible(a, b) else 0.0


#: (endpoint-independent mapping, filtering lets in a new port from a known address)
_DIRECT_RULES: dict[str, tuple[bool, bool]] = {
    NatType.OPEN: (True, True),
    NatType.FULL_CONE: (True, True),
    NatType.RESTRICTED_CONE: (True, True),
    NatType.PORT_RESTRICTED: (True, False),
    NatType.SYMMETRIC: (False, False),
}


def direct_possible(a: tuple[bool, bool], b: tuple[bool, bool]) -> bool:
    """Hole punching works when both mappings are endpoint-independent, or when the one
    symmetric side's new port is let in by the other side's address-only filtering (its
    checks then arrive as peer-reflexive). Two symmetric NATs never meet directly."""
    (a_eim, a_lets_port), (b_eim, b_lets_port) = a, b
    return (a_eim and b_eim) or (a_eim and a_lets_port) or (b_eim and b_lets_port)


def parse_answer(answer: Any, fingerprint: str) -> tuple[IceParameters, str]:
    if not isinstance(answer, dict) or answer.get("v") != SIGNAL_VERSION:
        raise LinkError("bad_signal", "the device's answer is malformed")
    pem = answer.get("certificate")
    if not isinstance(pem, str) or len(pem) > MAX_CERTIFICATE_PEM:
        raise LinkError("bad_signal", "the device's answer has no certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError as exc:
        raise LinkError("bad_signal", "the device's certificate is not PEM") from exc
    if certificate_fingerprint(der) != fingerprint:
        raise LinkError(
            "bad_identity", "the device's link key does not match xp2pInfo (stale xp2pInfo?)"
        )
    return IceParameters.from_json(answer.get("ice")), pem


def parse_offer(offer: Any) -> tuple[IceParameters, str]:
    """Device side: (ICE parameters, grant token) of a viewer's offer."""
    if not isinstance(offer, dict) or offer.get("v") != SIGNAL_VERSION:
        raise LinkError("bad_signal", "offer is malformed")
    grant = offer.get("grant")
    if not isinstance(grant, str) or not grant:
        raise LinkError("bad_signal", "offer carries no access grant")
    return IceParameters.from_json(offer.get("ice")), grant


@dataclass
class PendingLink:
    """The device's half-open link: the answer to send now, the link once connected."""

    answer: dict[str, Any]
    link: asyncio.Future[Link]


async def accept_link(
    config: LinkConfig,
    identity: LinkIdentity,
    remote: IceParameters,
    *,
    handler: RequestHandler,
    peer_label: str,
) -> PendingLink:
    """Device side: gather, answer at once, and finish ICE + QUIC in the background."""
    ice = create_ice(config, controlling=False)
    try:
        await ice.gather_candidates()
        await set_remote_parameters(ice, remote)
    except BaseException:
        await ice.close()
        raise
    answer = {
        "v": SIGNAL_VERSION,
        "ice": local_parameters(ice).to_json(),
        "certificate": identity.certificate_pem,
        "nat": config.nat_type,
    }
    future: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_finish_accept(config, identity, ice, handler, peer_label, future))
    _accepting.add(task)  # the loop only keeps weak references to tasks
    task.add_done_callback(_accepting.discard)
    return PendingLink(answer, future)


_accepting: set[asyncio.Task[None]] = set()


async def _finish_accept(
    config: LinkConfig,
    identity: LinkIdentity,
    ice: IceConnection,
    handler: RequestHandler,
    peer_label: str,
    future: asyncio.Future[Link],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.connect_timeout
    try:
        conditioner.attach(ice, config.conditions)
        await connect_ice(ice, config.connect_timeout)
        first = await asyncio.wait_for(ice.recv(), max(0.1, deadline - loop.time()))
        try:
            header = pull_quic_header(Buffer(data=first), host_cid_length=8)
        except (BufferReadError, ValueError) as exc:
            raise LinkError("quic_failed", "first datagram is not QUIC") from exc
        quic_config = _quic_configuration(config, is_client=False)
        quic_config.certificate = identity.certificate
        quic_config.private_key = identity.private_key
        quic = _new_quic(
            configuration=quic_config, original_destination_connection_id=header.destination_cid
        )
        link = Link(ice, quic, config, peer_label=peer_label, handler=handler)
        link.start(first_datagram=first)
        await link.wait_handshake(max(0.1, deadline - loop.time()))
    except Exception as exc:  # whatever failed, the device's waiter must hear of it
        if not isinstance(exc, LinkError | TimeoutError | ConnectionError):
            logger.exception("accepting a link from %s failed", peer_label)
        await ice.close()
        if not future.done():
            error = exc if isinstance(exc, LinkError) else LinkError("accept_failed", str(exc))
            future.set_exception(error)
        return
    logger.info("link %d from %s up (%s, %s)", link.id, peer_label, link.link_mode, link.path)
    if not future.done():
        future.set_result(link)
    else:
        await link.close("abandoned")
