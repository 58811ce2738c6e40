"""A device's link identity: an Ed25519 key pair and the self-signed certificate QUIC shows.

The viewer pins the certificate by its SHA-256 fingerprint, which travels inside xp2pInfo
(docs/protocol.md §2). Pinning the whole certificate as the only trust anchor lets aioquic's
ordinary TLS verification prove that the peer holds the key, with no private hooks into the
handshake.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

#: The TLS server name every device certificate carries; identity comes from the pin, not DNS.
LINK_SERVER_NAME = "device.xp2p"


def certificate_fingerprint(certificate_der: bytes) -> str:
    """SHA-256 of the DER certificate, base64url without padding (43 characters)."""
    digest = hashlib.sha256(certificate_der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class LinkIdentity:
    """Key and certificate of one device run. A restart makes a new one, so a stale
    xp2pInfo (old fingerprint) is refused rather than silently trusted."""

    private_key: ed25519.Ed25519PrivateKey = field(repr=False)
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str = "xp2p device", days: int = 365) -> LinkIdentity:
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(LINK_SERVER_NAME)]), False)
            # A self-signed certificate used as its own trust anchor must be a CA for OpenSSL.
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, algorithm=None)
        )
        return cls(private_key=key, certificate=certificate)

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.certificate_der)
