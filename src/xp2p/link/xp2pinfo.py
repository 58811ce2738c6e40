"""xp2pInfo: ``XP2P<base64url(payload)>%<sdk version>`` (docs/protocol.md).

The payload is compact JSON naming the device, the fingerprint of its current link certificate
and a per-sign-in nonce, so the string changes whenever the device restarts or re-keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from xp2p.errors import ErrorCode, XP2PError

PREFIX = "XP2P"
MAX_LENGTH = 2048
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
_FINGERPRINT_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: Oldest device SDK this viewer can talk to (-2005 below it).
MIN_DEVICE_VERSION = (2, 0)


@dataclass(frozen=True, slots=True)
class Xp2pInfo:
    product_id: str
    device_name: str
    fingerprint: str  #: SHA-256 of the device's link certificate (see link.identity)
    session: str  #: random per device sign-in
    sdk_version: str
    #: SHA-256 of the device's DTLS certificate for WebRTC links (base64url, like
    #: ``fingerprint``); empty for a device without WebRTC. Optional on the wire (``w``).
    dtls_fingerprint: str = ""

    def encode(self) -> str:
        doc = {
            "v": 1,
            "p": self.product_id,
            "d": self.device_name,
            "f": self.fingerprint,
            "s": self.session,
        }
        if self.dtls_fingerprint:
            doc["w"] = self.dtls_fingerprint
        payload = json.dumps(doc, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
        return f"{PREFIX}{body}%{self.sdk_version}"

    @classmethod
    def parse(cls, text: str) -> Xp2pInfo:
        """Parse and validate; every failure is ``XP2PError(-2001)`` with the reason."""
        if not isinstance(text, str) or not text:
            raise _bad("empty")
        if len(text) > MAX_LENGTH:
            raise _bad(f"longer than {MAX_LENGTH} characters")
        if not text.startswith(PREFIX):
            raise _bad(f"does not start with {PREFIX!r}")
        body, sep, version = text[len(PREFIX) :].partition("%")
        if not sep or not _VERSION_RE.fullmatch(version):
            raise _bad("missing or malformed '%<sdk version>' suffix")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            payload = json.loads(raw)
        except (binascii.Error, ValueError, RecursionError) as exc:  # json: deep nesting
            raise _bad("payload is not base64url JSON") from exc
        if not isinstance(payload, dict) or type(payload.get("v")) is not int or payload["v"] != 1:
            raise _bad("unknown payload version")
        fields = {k: payload.get(k) for k in ("p", "d", "f", "s")}
        if not all(isinstance(v, str) and v for v in fields.values()):
            raise _bad("payload lacks product, device, fingerprint or session")
        if not _FINGERPRINT_RE.fullmatch(fields["f"] or ""):
            raise _bad("fingerprint is malformed")
        dtls = payload.get("w", "")
        if not isinstance(dtls, str) or (dtls and not _FINGERPRINT_RE.fullmatch(dtls)):
            raise _bad("DTLS fingerprint is malformed")
        info = cls(
            fields["p"] or "",
            fields["d"] or "",
            fields["f"] or "",
            fields["s"] or "",
            version,
            dtls_fingerprint=dtls,
        )
        major_minor = (*(int(x) for x in version.split(".")[:2]), 0)[:2]  # "2" means 2.0
        if major_minor < MIN_DEVICE_VERSION:
            raise XP2PError(
                ErrorCode.DEVICE_VERSION_TOO_LOW,
                f"device SDK {version} is older than {'.'.join(map(str, MIN_DEVICE_VERSION))}",
            )
        return info


def _bad(reason: str) -> XP2PError:
    return XP2PError(ErrorCode.BAD_XP2P_INFO, f"bad xp2pInfo: {reason}")
