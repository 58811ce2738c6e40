"""A real coturn for the tests: started with a config file (secrets stay off the command line),
ready once it says so, stopped with the test."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TURNSERVER = shutil.which("turnserver")
READY_LINE = "Total General servers"
#: coturn 4.6's line for a TLS-capable listener that is up; the plain TCP port gets one too,
#: so wait for the one that names the TLS port.
TLS_READY_LINE = "TLS/TCP listener opened on : {ip}:{port}"

Launcher = Callable[..., "subprocess.Popen[bytes]"]


@dataclass
class Coturn:
    process: subprocess.Popen[bytes]
    listen_ip: str
    port: int
    secret: str
    log: Path
    tls_port: int | None = None
    #: PEM of the private CA that signed coturn's TLS certificate (with ``tls_port``).
    ca_pem: str | None = None

    def urls(self, *transports: str) -> tuple[str, ...]:
        """URLs for the cloud config, one per transport (default udp and tcp); ``"tls"`` is
        ``turns:`` on the TLS port (RFC 7065), when coturn was started with one."""
        return tuple(self._url(t) for t in transports or ("udp", "tcp"))

    def _url(self, transport: str) -> str:
        if transport != "tls":
            return f"turn:{self.listen_ip}:{self.port}?transport={transport}"
        if self.tls_port is None:
            raise ValueError("coturn was started without TLS")
        return f"turns:{self.listen_ip}:{self.tls_port}?transport=tcp"

    def allocations(self) -> int:
        """How many allocations coturn has logged as created (relay use, for assertions)."""
        return self.log.read_text(errors="replace").count("ALLOCATE processed, success")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_coturn(
    workdir: Path,
    *,
    listen_ip: str = "127.0.0.1",
    port: int = 3478,
    secret: str = "coturn-test-shared-secret",
    loopback_peers: bool = False,
    tls_port: int | None = None,
    launcher: Launcher | None = None,
    timeout: float = 10.0,
) -> Coturn:
    """Start ``turnserver`` with the TURN REST API (``use-auth-secret``) on one address.

    ``tls_port`` also opens TURN over TLS there, with a certificate for ``listen_ip`` from a
    private CA made here (``Coturn.ca_pem``). ``launcher`` runs the command (e.g. inside a
    lab namespace); default ``subprocess.Popen``.
    """
    if TURNSERVER is None:
        raise RuntimeError("turnserver (coturn) is not installed: scripts/setup.sh installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "turnserver.conf"
    log = workdir / "turnserver.log"
    lines = [
        f"listening-ip={listen_ip}",
        f"relay-ip={listen_ip}",
        f"listening-port={port}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "realm=xp2p",
        "fingerprint",
        "no-cli",
        "no-dtls",
        "no-software-attribute",
        "no-multicast-peers",
        f"userdb={workdir / 'turndb'}",
        f"pidfile={workdir / 'turnserver.pid'}",
        "log-file=stdout",
        "simple-log",
        "verbose",
    ]
    if loopback_peers:
        lines.append("allow-loopback-peers")
    ca_pem: str | None = None
    if tls_port is None:
        lines.append("no-tls")
    else:
        ca_pem, cert_pem, key_pem = make_certificate(listen_ip)
        (workdir / "turn_cert.pem").write_text(cert_pem)
        (workdir / "turn_pkey.pem").write_text(key_pem)
        (workdir / "turn_pkey.pem").chmod(0o600)
        lines += [
            f"tls-listening-port={tls_port}",
            f"cert={workdir / 'turn_cert.pem'}",
            f"pkey={workdir / 'turn_pkey.pem'}",
        ]
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    argv: Sequence[str] = [TURNSERVER, "-c", str(conf)]
    out = log.open("wb")
    run = launcher or subprocess.Popen
    process = run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    server = Coturn(process, listen_ip, port, secret, log, tls_port, ca_pem)
    ready = [READY_LINE]
    if tls_port is not None:
        ready.append(TLS_READY_LINE.format(ip=listen_ip, port=tls_port))
    deadline = time.monotonic() + timeout
    while not all(line in log.read_text(errors="replace") for line in ready):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"coturn did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return server


def make_ca(name: str = "xp2p test TURN CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_certificate(ip: str) -> tuple[str, str, str]:
    """(CA PEM, server certificate PEM, server key PEM): a new private CA and a certificate
    it signed for ``ip`` (an IP SAN, which is what hostname checking matches an IP against)."""
    ca_key, ca_cert = make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
    )
