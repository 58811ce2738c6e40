"""xp2pInfo as a viewer gets it from the cloud: XP2PError (-2001, or -2005 for an old
device SDK) is the only refusal, and what parses encodes back to the same fields.

An input is the xp2pInfo text, or ``j`` + a JSON payload that the target wraps as
``XP2P<base64url>%<version>`` (the version: the payload's last line after a NUL), so the
fuzzer mutates the payload's fields and not only its base64."""

from __future__ import annotations

import base64

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.link.xp2pinfo"]):
    from xp2p.errors import ErrorCode, XP2PError
    from xp2p.link.xp2pinfo import Xp2pInfo

_CODES = (ErrorCode.BAD_XP2P_INFO, ErrorCode.DEVICE_VERSION_TOO_LOW)


def _wrapped(data: bytes) -> str:
    payload, _, version = data.partition(b"\0")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    return f"XP2P{body}%{harness.text(version or b'2.4.1')}"


def TestOneInput(data: bytes) -> None:
    text = _wrapped(data[1:]) if data[:1] == b"j" else harness.text(data)
    try:
        info = Xp2pInfo.parse(text)
    except XP2PError as exc:
        assert exc.code in _CODES, exc
        return
    assert Xp2pInfo.parse(info.encode()) == info


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
