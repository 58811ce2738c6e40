"""How a device and a viewer know they talk to their cloud, not to whoever answers.

Three checks, each closing a hole a relay between the device and the cloud used
(docs/protocol.md §6, issue 10 item 3):

- TLS to the cloud, verified: the system's CA store by default, or a pinned CA file, or the
  SHA-256 fingerprint of the cloud's certificate (:class:`CloudTrust`, :func:`client_ssl`).
- The cloud's ``welcome`` carries a MAC under the device's own secret, bound to the sign-in
  challenge and to a nonce the device chose (:func:`welcome_mac`): only a party that knows
  the device secret (the real cloud) can welcome the device, and a welcome cannot be replayed
  into another sign-in.
- The grant-signing public key is pinned at provisioning (:func:`load_grant_public_key`), so a
  welcome can never hand the device an attacker's key.

This module imports nothing of ours (like ``auth``), so the cloud, the device and the viewer
may all use it. Secrets never appear in exception messages.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)
from cryptography.x509.oid import NameOID

from xp2p.auth import length_prefixed, verify_hex_signature

# --- the welcome MAC ----------------------------------------------------------------------

WELCOME_DOMAIN = b"xp2p-welcome-v1"
#: The field of the welcome frame that carries the MAC (left out of what it covers).
WELCOME_MAC_FIELD = "mac"
#: The welcome's Ed25519 signature by the grant key, for a device that signs in with a key.
WELCOME_SIG_FIELD = "sig"
#: Bytes of the nonce a device sends in ``auth`` (hex on the wire).
DEVICE_NONCE_BYTES = 16


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes on both ends for the same JSON."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def welcome_message(
    challenge: bytes,
    device_nonce: bytes,
    product_id: str,
    device_name: str,
    welcome: Mapping[str, Any],
) -> bytes:
    """len-prefixed(domain, product, device, challenge, device nonce, canonical JSON of the
    welcome without its ``mac``/``sig`` field): what the welcome's MAC or signature covers."""
    body = {k: v for k, v in welcome.items() if k not in (WELCOME_MAC_FIELD, WELCOME_SIG_FIELD)}
    return length_prefixed(
        WELCOME_DOMAIN,
        product_id.encode(),
        device_name.encode(),
        challenge,
        device_nonce,
        canonical_json(body),
    )


def welcome_mac(
    device_secret: str,
    challenge: bytes,
    device_nonce: bytes,
    product_id: str,
    device_name: str,
    welcome: Mapping[str, Any],
) -> str:
    """Hex HMAC-SHA256(device_secret, ``welcome_message``): a secret-holding device's."""
    message = welcome_message(challenge, device_nonce, product_id, device_name, welcome)
    return hmac.new(device_secret.encode(), message, hashlib.sha256).hexdigest()


def welcome_signature(
    grant_key: Ed25519PrivateKey,
    challenge: bytes,
    device_nonce: bytes,
    product_id: str,
    device_name: str,
    welcome: Mapping[str, Any],
) -> str:
    """Hex Ed25519 signature of ``welcome_message`` by the cloud's grant key: for a device
    with a key pair, which shares no secret with the cloud but pins the grant key."""
    message = welcome_message(challenge, device_nonce, product_id, device_name, welcome)
    return grant_key.sign(message).hex()


def verify_welcome_signature(
    grant_key: Ed25519PublicKey,
    challenge: bytes,
    device_nonce: bytes,
    product_id: str,
    device_name: str,
    welcome: Mapping[str, Any],
) -> bool:
    message = welcome_message(challenge, device_nonce, product_id, device_name, welcome)
    return verify_hex_signature(grant_key, welcome.get(WELCOME_SIG_FIELD), message)


