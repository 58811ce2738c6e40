"""What the cloud sends a device, as the device's cloud session reads it: a stand-in
WebSocket delivers the input's lines as text frames (then closes) to the session's real
sign-in and serving code. The challenge comes first and the welcome second; a line ``@``
stands for a well-formed one (the welcome with a valid MAC for the fixed challenge and
device nonce, and the pinned grant key), so the fuzzer can vary either alone.
``SessionProtocolError`` (the session reconnects), ``CloudSignInError`` and
``SignInThrottled`` are the only failures; offers that parse reach ``on_offer`` and get an
answer frame."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import atheris
import harness
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

with atheris.instrument_imports(include=["xp2p.device.cloud_session", "xp2p.link.config"]):
    from xp2p.auth import export_public_key
    from xp2p.device.cloud_session import (
        CloudSignInError,
        DeviceCloudSession,
        OfferRequest,
        SessionProtocolError,
        SignInThrottled,
    )
    from xp2p.link.config import IceServer
    from xp2p.trust import WELCOME_MAC_FIELD, welcome_mac

_LOOP = asyncio.new_event_loop()
_SECRET = "a device secret for fuzzing"
_DEVICE_NONCE = bytes(range(16))
_GRANT_KEY = Ed25519PrivateKey.generate().public_key()
_CHALLENGE = json.dumps({"type": "challenge", "nonce": "00" * 16})
_WELCOME_DOC: dict[str, Any] = {
    "type": "welcome",
    "session_id": "s1",
    "grant_public_key": export_public_key(_GRANT_KEY),
    "ice_servers": [{"urls": ["stun:203.0.113.10:3478"]}],
    "stun": {"host": "203.0.113.10", "port": 3478, "alt_port": None},
    "server_time": 1700000000,
}
_WELCOME_DOC[WELCOME_MAC_FIELD] = welcome_mac(
    _SECRET, bytes(16), _DEVICE_NONCE, "DEMO", "cam1", _WELCOME_DOC
)
_WELCOME = json.dumps(_WELCOME_DOC)
logging.getLogger("xp2p").setLevel(logging.CRITICAL)  # a malformed offer is logged, as meant


@dataclass
class Frame:
    type: aiohttp.WSMsgType
    data: Any = None


class StandInSocket:
    """Delivers the given text frames, then a close; keeps what the device sends."""

    def __init__(self, frames: list[str]) -> None:
        self._frames = frames
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.close_code: int | None = None

    async def receive(self) -> Frame:
        if not self._frames:
            self.closed = True
            return Frame(aiohttp.WSMsgType.CLOSED)
        return Frame(aiohttp.WSMsgType.TEXT, self._frames.pop(0))

    async def send_str(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def exception(self) -> BaseException | None:
        return None


async def _answer(request: OfferRequest) -> dict[str, Any]:
    assert isinstance(request.offer, dict) and isinstance(request.request_id, str)
    _expiries(request.ice_servers)
    return {"v": 1}


def _expiries(servers: tuple[IceServer, ...]) -> None:
    # What both ends do with a TURN entry: when its credentials expire (the viewer refreshes
    # its sign-in before then).
    for server in servers:
        expires = server.expires_at
        assert expires is None or expires >= 0, expires


async def _session(frames: list[str]) -> None:
    session = DeviceCloudSession(
        "http://cloud.example",
        "DEMO",
        "cam1",
        _SECRET,
        grant_public_key=_GRANT_KEY,
        on_offer=_answer,
        xp2p_info_factory=lambda info: "XP2P",
    )
    session._new_device_nonce = lambda: _DEVICE_NONCE  # type: ignore[method-assign]
    ws = StandInSocket(frames)
    session._ws = ws  # type: ignore[assignment]
    try:
        info = await session._sign_in(ws)  # type: ignore[arg-type]
        _expiries(info.ice_servers)
        await session._serve(ws)  # type: ignore[arg-type]
        await session._offers.wait(1.0)
        assert not len(session._offers), "an offer was not answered"
    except (SessionProtocolError, CloudSignInError, SignInThrottled):
        pass
    finally:
        await session._offers.cancel_all()
    for reply in ws.sent[1:]:
        assert reply["type"] in ("answer", "reject"), reply


def TestOneInput(data: bytes) -> None:
    lines = harness.text(data).split("\n")
    defaults = [_CHALLENGE, _WELCOME]
    frames = [defaults[i] if i < 2 and line == "@" else line for i, line in enumerate(lines)]
    _LOOP.run_until_complete(_session(frames))


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
