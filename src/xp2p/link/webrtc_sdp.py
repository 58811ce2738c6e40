"""Pure checks on the SDP of a WebRTC link (docs/protocol.md §7, WebRTC offers): bounded
offers on the device, and the viewer's pin of the device's DTLS certificate.

``check_answer_fingerprint`` is the rule the JavaScript SDK mirrors: every ``a=fingerprint``
line of the device's answer is SHA-256 and equals the fingerprint published in xp2pInfo, and
there is at least one. DTLS then proves the peer holds that certificate's key, so a cloud or
relay that rewrites the answer can drop the link but cannot impersonate the camera.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from aioice.mdns import is_mdns_hostname

from xp2p.link.errors import LinkError
from xp2p.link.ice import MAX_CANDIDATES, MAX_CANDIDATES_PER_HOST, unprobeable

#: An offer with a few candidates is 1-3 KB; the cloud refuses offers over 16 KiB anyway.
MAX_SDP_BYTES = 12 * 1024
#: Chromium offers its host addresses as mDNS names (one per interface); resolving one costs
#: aiortc up to a second of multicast queries inside ``setRemoteDescription``, so a hostile
#: offer full of them would stall the device's answer: a few names per offer.
MAX_MDNS_NAMES = 2
_FINGERPRINT_LINE = re.compile(r"a=fingerprint:([A-Za-z0-9-]+) ([0-9A-Fa-f:]+)")


def _lines(sdp: str) -> list[str]:
    """Lines as aiortc splits them (``str.splitlines``: CR, LF and the rarer separators
    too), a superset of any browser's splits: no line can hide inside another."""
    return sdp.splitlines()


def count_candidates(sdp: str) -> int:
    return sum(1 for line in _lines(sdp) if line.startswith("a=candidate:"))


def parse_webrtc_offer(offer: Any) -> tuple[str, str]:
    """Device side: (offer SDP, grant token) of ``{"v": 1, "transport": "webrtc", ...}``.

    Bounded like a QUIC offer: at most ``MAX_CANDIDATES`` candidates (each costs the device
    connectivity checks), an SDP of at most ``MAX_SDP_BYTES`` that offers a data channel."""
    if not isinstance(offer, dict) or offer.get("v") != 1 or offer.get("transport") != "webrtc":
        raise LinkError("bad_signal", "offer is malformed")
    grant, sdp = offer.get("grant"), offer.get("sdp")
    if not isinstance(grant, str) or not grant:
        raise LinkError("bad_signal", "offer carries no access grant")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise LinkError("bad_signal", "offer carries no SDP")
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise LinkError("bad_signal", f"offer SDP is over {MAX_SDP_BYTES} bytes")
    if not any(line.startswith("m=application ") for line in _lines(sdp)):
        raise LinkError("bad_signal", "offer SDP has no data channel (m=application)")
    if count_candidates(sdp) > MAX_CANDIDATES:
        raise LinkError("bad_signal", f"offer has more than {MAX_CANDIDATES} ICE candidates")
    sdp = usable_candidates(sdp)
    if not count_candidates(sdp):
        raise LinkError("bad_signal", "offer has no usable ICE candidates")
    return sdp, grant


def _candidate_host(line: str) -> str | None:
    """The address of a well-formed ``a=candidate`` line, or None."""
    fields = line[len("a=candidate:") :].split()
    port = fields[5] if len(fields) >= 8 else ""
    # ASCII digits: str.isdigit() also takes "²", which int() refuses (a fuzz finding).
    if fields[6:7] != ["typ"] or not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    return fields[4] if 0 < int(port) < 65536 else None


def usable_candidates(sdp: str) -> str:
    """The offer with only the candidates the device may probe (the QUIC rules of
    ``link.ice.set_remote_parameters``): well-formed, a literal address that reaches one
    host or an mDNS name (at most ``MAX_MDNS_NAMES`` of them), at most
    ``MAX_CANDIDATES_PER_HOST`` per address. The rest are dropped, not refused."""
    per_host: dict[str, int] = {}
    names: set[str] = set()
    kept = []
    for line in _lines(sdp):  # CRLF out whatever the offer used: no line escapes the filter
        if line.startswith("a=candidate:"):
            host = _candidate_host(line)
            if host is None or per_host.get(host, 0) >= MAX_CANDIDATES_PER_HOST:
                continue
            if is_mdns_hostname(host):
                if host not in names and len(names) >= MAX_MDNS_NAMES:
                    continue
                names.add(host)
            elif unprobeable(host) is not None:
                continue
            per_host[host] = per_host.get(host, 0) + 1
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def split_mdns_candidates(sdp: str) -> tuple[str, list[str]]:
    """The offer without its mDNS (``.local``) candidates, and those candidates' attribute
    values (``foundation 1 udp ...``, without ``a=candidate:``).

    aiortc resolves each mDNS name inside ``setRemoteDescription``, waiting up to a second for
    an answer that never comes when the browser is not on the device's network, and the
    browser waits for the answer meanwhile. The device resolves them beside the checks instead
    (``webrtc.accept_webrtc``): a browser that can reach the device is found as a
    peer-reflexive candidate by its own checks, resolved or not."""
    kept, names = [], []
    for line in _lines(sdp):
        if line.startswith("a=candidate:"):
            host = _candidate_host(line)
            if host is not None and is_mdns_hostname(host):
                names.append(line[len("a=candidate:") :])
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", names


def sdp_fingerprint(fingerprint: str) -> str:
    """xp2pInfo's base64url SHA-256 as SDP writes it: ``AB:CD:...`` (upper-case hex)."""
    try:
        digest = base64.urlsafe_b64decode(fingerprint + "=" * (-len(fingerprint) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LinkError("bad_identity", "xp2pInfo's DTLS fingerprint is malformed") from exc
    if len(digest) != 32:
        raise LinkError("bad_identity", "xp2pInfo's DTLS fingerprint is not SHA-256")
    return ":".join(f"{b:02X}" for b in digest)


def check_answer_fingerprint(answer_sdp: str, fingerprint: str) -> None:
    """Viewer side: refuse an answer whose DTLS certificate is not the one xp2pInfo names."""
    if not fingerprint:
        raise LinkError("bad_identity", "xp2pInfo names no DTLS certificate (device too old?)")
    expected = sdp_fingerprint(fingerprint)
    # Every line that looks like a fingerprint must be one, exactly: a malformed line that
    # some parser still reads could otherwise carry another certificate past this check.
    lines = [x for x in _lines(answer_sdp) if x.strip().lower().startswith("a=fingerprint")]
    found = [m.groups() for line in lines if (m := _FINGERPRINT_LINE.fullmatch(line))]
    if not found or len(found) != len(lines):
        raise LinkError("bad_identity", "the device's answer has no well-formed DTLS fingerprint")
    for algorithm, value in found:
        if algorithm.lower() != "sha-256" or value.upper() != expected:
            raise LinkError(
                "bad_identity",
                "the device's DTLS certificate does not match xp2pInfo (stale xp2pInfo?)",
            )


def keep_sha256_fingerprints(sdp: str) -> str:
    """Device side: the answer names its certificate by SHA-256 only (the digest xp2pInfo
    carries), so a viewer can check every fingerprint line it is given."""
    kept = [
        line
        for line in _lines(sdp)
        if not line.startswith("a=fingerprint:") or line.startswith("a=fingerprint:sha-256 ")
    ]
    return "\r\n".join(kept) + "\r\n"
