"""The cloud's signalling, as it reads what devices and apps send.

* ``d`` + text: one frame from a device socket (``parse_device_frame``: BadMessage is the
  only refusal), then what the gateway does with a frame it accepted: an ``auth`` frame's
  proof checked (``verify_device_proof``: True or False, never an exception), an ``answer``
  or ``reject`` settling an offer waiting in a real ``SignallingHub`` (a ``request_id`` of
  ``"@"`` names the waiting one) and the app's HTTP answer made from it.
  A ``link_up`` frame is checked against a hub that answered one offer: it counts (True)
  only for that offer's id, once.
* ``c`` + bytes: an app's ``POST .../connect`` body as the cloud reads it (ApiError 400).
* ``m`` + text: an ``Authorization`` header at ``GET /metrics`` (``MetricsAccess.allows``:
  True only for the operator's exact bearer token, never an exception).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.cloud", "xp2p.auth"]):
    from xp2p.auth import verify_device_proof
    from xp2p.cloud.app import MAX_OFFER_SIZE, ApiError, json_object
    from xp2p.cloud.device_ws import BadMessage, parse_device_frame
    from xp2p.cloud.hub import DeviceRefused, RelayError, SignallingHub
    from xp2p.cloud.metrics import MetricsAccess

_METRICS = MetricsAccess("the-operators-metrics-token")

_LOOP = asyncio.new_event_loop()
_REFUSED_LOG = "device %s/%s refused a connection: %r (%d)"
_NONCE = bytes(16)


class StandInDevice:
    """A signed-in device socket as the hub sees it: it keeps what the hub sends it."""

    product_id = "DEMO"
    device_name = "cam1"
    session_id = "s1"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        json.dumps(message)  # what the socket does with it
        self.sent.append(message)

    async def close(self, reason: str) -> None:
        pass


async def _settle(doc: dict[str, Any]) -> None:
    hub = SignallingHub()
    device = StandInDevice()
    hub.attach(device)
    offer = asyncio.ensure_future(hub.relay_offer("DEMO", "cam1", "app", {"v": 1}, 5.0))
    await asyncio.sleep(0)
    waiting = device.sent[0]["request_id"]
    rid = waiting if doc["request_id"] == "@" else doc["request_id"]
    if doc["type"] == "answer":
        settled = hub.answer(device, rid, doc["answer"])
    else:
        code, reason = doc["code"], doc.get("reason", "")[:200]
        settled = hub.refuse(device, rid, code, reason)
        assert _REFUSED_LOG % ("DEMO", "cam1", reason, code)  # the gateway logs this line
    assert settled == (rid == waiting)
    if not settled:
        offer.cancel()
        return
    try:
        answer = await offer
    except DeviceRefused as exc:
        extra = {"device_code": exc.device_code, "device_reason": exc.reason}
        json.dumps({"error": {"code": exc.code, "message": str(exc), **extra}})
        return
    except RelayError as exc:
        raise AssertionError(f"a settled offer failed: {exc!r}") from exc
    json.dumps({"answer": answer})  # the app's HTTP answer


def _device_frame(text: str) -> None:
    try:
        doc = parse_device_frame(text)
    except BadMessage:
        return
    kind = doc["type"]
    if kind == "auth":
        valid = verify_device_proof(
            "a device secret", _NONCE, doc["product_id"], doc["device_name"], doc["proof"]
        )
        assert valid is False
    elif kind in ("answer", "reject"):
        _LOOP.run_until_complete(_settle(doc))
    elif kind == "link_up":
        _LOOP.run_until_complete(_link_up(doc))


async def _link_up(doc: dict[str, Any]) -> None:
    hub = SignallingHub()
    device = StandInDevice()
    hub.attach(device)
    offer = asyncio.ensure_future(hub.relay_offer("DEMO", "cam1", "app", {"v": 1}, 5.0))
    await asyncio.sleep(0)
    answered = device.sent[0]["request_id"]
    assert hub.answer(device, answered, {})
    await offer
    rid = answered if doc["request_id"] == "@" else doc["request_id"]
    assert hub.link_up(device, rid) == (rid == answered)
    assert not hub.link_up(device, rid)  # once


def _connect_body(body: bytes) -> None:
    try:
        offer = json_object(body).get("offer")
    except ApiError as exc:
        assert exc.status == 400, exc
        return
    if isinstance(offer, dict):
        len(json.dumps(offer, separators=(",", ":"))) > MAX_OFFER_SIZE  # noqa: B015


def TestOneInput(data: bytes) -> None:
    kind, body = data[:1], data[1:]
    if kind == b"d":
        _device_frame(harness.text(body))
    elif kind == b"c":
        _connect_body(body)
    elif kind == b"m":
        header = harness.text(body)
        if _METRICS.allows("127.0.0.1", header):  # loopback does not matter with a token
            scheme, _, given = header.partition(" ")
            assert scheme.lower() == "bearer" and given.strip() == _METRICS.token


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
