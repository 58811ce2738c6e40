"""The registry's pure parts: sealed secrets and the swap of one accounts version for the next."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.auth import device_key_proof, verify_device_key_proof
from xp2p.cloud.accounts import Accounts, DeviceAccount
from xp2p.cloud.config import AppConfig
from xp2p.cloud.secret_box import SecretBox, SecretBoxError, new_key
from xp2p.trust import verify_welcome_signature, welcome_signature


def test_a_sealed_secret_opens_only_on_its_own_row_under_its_key() -> None:
    box = SecretBox(new_key())
    sealed = box.seal("the app secret", "app a")
    assert sealed.startswith("v1.") and "the app secret" not in sealed
    assert box.seal("the app secret", "app a") != sealed  # a fresh nonce each time
    assert box.open(sealed, "app a") == "the app secret"
    with pytest.raises(SecretBoxError, match="does not decrypt"):
        box.open(sealed, "app b")  # moved onto another row
    with pytest.raises(SecretBoxError, match="another registry key"):
        SecretBox(new_key()).open(sealed, "app a")
    with pytest.raises(SecretBoxError, match="not sealed"):
        box.open("plain text", "app a")
    for bad in ("", "short", "!" * 43):
        with pytest.raises(SecretBoxError):
            SecretBox(bad)
    assert "key" not in repr(box).replace("<key hidden>", "")


def test_replacing_the_accounts_reports_devices_whose_credentials_changed() -> None:
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    accounts = Accounts(
        [AppConfig("a", "s" * 16)],
        [DeviceAccount("P", "seeded", "secret" * 3), DeviceAccount("P", "keyed", None, key)],
    )
    changed: list[frozenset[tuple[str, str]]] = []
    accounts.on_device_change(changed.append)
    assert accounts.app_secrets["a"] == "s" * 16 and dict(accounts.app_secrets) == {"a": "s" * 16}
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    accounts.replace(
        [], [DeviceAccount("P", "seeded", "secret" * 3), DeviceAccount("P", "keyed", None, other)]
    )
    assert changed == [frozenset({("P", "keyed")})]
    assert accounts.app("a") is None and "a" not in accounts.app_secrets
    accounts.replace(
        [], [DeviceAccount("P", "seeded", "secret" * 3), DeviceAccount("P", "keyed", None, other)]
    )
    assert len(changed) == 1  # nothing changed: nobody is told
    accounts.replace([], [])
    assert changed[-1] == frozenset({("P", "seeded"), ("P", "keyed")})


def test_key_proofs_and_welcome_signatures_bind_their_device_and_challenge() -> None:
    device = Ed25519PrivateKey.generate()
    raw = device.public_key().public_bytes_raw()
    proof = device_key_proof(device, b"c" * 16, "P", "d")
    assert verify_device_key_proof(raw, b"c" * 16, "P", "d", proof)
    assert not verify_device_key_proof(raw, b"x" * 16, "P", "d", proof)
    assert not verify_device_key_proof(raw, b"c" * 16, "P", "e", proof)
    assert not verify_device_key_proof(raw, b"c" * 16, "P", "d", "zz")
    assert not verify_device_key_proof(b"short", b"c" * 16, "P", "d", proof)
    grant = Ed25519PrivateKey.generate()
    welcome = {"type": "welcome", "session_id": "s"}
    signed = {**welcome, "sig": welcome_signature(grant, b"c" * 16, b"n" * 16, "P", "d", welcome)}
    assert verify_welcome_signature(grant.public_key(), b"c" * 16, b"n" * 16, "P", "d", signed)
    for tampered in ({**signed, "session_id": "t"}, {**signed, "sig": "00" * 64}, welcome):
        assert not verify_welcome_signature(
            grant.public_key(), b"c" * 16, b"n" * 16, "P", "d", tampered
        )
    other = Ed25519PrivateKey.generate().public_key()
    assert not verify_welcome_signature(other, b"c" * 16, b"n" * 16, "P", "d", signed)
