"""Unit tests of xp2p.auth: request signing, device proofs, access grants, TURN credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from xp2p.auth import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    MAX_GRANT_LENGTH,
    PERMISSIONS,
    AccessGrant,
    AuthError,
    AuthFailure,
    GrantError,
    GrantFailure,
    GrantSigner,
    GrantVerifier,
    RequestVerifier,
    b64url_decode,
    b64url_encode,
    device_proof,
    export_public_key,
    import_public_key,
    sign_request,
    turn_credentials,
    verify_device_proof,
)
from xp2p.link.config import IceServer, StunInfo, parse_ice_servers

APP, SECRET = "app-1", "s3cret-s3cret"
NOW = 1_700_000_000


def _verifier(**kw: Any) -> RequestVerifier:
    return RequestVerifier({APP: SECRET}, **kw)


def _signed(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {"timestamp": NOW}
    args.update(kw)
    return sign_request(APP, SECRET, "POST", "/api/v1/x?a=1", b'{"k":1}', **args)  # type: ignore[arg-type]


def _reason(verifier: RequestVerifier, headers: dict[str, str], **kw: object) -> AuthFailure:
    args: dict[str, object] = {
        "method": "POST",
        "path_qs": "/api/v1/x?a=1",
        "body": b'{"k":1}',
        "now": NOW,
    }
    args.update(kw)
    with pytest.raises(AuthError) as info:
        verifier.verify(headers=headers, **args)  # type: ignore[arg-type]
    assert info.value.code == info.value.reason.value
    return info.value.reason


# --- request signing ----------------------------------------------------------------------


def test_signature_matches_the_documented_construction() -> None:
    headers = sign_request(APP, SECRET, "get", "/p?q=1", b"body", timestamp=123, nonce="ab" * 16)
    canonical = "GET\n/p?q=1\n123\n" + "ab" * 16 + "\n" + hashlib.sha256(b"body").hexdigest()
    expected = hmac.new(SECRET.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    assert headers == {
        "X-XP2P-App": APP,
        "X-XP2P-Timestamp": "123",
        "X-XP2P-Nonce": "ab" * 16,
        "X-XP2P-Signature": expected,
    }


def test_round_trip_and_fresh_nonces() -> None:
    verifier = _verifier()
    a, b = _signed(), _signed()
    assert len(a[HEADER_NONCE]) == 32 and a[HEADER_NONCE] != b[HEADER_NONCE]
    for headers in (a, b):
        assert verifier.verify("POST", "/api/v1/x?a=1", headers, b'{"k":1}', NOW) == APP


def test_missing_and_malformed_headers() -> None:
    verifier = _verifier()
    for name in ("X-XP2P-App", HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE):
        headers = _signed()
        del headers[name]
        assert _reason(verifier, headers) is AuthFailure.MISSING_AUTH
    assert _reason(verifier, _signed(nonce="not hex!")) is AuthFailure.MISSING_AUTH
    assert _reason(verifier, {**_signed(), HEADER_TIMESTAMP: "-5"}) is AuthFailure.MISSING_AUTH


def test_unknown_app() -> None:
    headers = sign_request("other", SECRET, "POST", "/api/v1/x?a=1", b'{"k":1}', timestamp=NOW)
    assert _reason(_verifier(), headers) is AuthFailure.UNKNOWN_APP


def test_bad_signature_for_any_change() -> None:
    verifier = _verifier()
    wrong_secret = sign_request(APP, "not-the-secret", "POST", "/api/v1/x?a=1", b'{"k":1}')
    assert _reason(verifier, wrong_secret) is AuthFailure.BAD_SIGNATURE
    assert _reason(verifier, _signed(), method="PUT") is AuthFailure.BAD_SIGNATURE
    assert _reason(verifier, _signed(), path_qs="/api/v1/x?a=2") is AuthFailure.BAD_SIGNATURE
    assert _reason(verifier, _signed(), body=b'{"k":2}') is AuthFailure.BAD_SIGNATURE
    headers = _signed()
    headers[HEADER_TIMESTAMP] = str(NOW + 1)
    assert _reason(verifier, headers) is AuthFailure.BAD_SIGNATURE


def test_timestamp_window() -> None:
    verifier = _verifier()
    assert verifier.verify("POST", "/api/v1/x?a=1", _signed(), b'{"k":1}', NOW + 300) == APP
    assert verifier.verify("POST", "/api/v1/x?a=1", _signed(), b'{"k":1}', NOW - 30) == APP
    assert _reason(verifier, _signed(), now=NOW + 301) is AuthFailure.STALE_TIMESTAMP
    # Ahead of the clock only by the skew: a far-future stamp would stay replayable for long.
    assert _reason(verifier, _signed(), now=NOW - 31) is AuthFailure.FUTURE_TIMESTAMP
    assert _reason(verifier, _signed(), now=NOW - 300) is AuthFailure.FUTURE_TIMESTAMP


def test_replayed_nonce_is_refused_until_its_timestamp_is_stale() -> None:
    verifier = _verifier()
    headers = _signed()
    verifier.verify("POST", "/api/v1/x?a=1", headers, b'{"k":1}', NOW)
    assert _reason(verifier, headers) is AuthFailure.REPLAYED_NONCE
    assert _reason(verifier, headers, now=NOW + 299) is AuthFailure.REPLAYED_NONCE
    # Once outside the window the cache forgets it, and the window check refuses it instead.
    assert _reason(verifier, headers, now=NOW + 400) is AuthFailure.STALE_TIMESTAMP
    assert verifier.remembered_nonces == 0


def test_nonce_cache_is_bounded_without_reopening_replays() -> None:
    verifier = _verifier(max_nonces=4)
    sent = [_signed(timestamp=NOW + i) for i in range(6)]
    for headers in sent:
        verifier.verify("POST", "/api/v1/x?a=1", headers, b'{"k":1}', NOW + 10)
    assert verifier.remembered_nonces == 4
    # The two oldest were forgotten; replaying them must still fail.
    for headers in sent[:2]:
        assert _reason(verifier, headers, now=NOW + 10) is AuthFailure.STALE_TIMESTAMP
    for headers in sent[2:]:
        assert _reason(verifier, headers, now=NOW + 10) is AuthFailure.REPLAYED_NONCE
    fresh = _signed(timestamp=NOW + 10)
    assert verifier.verify("POST", "/api/v1/x?a=1", fresh, b'{"k":1}', NOW + 10) == APP


def _ok(verifier: RequestVerifier, headers: dict[str, str], now: float = NOW, **kw: object) -> str:
    return verifier.verify("POST", "/api/v1/x?a=1", headers, b'{"k":1}', now, **kw)  # type: ignore[arg-type]


def test_nonce_cache_quota_and_floor_are_per_app() -> None:
    other, other_secret = "app-2", "other-secret-2"
    verifier = RequestVerifier({APP: SECRET, other: other_secret}, max_nonces=4)
    # App 1 fills its quota with requests stamped as far ahead as allowed...
    for _ in range(5):
        _ok(verifier, _signed(timestamp=NOW + 30))
    assert verifier.remembered_for(APP) == 4
    assert _reason(verifier, _signed(timestamp=NOW + 30)) is AuthFailure.STALE_TIMESTAMP
    # ...and app 2, stamped now, is untouched by app 1's floor.
    headers = sign_request(other, other_secret, "POST", "/api/v1/x?a=1", b'{"k":1}', timestamp=NOW)
    assert _ok(verifier, headers) == other
    assert verifier.remembered_for(other) == 1


def test_refused_authorisation_takes_no_cache_room() -> None:
    verifier = _verifier()

    def refuse(app_key: str) -> None:
        raise PermissionError(app_key)

    headers = _signed()
    for _ in range(3):
        with pytest.raises(PermissionError):
            _ok(verifier, headers, authorise=refuse)
    assert verifier.remembered_nonces == 0
    seen: list[str] = []
    assert _ok(verifier, headers, authorise=seen.append) == APP
    assert seen == [APP] and verifier.remembered_nonces == 1


def test_signed_requests_are_rate_limited_per_app() -> None:
    other, other_secret = "app-2", "other-secret-2"
    verifier = RequestVerifier({APP: SECRET, other: other_secret}, request_rate=2, request_burst=3)
    for _ in range(3):
        _ok(verifier, _signed())
    with pytest.raises(AuthError) as info:
        _ok(verifier, _signed())
    assert info.value.reason is AuthFailure.RATE_LIMITED and info.value.status == 429
    assert info.value.retry_after == pytest.approx(0.5)
    headers = sign_request(other, other_secret, "POST", "/api/v1/x?a=1", b'{"k":1}', timestamp=NOW)
    assert _ok(verifier, headers) == other
    assert _ok(verifier, _signed(), now=NOW + 0.5) == APP


def test_bad_signatures_are_throttled_per_source_and_per_key() -> None:
    verifier = _verifier(failure_limit=3, failure_window=60)
    bad = sign_request(APP, "not-the-secret", "POST", "/api/v1/x?a=1", b'{"k":1}', timestamp=NOW)
    for _ in range(3):
        assert _reason(verifier, bad, source="198.51.100.7") is AuthFailure.BAD_SIGNATURE
    with pytest.raises(AuthError) as info:
        _ok(verifier, _signed(), source="198.51.100.7")  # even a good one: refused unverified
    assert info.value.reason is AuthFailure.TOO_MANY_FAILURES and info.value.status == 429
    assert info.value.retry_after == pytest.approx(60)
    # The app key is throttled too, but a source with a clean record still gets through...
    assert _ok(verifier, _signed(), source="203.0.113.9") == APP
    # ...while one that failed once is refused before its next guess is checked.
    assert _reason(verifier, bad, source="192.0.2.1") is AuthFailure.BAD_SIGNATURE
    assert _reason(verifier, bad, source="192.0.2.1") is AuthFailure.TOO_MANY_FAILURES
    # An IPv6 client is its /64; the window ends and the source may try again.
    for i in range(3):
        _reason(verifier, bad, source=f"2001:db8::{i + 1}")
    assert _reason(verifier, bad, source="2001:db8::99") is AuthFailure.TOO_MANY_FAILURES
    assert _ok(verifier, _signed(timestamp=NOW + 60), now=NOW + 60, source="198.51.100.7") == APP


def test_unknown_app_keys_count_against_the_source_only() -> None:
    verifier = _verifier(failure_limit=2)
    for i in range(5):
        headers = sign_request(f"x{i}", SECRET, "POST", "/api/v1/x?a=1", b'{"k":1}', timestamp=NOW)
        _reason(verifier, headers, source="198.51.100.7")
    assert _ok(verifier, _signed(), source="203.0.113.9") == APP
    assert _reason(verifier, _signed(), source="198.51.100.7") is AuthFailure.TOO_MANY_FAILURES


def test_failure_throttle_is_bounded() -> None:
    from xp2p.auth import MAX_TRACKED_KEYS, FailureThrottle

    throttle = FailureThrottle(1, 60)
    for i in range(MAX_TRACKED_KEYS + 50):
        throttle.failed(f"k{i}", NOW)
    assert len(throttle) == MAX_TRACKED_KEYS
    assert throttle.blocked(f"k{MAX_TRACKED_KEYS + 49}", NOW) > 0


def test_secrets_stay_out_of_errors() -> None:
    with pytest.raises(AuthError) as info:
        _verifier().verify("POST", "/", sign_request(APP, "x" * 20, "POST", "/", b""), b"", NOW)
    assert SECRET not in str(info.value) and "x" * 20 not in repr(info.value)


# --- device proof -------------------------------------------------------------------------


def test_device_proof() -> None:
    challenge = bytes(range(16))
    proof = device_proof("dev-secret", challenge, "P1", "cam")
    assert len(proof) == 64
    assert verify_device_proof("dev-secret", challenge, "P1", "cam", proof)
    assert verify_device_proof("dev-secret", challenge, "P1", "cam", proof.upper())
    assert not verify_device_proof("dev-secreT", challenge, "P1", "cam", proof)
    assert not verify_device_proof("dev-secret", bytes(16), "P1", "cam", proof)
    assert not verify_device_proof("dev-secret", challenge, "P1", "cam2", proof)
    assert not verify_device_proof("dev-secret", challenge, "P1", "cam", "é" * 64)
    # Field boundaries are unambiguous.
    assert device_proof("s", challenge, "P1c", "am") != device_proof("s", challenge, "P1", "cam")


# --- grants -------------------------------------------------------------------------------


@pytest.fixture
def keys() -> tuple[GrantSigner, GrantVerifier]:
    key = Ed25519PrivateKey.generate()
    return GrantSigner(key), GrantVerifier(key.public_key())


def test_grant_round_trip(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, verifier = keys
    token = signer.issue("app", "P1", "cam", ["live", "voice"], now=NOW, ttl=300)
    assert "=" not in token and token.count(".") == 1
    grant = verifier.verify(token, "P1", "cam", NOW + 10)
    assert grant.app_key == "app" and grant.permissions == {"live", "voice"}
    assert (grant.issued_at, grant.expires_at) == (NOW, NOW + 300)
    assert grant.allows("live") and not grant.allows("download")
    everything = verifier.verify(signer.issue("app", "P1", "cam", now=NOW, ttl=1), "P1", "cam", NOW)
    assert everything.permissions == PERMISSIONS
    other = verifier.verify(signer.issue("app", "P1", "cam", now=NOW, ttl=1), "P1", "cam", NOW)
    assert other.grant_id != everything.grant_id


def test_grant_time_bounds(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, verifier = keys
    token = signer.issue("app", "P1", "cam", now=NOW, ttl=300)
    with pytest.raises(GrantError) as info:
        verifier.verify(token, "P1", "cam", NOW + 300 + 30)
    assert info.value.reason is GrantFailure.EXPIRED
    with pytest.raises(GrantError) as info:
        verifier.verify(token, "P1", "cam", NOW - 31)
    assert info.value.reason is GrantFailure.NOT_YET_VALID
    verifier.verify(token, "P1", "cam", NOW - 29)  # inside the clock-skew leeway


def test_grant_wrong_device(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, verifier = keys
    token = signer.issue("app", "P1", "cam", now=NOW, ttl=300)
    for pid, dev in (("P1", "cam2"), ("P2", "cam")):
        with pytest.raises(GrantError) as info:
            verifier.verify(token, pid, dev, NOW)
        assert info.value.reason is GrantFailure.WRONG_DEVICE


def test_grant_forged_with_another_key(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    _, verifier = keys
    forged = GrantSigner(Ed25519PrivateKey.generate()).issue("a", "P1", "cam", now=NOW, ttl=9)
    with pytest.raises(GrantError) as info:
        verifier.verify(forged, "P1", "cam", NOW)
    assert info.value.reason is GrantFailure.BAD_SIGNATURE


def test_grant_tampered_payload(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, verifier = keys
    token = signer.issue("app", "P1", "cam", ["live"], now=NOW, ttl=300)
    payload, signature = token.split(".")
    doc = json.loads(b64url_decode(payload))
    doc["perm"] = sorted(PERMISSIONS)
    tampered = b64url_encode(json.dumps(doc).encode()) + "." + signature
    with pytest.raises(GrantError) as info:
        verifier.verify(tampered, "P1", "cam", NOW)
    assert info.value.reason is GrantFailure.BAD_SIGNATURE


@pytest.mark.parametrize(
    "token",
    ["", "nodot", "a.b.c", "!!!.abc", "abc.!!!", "abcde.abc", "x" * (MAX_GRANT_LENGTH + 1)],
)
def test_grant_malformed(keys: tuple[GrantSigner, GrantVerifier], token: str) -> None:
    _, verifier = keys
    with pytest.raises(GrantError) as info:
        verifier.verify(token, "P1", "cam", NOW)
    assert info.value.reason in (GrantFailure.MALFORMED, GrantFailure.BAD_SIGNATURE)
    if len(token) > MAX_GRANT_LENGTH or "." not in token:
        assert info.value.reason is GrantFailure.MALFORMED
    assert token[:20] not in str(info.value) or not token


def test_grant_signed_but_malformed_payload(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, verifier = keys
    key = signer._key
    for doc in (b"[]", b"{}", b'{"v":1}', b"not json"):
        payload = b64url_encode(doc)
        token = payload + "." + b64url_encode(key.sign(payload.encode()))
        with pytest.raises(GrantError) as info:
            verifier.verify(token, "P1", "cam", NOW)
        assert info.value.reason is GrantFailure.MALFORMED


def test_grant_permissions_validated(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, _ = keys
    with pytest.raises(ValueError):
        signer.issue("app", "P1", "cam", ["live", "root"], now=NOW, ttl=1)
    with pytest.raises(ValueError):
        signer.issue("app", "P1", "cam", [], now=NOW, ttl=1)


@given(st.text(max_size=300))
def test_grant_verifier_never_crashes(token: str) -> None:
    verifier = GrantVerifier(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(GrantError):
        verifier.verify(token, "P1", "cam", NOW)


def test_public_key_export_import(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, _ = keys
    text = export_public_key(signer.public_key)
    assert len(text) == 43
    token = signer.issue("app", "P1", "cam", now=NOW, ttl=60)
    GrantVerifier(import_public_key(text)).verify(token, "P1", "cam", NOW)
    for bad in ("", "abc", text + "AA", "!" * 43):
        with pytest.raises(ValueError):
            import_public_key(bad)


def test_grant_repr_has_no_private_material(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, _ = keys
    assert repr(signer) == f"GrantSigner(public_key={export_public_key(signer.public_key)})"
    grant = AccessGrant("app", "P1", "cam", frozenset({"live"}), NOW, NOW + 1)
    assert grant.allows("live") and "P1" in repr(grant)


# --- TURN and connectivity JSON -----------------------------------------------------------


def test_turn_credentials_match_coturn() -> None:
    username, password = turn_credentials("turn-secret", "sess1", 3600, now=NOW)
    assert username == f"{NOW + 3600}:sess1"
    expected = hmac.new(b"turn-secret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_parse_ice_servers_and_stun() -> None:
    doc = [
        {"urls": ["stun:h:1"]},
        {"urls": "turn:h:2", "username": "u", "credential": "c"},
    ]
    assert parse_ice_servers(doc) == (
        IceServer(("stun:h:1",)),
        IceServer(("turn:h:2",), "u", "c"),
    )
    bad_lists: list[object] = [None, [1], [{"urls": []}], [{"urls": ["x"], "username": 5}]]
    for bad in bad_lists:
        with pytest.raises(ValueError):
            parse_ice_servers(bad)
    info = StunInfo.from_json({"host": "h", "port": 3478, "alt_port": None})
    assert StunInfo.from_json(info.to_json()) == info
    for bad_stun in (None, {"host": "h"}, {"host": "h", "port": 0}, {"host": "h", "port": True}):
        with pytest.raises(ValueError):
            StunInfo.from_json(bad_stun)


def test_issue_defaults_to_the_clock(keys: tuple[GrantSigner, GrantVerifier]) -> None:
    signer, verifier = keys
    grant = verifier.verify(signer.issue("app", "P1", "cam"), "P1", "cam", time.time())
    assert abs(grant.issued_at - time.time()) < 5 and grant.expires_at - grant.issued_at == 300
    late = signer.issue("app", "P1", "cam", now=NOW + 0.7, ttl=10)
    assert verifier.verify(late, "P1", "cam", NOW).issued_at == NOW
