"""A real PostgreSQL server for the registry's tests: Debian's binaries, a cluster of its own in
a temporary folder, on a free loopback port, run as the ``postgres`` user (the server refuses
root). Each test gets a database of its own on it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.procs import free_port

INSTALL = "bash scripts/setup.sh (it installs Debian's postgresql)"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        # Never a skip: CI must not pass a PostgreSQL suite it did not run.
        pytest.fail(f"PostgreSQL's {name} is missing: run {INSTALL}", pytrace=False)
    return found[-1]


class PostgresServer:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="xp2p-pg-"))
        self.port = free_port()
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "xp2p", "--no-sync")
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
            "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off",
            "start",
        )  # fmt: skip
        self._databases = 0

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {done.stderr}{done.stdout}{log}")

    def new_database(self) -> str:
        """A fresh database's URL (``postgresql://xp2p@127.0.0.1:PORT/NAME``)."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}_{int(time.time() * 1000) % 100000}"
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "xp2p", name)
        return f"postgresql://xp2p@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
