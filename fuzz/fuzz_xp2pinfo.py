"""xp2pInfo as a viewer gets it from the cloud: XP2PError (-2001, or -2005 for an old
device SDK) is the only refusal, and what parses encodes back to the same fields."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.link.xp2pinfo"]):
    from xp2p.errors import ErrorCode, XP2PError
    from xp2p.link.xp2pinfo import Xp2pInfo

_CODES = (ErrorCode.BAD_XP2P_INFO, ErrorCode.DEVICE_VERSION_TOO_LOW)


def TestOneInput(data: bytes) -> None:
    try:
        info = Xp2pInfo.parse(harness.text(data))
    except XP2PError as exc:
        assert exc.code in _CODES, exc
        return
    assert Xp2pInfo.parse(info.encode()) == info


if __name__ == "__main__":
    harness.main(TestOneInput)
