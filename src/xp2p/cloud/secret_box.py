"""App secrets (and TOML-seeded device secrets) at rest: AES-256-GCM under the operator's
registry key, so a dump of the database reads nothing secret.

The cloud must know an app's secret to check its HMAC signatures, so it cannot store a hash;
it stores ``v1.<base64url(nonce | ciphertext | tag)>``. The row's name is the associated
data: a ciphertext copied onto another app's row does not decrypt.

The key is 32 random bytes, base64url, from ``$XP2P_REGISTRY_KEY`` or a file
(``xp2p admin keygen`` writes one). Losing it loses the secrets, not the devices: device key
pairs are public keys, and apps can be given new secrets.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1."
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretBoxError(ValueError):
    """A bad key, or a stored secret that does not decrypt (wrong key, altered, moved)."""


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def _decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SecretBoxError("not base64url") from None


class SecretBox:
    def __init__(self, key: str) -> None:
        raw = _decode(key.strip())
        if len(raw) != KEY_BYTES:
            raise SecretBoxError(f"the registry key must be {KEY_BYTES} bytes, base64url")
        self._aead = AESGCM(raw)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_env_or_file(cls, env: str, path: str | os.PathLike[str] | None) -> SecretBox:
        if path is not None:
            with open(path, encoding="ascii") as f:
                return cls(f.read())
        key = os.environ.get(env, "")
        if not key:
            raise SecretBoxError(
                f"no registry key: set ${env} or give a key file (xp2p admin keygen makes one)"
            )
        return cls(key)

    def seal(self, secret: str, row: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), row.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, stored: str, row: str) -> str:
        if not stored.startswith(PREFIX):
            raise SecretBoxError(f"the stored secret of {row} is not sealed")
        raw = _decode(stored[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], row.encode()).decode()
        except (InvalidTag, ValueError):
            raise SecretBoxError(
                f"the stored secret of {row} does not decrypt: another registry key?"
            ) from None
