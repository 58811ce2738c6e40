"""Viewer tokens as the cloud reads them from ``Authorization: Bearer`` (xp2p.cloud.viewer_token).

``t`` the rest as token text into ``ViewerTokenCodec.verify`` (the MAC refuses nearly all of
it); ``s`` the rest as a payload the fuzzer gets signed with the codec's key, so the claims'
parser and the expiry checks behind the MAC are reached too; ``p`` the rest straight into
``parse_payload``. The only refusal is ``TokenError``; an accepted token re-encodes to claims
that parse back equal, names a scope, and is not expired at ``NOW``."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.cloud.viewer_token"]):
    from xp2p.auth import b64url_encode
    from xp2p.cloud.viewer_token import (
        TOKEN_PREFIX,
        TokenError,
        TokenFailure,
        ViewerToken,
        ViewerTokenCodec,
        parse_payload,
    )

NOW = 1_764_720_000
_CODEC = ViewerTokenCodec(b"fuzz viewer-token key, 32 bytes!")


def _check(token: ViewerToken) -> None:
    assert token.devices or token.products
    assert token.permissions and token.issued_at < token.expires_at
    assert parse_payload(token.payload()) == token


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    kind, rest = data[:1], data[1:]
    try:
        if kind == b"p":
            _check(parse_payload(rest))
            return
        if kind == b"s":
            signed = f"{TOKEN_PREFIX}.{b64url_encode(rest)}"
            text = f"{signed}.{b64url_encode(_CODEC._mac(signed))}"
        else:
            text = harness.text(rest)
        token = _CODEC.verify(text, NOW)
    except TokenError as exc:
        assert exc.code in ("token_invalid", "token_expired")
        assert (exc.app_key is not None) == (exc.reason is TokenFailure.EXPIRED)
        return
    _check(token)
    assert NOW < token.expires_at


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
