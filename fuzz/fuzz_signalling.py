"""Offers and answers, as the ends of a link read them.

* ``o`` + JSON: a viewer's offer as the device reads it: ``parse_offer``, the access grant
  it carries (``GrantVerifier``), and its ICE candidates added to a real aioice agent
  (``set_remote_parameters``, the device's first use of them). LinkError and GrantError
  are the refusals.
* ``a`` + JSON: the device's answer as the viewer reads it (``parse_answer``; the corpus
  writes the stand-in device's certificate as ``"@"``, so the fuzzer gets past the
  fingerprint check) and the relay grace picked from its NAT type. LinkError only.
* ``g`` + bytes: an access grant payload, signed by the stand-in cloud, as a device parses
  it once the signature checks out. GrantError only.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import aioice
import atheris
import harness
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

with atheris.instrument_imports(include=["xp2p.link.connect", "xp2p.link.ice", "xp2p.auth"]):
    from xp2p.auth import (
        GrantError,
        GrantFailure,
        GrantSigner,
        GrantVerifier,
        b64url_encode,
    )
    from xp2p.link.connect import parse_answer, parse_offer, relay_grace
    from xp2p.link.errors import LinkError
    from xp2p.link.ice import IceParameters, set_remote_parameters
    from xp2p.link.identity import LinkIdentity

_DEVICE = LinkIdentity.generate()
_CLOUD_KEY = Ed25519PrivateKey.generate()
_VERIFIER = GrantVerifier(GrantSigner(_CLOUD_KEY).public_key)
_LOOP = asyncio.new_event_loop()


async def _add_candidates(remote: IceParameters) -> None:
    ice = aioice.Connection(ice_controlling=False)
    try:
        await set_remote_parameters(ice, remote)
    except LinkError as exc:
        assert exc.reason == "no_candidates", exc
    finally:
        await ice.close()


def _offer(doc: Any) -> None:
    try:
        remote, grant = parse_offer(doc)
    except LinkError as exc:
        assert exc.reason == "bad_signal", exc
        return
    try:
        _VERIFIER.verify(grant, "DEMO", "cam1", now=0.0)
    except GrantError:
        pass
    else:
        raise AssertionError("a grant verified without the cloud's key")
    _LOOP.run_until_complete(_add_candidates(remote))


def _answer(doc: Any) -> None:
    if isinstance(doc, dict) and doc.get("certificate") == "@":
        doc["certificate"] = _DEVICE.certificate_pem
    try:
        remote, pem = parse_answer(doc, _DEVICE.fingerprint)
    except LinkError as exc:
        assert exc.reason in ("bad_signal", "bad_identity"), exc
        return
    assert pem == _DEVICE.certificate_pem
    assert isinstance(remote, IceParameters)
    grace = relay_grace("full-cone", doc.get("nat"))
    assert math.isfinite(grace) and grace >= 0, grace


def _grant(payload: bytes) -> None:
    body = b64url_encode(payload)
    token = f"{body}.{b64url_encode(_CLOUD_KEY.sign(body.encode('ascii')))}"
    try:
        _VERIFIER.verify(token, "DEMO", "cam1", now=1000.0)
    except GrantError as exc:
        assert isinstance(exc.reason, GrantFailure), exc


def TestOneInput(data: bytes) -> None:
    kind, body = data[:1], data[1:]
    if kind == b"g":
        _grant(body)
        return
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return  # the shells refuse what is not JSON before any of this runs
    if kind == b"o":
        _offer(doc)
    elif kind == b"a":
        _answer(doc)


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
