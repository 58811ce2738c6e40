"""The pure viewer-token codec: round trip, every refusal by reason, domain separation."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.auth import GrantSigner, b64url_encode
from xp2p.cloud.config import AppConfig, CloudConfig, ConfigError
from xp2p.cloud.viewer_token import (
    MAX_TOKEN_LENGTH,
    TokenError,
    TokenFailure,
    ViewerToken,
    ViewerTokenCodec,
    derive_token_key,
    parse_payload,
)

NOW = 1_764_720_000
KEY = Ed25519PrivateKey.generate()
CODEC = ViewerTokenCodec(derive_token_key(KEY))


def _token(**overrides: object) -> ViewerToken:
    fields: dict[str, object] = {
        "app_key": "demo-app",
        "devices": frozenset({("DEMO", "cam1")}),
        "products": frozenset({"OTHER"}),
        "permissions": frozenset({"live"}),
        "issued_at": NOW,
        "expires_at": NOW + 600,
    }
    fields.update(overrides)
    return ViewerToken(**fields)  # type: ignore[arg-type]


def _reason(text: str, now: float = NOW) -> TokenFailure:
    with pytest.raises(TokenError) as err:
        CODEC.verify(text, now)
    assert not text or text not in str(err.value)
    return err.value.reason


def test_round_trip_and_scope() -> None:
    token = _token()
    text = CODEC.sign(token)
    assert text.startswith("xvt1.") and text.count(".") == 2
    back = CODEC.verify(text, NOW + 599)
    assert back == token
    assert back.covers("DEMO", "cam1") and back.covers("OTHER", "anything")
    assert not back.covers("DEMO", "cam2")
    assert derive_token_key(KEY).hex() not in repr(CODEC)


def test_expiry_is_exact_and_names_the_app() -> None:
    text = CODEC.sign(_token())
    with pytest.raises(TokenError) as err:
        CODEC.verify(text, NOW + 600)
    assert (err.value.reason, err.value.code, err.value.app_key) == (
        TokenFailure.EXPIRED,
        "token_expired",
        "demo-app",
    )
    assert _reason(CODEC.sign(_token(issued_at=NOW + 100, expires_at=NOW + 700))) is (
        TokenFailure.INVALID
    )  # issued more than the skew ahead


def test_tampering_and_other_keys_are_invalid() -> None:
    text = CODEC.sign(_token())
    prefix, payload, mac = text.split(".")
    other = ViewerTokenCodec(derive_token_key(Ed25519PrivateKey.generate()))
    wider = b64url_encode(_token(permissions=frozenset({"live", "voice"})).payload())
    for bad in (
        f"{prefix}.{wider}.{mac}",  # a wider scope under the old MAC
        other.sign(_token()),
        f"{prefix}.{payload}",
        f"{prefix}.{payload}.{mac}=",
        f"xvt2.{payload}.{mac}",
        "",
        "x" * (MAX_TOKEN_LENGTH + 1),
    ):
        assert _reason(bad) is TokenFailure.INVALID
    with pytest.raises(TokenError) as err:
        CODEC.verify(f"xvt2.{payload}.{mac}", NOW)
    assert err.value.app_key is None  # not verified: no app to name


def test_an_access_grant_is_no_viewer_token() -> None:
    """Same cloud key, other domain: a grant (Ed25519) never verifies as a viewer token."""
    grant = GrantSigner(KEY).issue("demo-app", "DEMO", "cam1", now=NOW)
    assert _reason(grant) is TokenFailure.INVALID
    assert _reason("xvt1." + grant) is TokenFailure.INVALID
    assert derive_token_key(KEY) == derive_token_key(KEY)  # stable across restarts
    assert derive_token_key(KEY) != derive_token_key(Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"app": "bad app"},
        {"tid": "XYZ"},
        {"iat": "1"},
        {"exp": NOW - 1},
        {"dev": [["DEMO"]]},
        {"dev": [["DEMO", 5]]},
        {"dev": [], "prod": []},
        {"prod": ["a/b"]},
        {"perm": []},
        {"perm": ["root"]},
        {"dev": [["P", f"d{i}"] for i in range(70)]},
    ],
)
def test_malformed_payloads_are_invalid(change: dict[str, object]) -> None:
    doc = json.loads(_token().payload())
    doc.update(change)
    with pytest.raises(TokenError) as err:
        parse_payload(json.dumps(doc).encode())
    assert err.value.reason is TokenFailure.INVALID


def test_config_checks_cors_origins_and_ttls() -> None:
    app = AppConfig("a", "a-secret-0000000001", cors_origins=("https://app.example:8443",))
    assert CloudConfig(apps=(app,)).apps[0].cors_origins == ("https://app.example:8443",)
    for bad in ("*", "https://App.example", "https://app.example/", "ftp://x", "null"):
        with pytest.raises(ConfigError, match=r"apps\[0\].cors_origins\[0\]"):
            CloudConfig(apps=(AppConfig("a", "a-secret-0000000001", cors_origins=(bad,)),))
    with pytest.raises(ConfigError, match="viewer_token_ttl: must not exceed"):
        CloudConfig(viewer_token_ttl=7200)
    doc = {
        "viewer_token_ttl": 60,
        "viewer_token_max_ttl": 120,
        "apps": [
            {"key": "a", "secret": "a-secret-0000000001", "cors_origins": ["http://[::1]:80"]}
        ],
    }
    config = CloudConfig.from_dict(doc)
    assert (config.viewer_token_ttl, config.viewer_token_max_ttl) == (60, 120)
    assert config.apps[0].cors_origins == ("http://[::1]:80",)
    with pytest.raises(ConfigError, match=r"apps\[0\].cors_origins: must be a list"):
        CloudConfig.from_dict(
            {"apps": [{"key": "a", "secret": "a-secret-0000000001", "cors_origins": "x"}]}
        )
