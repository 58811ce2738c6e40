"""The pure parts of the device's trust in the cloud: the welcome MAC, the pinned grant key,
fingerprints, the sign-in throttle, the duplicate-identity flag and the plain-HTTP rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.auth import export_public_key
from xp2p.cloud.config import CloudConfig, ConfigError
from xp2p.cloud.registry import DUPLICATE_THRESHOLD, MemoryRegistry
from xp2p.cloud.signin_throttle import SignInThrottle, ThrottleConfig
from xp2p.trust import (
    CloudTrust,
    grant_public_key_pem,
    load_grant_public_key,
    normalise_fingerprint,
    verify_welcome_mac,
    welcome_mac,
)

WELCOME = {"type": "welcome", "session_id": "s1", "server_time": 1700000000}


def test_welcome_mac_vector() -> None:
    # docs/protocol.md §6 quotes this value.
    mac = welcome_mac("device-secret-0001", bytes(16), bytes(range(16)), "DEMO", "cam1", WELCOME)
    assert mac == "40a580b4e0a7060e194ef9c58acfe4052e89de6d48edce2e2aa288851f0ed399"


def test_welcome_mac_binds_everything() -> None:
    args = ("device-secret-0001", bytes(16), bytes(range(16)), "DEMO", "cam1")
    signed = {**WELCOME, "mac": welcome_mac(*args, WELCOME)}
    assert verify_welcome_mac(*args, signed)
    # key order and the mac field itself do not matter; every other byte does
    assert verify_welcome_mac(*args, dict(reversed(list(signed.items()))))
    for changed in (
        ("another-secret-0001", *args[1:]),
        (args[0], b"\1" * 16, *args[2:]),
        (*args[:2], bytes(16), *args[3:]),
        (*args[:3], "OTHER", args[4]),
        (*args[:4], "cam2"),
    ):
        assert not verify_welcome_mac(*changed, signed)
    assert not verify_welcome_mac(*args, {**signed, "server_time": 1700000001})
    assert not verify_welcome_mac(*args, {**signed, "grant_public_key": "x"})
    assert not verify_welcome_mac(*args, WELCOME)  # no mac
    assert not verify_welcome_mac(*args, {**signed, "mac": "\u00e9" * 64})


def test_grant_key_loads_from_pem_or_the_export_form() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes_raw()
    assert load_grant_public_key(grant_public_key_pem(key)).public_bytes_raw() == raw
    assert load_grant_public_key(export_public_key(key) + "\n").public_bytes_raw() == raw
    for bad in ("", "nope", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"):
        with pytest.raises(ValueError, match="public key"):
            load_grant_public_key(bad)


def test_fingerprints_and_trust_settings() -> None:
    hexdigest = "AB:" * 31 + "AB"
    assert normalise_fingerprint(hexdigest) == "ab" * 32
    with pytest.raises(ValueError, match="64 hex digits"):
        normalise_fingerprint("abc")
    assert CloudTrust(fingerprint=hexdigest).fingerprint == "ab" * 32
    with pytest.raises(ValueError, match="not both"):
        CloudTrust(ca_file=Path("x.pem"), fingerprint="ab" * 32)
    with pytest.raises(ValueError, match=r"cloud CA file /nonexistent\.pem"):
        CloudTrust(ca_file=Path("/nonexistent.pem")).client_ssl()


def test_throttle_refuses_a_source_after_its_free_failures() -> None:
    throttle = SignInThrottle(ThrottleConfig(source_free_failures=3, identity_free_failures=100))
    for i in range(3):
        assert throttle.retry_after("P/d", "198.51.100.1", now=i) == 0
        throttle.failed("P/d", "198.51.100.1", now=i)
    assert throttle.retry_after("P/d", "198.51.100.1", now=3) == 0  # 3 free, blocked at the 4th
    throttle.failed("P/d", "198.51.100.1", now=3)
    assert throttle.retry_after("P/other", "198.51.100.1", now=3) == 1.0
    throttle.failed("P/d", "198.51.100.1", now=5)
    assert throttle.retry_after("P/d", "198.51.100.1", now=5) == 2.0  # doubles
    assert throttle.retry_after("P/d", "203.0.113.9", now=5) == 0  # another source is free


def test_identity_throttle_spares_the_devices_known_source() -> None:
    throttle = SignInThrottle(ThrottleConfig(source_free_failures=100, identity_free_failures=2))
    throttle.succeeded("P/d", "192.0.2.7")  # the camera's usual address
    for i in range(5):
        throttle.failed("P/d", f"198.51.100.{i}", now=10)  # guesses spread over addresses
    assert throttle.retry_after("P/d", "203.0.113.1", now=10) > 0
    assert throttle.retry_after("P/d", "192.0.2.7", now=10) == 0
    assert throttle.retry_after("P/d", "203.0.113.1", now=10 + 3601) == 0  # forgotten


def test_throttle_memory_is_bounded() -> None:
    throttle = SignInThrottle(ThrottleConfig(max_entries=50))
    for i in range(1000):
        throttle.failed(f"P/d{i}", f"10.0.{i // 256}.{i % 256}", now=0)
        throttle.succeeded(f"P/d{i}", "10.9.9.9")
    assert len(throttle._sources._records) <= 50 and len(throttle._known) <= 50


async def test_duplicate_identity_is_flagged_after_repeated_replacements() -> None:
    registry = MemoryRegistry()
    presence = await registry.sign_in("P", "d", "s0", now=0)
    assert not presence.duplicate_identity and presence.session_replacements == 0
    for i in range(1, DUPLICATE_THRESHOLD + 1):
        presence = await registry.sign_in("P", "d", f"s{i}", now=i)
    assert presence.duplicate_identity and presence.session_replacements == DUPLICATE_THRESHOLD
    # A reconnect after the old session went offline is no replacement, and time heals.
    await registry.sign_out("P", "d", presence.session_id or "", now=100)
    presence = await registry.sign_in("P", "d", "later", now=200)
    assert not presence.duplicate_identity


def test_plain_http_only_on_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        CloudConfig(host=host).check_transport()
    for host in ("0.0.0.0", "192.0.2.1", "::"):
        with pytest.raises(ConfigError, match=r"^host: listening on .* needs TLS"):
            CloudConfig(host=host).check_transport()
    CloudConfig(
        host="0.0.0.0", tls_cert_file=Path("c.pem"), tls_key_file=Path("k.pem")
    ).check_transport()
    with pytest.raises(ConfigError, match="tls_key_file: tls_cert_file and tls_key_file go"):
        CloudConfig(tls_cert_file=Path("c.pem"))


def test_secrets_need_16_characters() -> None:
    from xp2p.cloud.config import AppConfig, DeviceConfig

    with pytest.raises(ConfigError, match=r"devices\[0\].secret: must be a string of at least 16"):
        CloudConfig(devices=(DeviceConfig("P", "d", "fifteen-chars-x"),))
    with pytest.raises(ConfigError, match=r"apps\[0\].secret: must be a string of at least 16"):
        CloudConfig(apps=(AppConfig("a", "fifteen-chars-x"),))
    CloudConfig(devices=(DeviceConfig("P", "d", "sixteen-chars-xx"),))
