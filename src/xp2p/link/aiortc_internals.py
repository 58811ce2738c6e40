"""Every aiortc private attribute xp2p touches, in one module, each guarded: a release that
moves one makes these raise ``RuntimeError`` naming it (tests/unit/test_library_internals.py
and tests/integration/test_webrtc_ice.py exercise them against the installed aiortc).

* **The certificate.** aiortc makes a fresh DTLS certificate for every
  ``RTCPeerConnection`` and has no public way to pass one in (``RTCConfiguration`` has no
  ``certificates``). The device needs one certificate per run, published in xp2pInfo, so a
  viewer can pin it: ``use_certificate``.
* **The ICE agent.** aiortc builds its aioice ``Connection`` from ``RTCConfiguration`` alone:
  it gathers on every interface (a device in a namespace with several must offer only the
  ones its ``LinkConfig`` names), takes one TURN URL, waits unboundedly for STUN, and has
  none of the QUIC link's bounds on checks to unproven addresses. ``use_ice_connection``
  runs the peer connection on the ``IceConnection`` a QUIC link would get instead.
* **Liveness.** aiortc learns of a vanished peer only from aioice's consent checks: six
  missed ones, 5 s apart (~30 s). ``SctpPulse`` counts the peer's authenticated packets and
  sends SCTP HEARTBEATs (which every SCTP stack must answer), so the link can apply QUIC's
  keepalive and idle deadline (``link.webrtc``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aioice
import aiortc
from aiortc import RTCCertificate, RTCPeerConnection, RTCSctpTransport
from aiortc.rtcsctptransport import HeartbeatChunk

#: The aiortc releases these hooks were read against (pyproject pins the same range).
TESTED_VERSIONS = ("1.16.",)

_CERTIFICATES = "_RTCPeerConnection__certificates"
_CREATE_SCTP = "_RTCPeerConnection__createSctpTransport"
#: RFC 4960 §3.3.5: a HEARTBEAT carries one Heartbeat Info parameter, echoed in the ACK.
_HEARTBEAT_INFO = 1


def _check_version() -> None:
    if not aiortc.__version__.startswith(TESTED_VERSIONS):
        raise RuntimeError(
            f"aiortc {aiortc.__version__}: xp2p's hooks into aiortc were checked against "
            f"{', '.join(v + 'x' for v in TESTED_VERSIONS)} only (xp2p.link.aiortc_internals)"
        )


def use_certificate(pc: RTCPeerConnection, certificate: RTCCertificate) -> None:
    """Make ``pc`` show ``certificate`` in its DTLS handshakes and SDP fingerprints. Call it
    before the first ``createOffer``/``createAnswer`` (its DTLS transports take it then)."""
    _check_version()
    if not isinstance(getattr(pc, _CERTIFICATES, None), list):
        raise RuntimeError("aiortc changed: RTCPeerConnection has no certificate list")
    setattr(pc, _CERTIFICATES, [certificate])


def use_ice_connection(pc: RTCPeerConnection, ice: aioice.Connection) -> RTCSctpTransport:
    """Make the data-channel transport of a new ``pc`` gather and check on ``ice``.

    Call it before ``setRemoteDescription``: it creates the SCTP transport (and so its one
    ICE transport) now, as aiortc would while applying an offer's ``m=application``, and
    swaps that transport's aioice connection before anything has used it. An offer with
    media sections would bring ICE transports of aiortc's own: the caller refuses those.
    Returns the SCTP transport."""
    _check_version()
    create = getattr(pc, _CREATE_SCTP, None)
    if not callable(create):
        raise RuntimeError("aiortc changed: RTCPeerConnection cannot create its SCTP transport")
    before: RTCSctpTransport | None = pc.sctp
    if before is not None:
        raise RuntimeError("use_ice_connection needs a peer connection without SCTP yet")
    create()
    sctp: RTCSctpTransport | None = pc.sctp
    if sctp is None:
        raise RuntimeError("aiortc changed: creating the SCTP transport left none")
    transport = sctp.transport.transport  # RTCSctpTransport -> RTCDtlsTransport -> ICE
    gatherer = transport.iceGatherer
    old = getattr(gatherer, "_connection", None)
    if not isinstance(old, aioice.Connection) or getattr(transport, "_connection", None) is not old:
        raise RuntimeError("aiortc changed: its ICE transport has no aioice connection")
    if not (callable(getattr(transport, "_recv", None)) and callable(transport._send)):
        raise RuntimeError("aiortc changed: its ICE transport has no _recv/_send")
    if gatherer.state != "new":
        raise RuntimeError("use_ice_connection after gathering started")
    # The DTLS transport reads and writes through the ICE transport's _recv/_send, bound to
    # the old connection when the transport was built: rebind them too.
    gatherer._connection = ice
    transport._connection = ice
    transport._recv = ice.recv
    transport._send = ice.send
    return sctp


def uses_ice_connection(pc: RTCPeerConnection, ice: aioice.Connection) -> bool:
    """Whether every ICE transport of ``pc`` runs on ``ice`` (none of aiortc's own)."""
    transports = {t.receiver.transport.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport.transport)
    return bool(transports) and all(getattr(t, "_connection", None) is ice for t in transports)


class SctpPulse:
    """What tells a live peer from a vanished one on an SCTP association: how many packets
    arrived from it (counted after DTLS decrypted them, so forged datagrams do not count),
    and a HEARTBEAT that makes it send one (RFC 4960 §8.3; aiortc, Chromium and Firefox
    answer with a HEARTBEAT ACK). Install it before the association starts."""

    def __init__(self, sctp: RTCSctpTransport) -> None:
        _check_version()
        handle = getattr(sctp, "_handle_data", None)
        send = getattr(sctp, "_send_chunk", None)
        if not callable(handle) or not callable(send):
            raise RuntimeError("aiortc changed: RTCSctpTransport has no _handle_data/_send_chunk")
        self.received = 0  #: SCTP packets from the peer so far
        self._sctp = sctp
        self._send: Callable[[Any], Awaitable[None]] = send

        async def counted(data: bytes) -> None:
            # The DTLS transport hands every decrypted packet to this method, looked up on
            # the instance: the one place all of the peer's SCTP traffic passes.
            self.received += 1
            await handle(data)

        sctp._handle_data = counted  # type: ignore[method-assign]

    async def heartbeat(self) -> None:
        """Ask the peer for a packet; nothing happens before the association is up."""
        if self._sctp.state != "connected":
            return
        chunk = HeartbeatChunk()
        chunk.params = [(_HEARTBEAT_INFO, os.urandom(8))]
        await self._send(chunk)
