"""The one aiortc private attribute xp2p touches; guarded by tests/unit/test_library_internals.py.

aiortc makes a fresh DTLS certificate for every ``RTCPeerConnection`` and has no public way to
pass one in (``RTCConfiguration`` has no ``certificates``). The device needs one certificate
per run, published in xp2pInfo, so a viewer can pin it: this sets it on a new connection.
"""

from __future__ import annotations

from aiortc import RTCCertificate, RTCPeerConnection

_CERTIFICATES = "_RTCPeerConnection__certificates"


def use_certificate(pc: RTCPeerConnection, certificate: RTCCertificate) -> None:
    """Make ``pc`` show ``certificate`` in its DTLS handshakes and SDP fingerprints. Call it
    before the first ``createOffer``/``createAnswer`` (its DTLS transports take it then)."""
    if not isinstance(getattr(pc, _CERTIFICATES, None), list):
        raise RuntimeError("aiortc changed: RTCPeerConnection has no certificate list")
    setattr(pc, _CERTIFICATES, [certificate])
