"""A real PostgreSQL for the tests (issue 12 item 6): Debian's binaries (`initdb`,
`pg_ctl`; scripts/install-peers installs `postgresql`), one server per test session
in a temporary directory, listening on 127.0.0.1 on a free port, and a fresh
database per test. Without the binaries the tests skip locally and fail under
CI=true (`require_peer`). As root, the server runs as the `postgres` user."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "pw-Zq7x9"
USER = "radiusd"


def _bin(name: str) -> str:
    from tests.conftest import require_peer  # conftest imports this module

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return require_peer(found[-1] if found else name, "postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """One running PostgreSQL; `url(db)` for a database on it."""

    pg_ctl: str
    data: Path
    port: int
    runas: list[str]

    def url(self, database: str, user: str = USER, password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        psql = str(Path(self.pg_ctl).with_name("psql"))
        subprocess.run([*self.runas, psql, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-h",
                        str(self.data), "-p", str(self.port), "-d", database, "-c", sql],
                       check=True, capture_output=True, timeout=60)

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name} OWNER {USER} TEMPLATE template0")
        return name

    def stop(self) -> None:
        subprocess.run([*self.runas, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w",
                        "stop"], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        subprocess.run([*self.runas, self.pg_ctl, "-D", str(self.data), "-w", "-t", "60",
                        "-l", str(self.data / "log"), "-o",
                        f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
                        " -c fsync=off -c max_connections=200", "start"],
                       check=True, capture_output=True, timeout=90)


def _start() -> tuple[PgServer, str]:
    initdb = _bin("initdb")
    pg_ctl = _bin("pg_ctl")
    top = tempfile.mkdtemp(prefix="radiusd-pg-")
    runas: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(top, user.pw_uid, user.pw_gid)
        runas = ["runuser", "-u", "postgres", "--"]
    data = Path(top) / "data"
    pwfile = Path(top) / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if runas:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    subprocess.run([*runas, initdb, "-D", str(data), "-U", "postgres", "--pwfile",
                    str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--locale=C"], check=True, capture_output=True, timeout=120)
    server = PgServer(pg_ctl, data, _free_port(), runas)
    server.start()
    server.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    return server, top


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """PostgreSQL for the whole session (skips without the binaries, except in CI)."""
    server, top = _start()
    try:
        yield server
    finally:
        # A test may have stopped it and failed before starting it again.
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL to a fresh, empty database of its own."""
    return pg_server.url(pg_server.new_database())