def verify_welcome_mac(
    device_secret: str,
    challenge: bytes,
    device_nonce: bytes,
    product_id: str,
    device_name: str,
    welcome: Mapping[str, Any],
) -> bool:
    given = welcome.get(WELCOME_MAC_FIELD)
    if not isinstance(given, str):
        return False
    expected = welcome_mac(device_secret, challenge, device_nonce, product_id, device_name, welcome)
    try:
        return hmac.compare_digest(expected.encode(), given.lower().encode("ascii"))
    except UnicodeEncodeError:
        return False


# --- the pinned grant key -----------------------------------------------------------------


def load_grant_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key as PEM or as ``auth.export_public_key``'s 43-character
    base64url form; ValueError (without quoting the input) otherwise."""
    from xp2p.auth import import_public_key  # auth is a leaf too: no cycle

    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(text.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ValueError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    try:
        return import_public_key(text)
    except ValueError:
        raise ValueError("not an Ed25519 public key (PEM or 43-character base64url)") from None


def grant_public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


# --- TLS to the cloud ---------------------------------------------------------------------

_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")


def normalise_fingerprint(text: str) -> str:
    """SHA-256 fingerprint as 64 lower-case hex digits; colons and case are accepted."""
    value = text.strip().replace(":", "").lower()
    if not _FINGERPRINT_RE.fullmatch(value):
        raise ValueError("a certificate fingerprint is SHA-256 as 64 hex digits")
    return value


def certificate_sha256(pem_or_der: bytes) -> str:
    """The hex SHA-256 of a certificate's DER form (what ``--cloud-fingerprint`` takes)."""
    der = pem_or_der
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = ssl.PEM_cert_to_DER_cert(pem_or_der.decode("ascii"))
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class CloudTrust:
    """How a client verifies the cloud's certificate on an https:// URL.

    Neither field: the system's CA store. ``ca_file``: that PEM bundle alone (a private CA or
    the cloud's self-signed certificate). ``fingerprint``: exactly the certificate with this
    SHA-256 (hex), whoever signed it. Plain http:// URLs are not affected (the cloud allows
    them on loopback only).
    """

    ca_file: Path | None = None
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None and self.fingerprint is not None:
            raise ValueError("cloud trust: give a CA file or a fingerprint, not both")
        if self.fingerprint is not None:
            object.__setattr__(self, "fingerprint", normalise_fingerprint(self.fingerprint))

    def client_ssl(self) -> ssl.SSLContext | aiohttp.Fingerprint:
        """What aiohttp's ``ssl=`` takes. A missing or unreadable CA file is a ValueError
        naming the file."""
        if self.fingerprint is not None:
            # aiohttp checks the peer's DER certificate against the digest, chain unchecked.
            return aiohttp.Fingerprint(bytes.fromhex(self.fingerprint))
        if self.ca_file is None:
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            # With a cafile, the system store is not loaded: the pinned CA alone is trusted.
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        except (OSError, ssl.SSLError):
            raise ValueError(f"cloud CA file {self.ca_file}: not a readable PEM file") from None

    def connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(ssl=self.client_ssl())


def tls_failure(exc: BaseException) -> bool:
    """Whether an aiohttp error means the server's certificate was not trusted."""
    return isinstance(
        exc,
        aiohttp.ClientConnectorCertificateError
        | aiohttp.ServerFingerprintMismatch
        | ssl.SSLCertVerificationError,
    )


def tls_failure_message(host: str | None) -> str:
    return (
        f"the TLS certificate of {host or 'the cloud'} is not trusted "
        "(check --cloud-ca / --cloud-fingerprint)"
    )


# --- serving TLS (the cloud, the origin) ---------------------------------------------------


def self_signed_certificate(
    directory: Path,
    hosts: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
    *,
    name: str = "origin",
) -> tuple[Path, Path]:
    """A fresh ECDSA P-256 certificate for ``hosts`` (valid 30 days), written as
    ``NAME-cert.pem`` and ``NAME-key.pem``; the certificate doubles as the CA a client
    trusts (``xp2p edge`` ``source_ca_file``, ``--cloud-ca`` of devices and apps)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"xp2p {name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
