"""A real coturn for the tests: started with a config file (secrets stay off the command line),
ready once it says so, stopped with the test."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

TURNSERVER = shutil.which("turnserver")
READY_LINE = "Total General servers"

Launcher = Callable[..., "subprocess.Popen[bytes]"]


@dataclass
class Coturn:
    process: subprocess.Popen[bytes]
    listen_ip: str
    port: int
    secret: str
    log: Path

    def urls(self, *transports: str) -> tuple[str, ...]:
        """``turn:`` URLs for the cloud config, one per transport (default udp and tcp)."""
        return tuple(
            f"turn:{self.listen_ip}:{self.port}?transport={t}" for t in transports or ("udp", "tcp")
        )

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
    launcher: Launcher | None = None,
    timeout: float = 10.0,
) -> Coturn:
    """Start ``turnserver`` with the TURN REST API (``use-auth-secret``) on one address.

    ``launcher`` runs the command (e.g. inside a lab namespace); default ``subprocess.Popen``.
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
        "no-tls",
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
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    argv: Sequence[str] = [TURNSERVER, "-c", str(conf)]
    out = log.open("wb")
    run = launcher or subprocess.Popen
    process = run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    server = Coturn(process, listen_ip, port, secret, log)
    deadline = time.monotonic() + timeout
    while READY_LINE not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"coturn did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return server
