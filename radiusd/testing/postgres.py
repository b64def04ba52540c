"""A throwaway PostgreSQL server for tests and benchmarks (issue 12).

Debian's own binaries (`/usr/lib/postgresql/<version>/bin`: `initdb`, `pg_ctl`,
`createdb`), a data directory in a temporary directory, TCP on 127.0.0.1 and a free
port only (its unix socket stays in that directory), password authentication for
TCP, and durable commits (`fsync = on`, `synchronous_commit = on`): benchmarks compare
durable accounting, so the database must pay for its fsyncs. Run as root, the server
runs as an unprivileged user (`postgres` when it exists), as initdb demands.

    with running_postgres() as pg:
        url = pg.create_database("radiusd")  # postgresql://postgres:...@127.0.0.1:port/radiusd

The server stops when the block ends (and, failing that, when the process exits).
Tests pass `settings` (e.g. `fsync = off`) and stop/`resume`/`restart` it to prove
that nodes recover by themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
# Sized for a benchmark on a small box: several radiusd nodes/workers with their
# pools and FreeRADIUS's rlm_sql pool, well under max_connections.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "'128MB'",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "log_min_messages": "warning",
}
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (Debian: `apt-get install postgresql`)."""


def find_bindir() -> Path:
    """The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, or `$PG_BINDIR`."""
    env = os.environ.get("PG_BINDIR")
    candidates = [Path(env)] if env else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) in "
                              "/usr/lib/postgresql/*/bin: apt-get install postgresql")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One PostgreSQL server on 127.0.0.1:`port` with its data in `root`/data."""

    root: Path
    bindir: Path = field(default_factory=find_bindir)
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    run_as: str | None = None  # the OS user the server runs as (root: "postgres")
    running: bool = False
    settings: dict[str, str] = field(default_factory=dict)  # over SETTINGS

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        """`postgresql://postgres:<password>@127.0.0.1:<port>/<database>`."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        """Environment for libpq clients (psql, createdb) talking to this server."""
        return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.port),
                "PGUSER": SUPERUSER, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def _run(self, *argv: str, what: str, as_owner: bool = True) -> None:
        """Server commands run as the data directory's owner; clients as we are."""
        cmd = self._cmd(*argv) if as_owner else list(argv)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             env=None if as_owner else self.env(), timeout=120)
        if out.returncode != 0:
            tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{what} failed ({out.returncode}): " + " / ".join(tail))

    def start(self) -> None:
        """initdb, write the settings, start and wait until it accepts connections."""
        if os.geteuid() == 0 and self.run_as is None:
            self.run_as = SUPERUSER if _user_exists(SUPERUSER) else "nobody"
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            os.chown(pwfile, pwd.getpwnam(self.run_as).pw_uid, -1)
        pwfile.chmod(0o600)
        try:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                      f"--pwfile={pwfile}", "--auth-local=peer", "--auth-host=scram-sha-256",
                      "-E", "UTF8", "--locale=C", "--no-instructions", what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        for attempt in range(3):
            self.port = free_tcp_port()
            settings = {**SETTINGS, **self.settings, "port": str(self.port),
                        "unix_socket_directories": f"'{self.root}'"}
            with (self.data / "postgresql.conf").open("a") as f:
                f.write("\n# radiusd.testing.postgres\n")
                f.writelines(f"{k} = {v}\n" for k, v in settings.items())
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.log), "-w", "-t", "60", "start", what="pg_ctl start")
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.log_tail():
                    raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from None
                continue  # the free port was taken meanwhile: another one
            self.running = True
            atexit.register(self.stop)
            return

    def resume(self) -> None:
        """Start a stopped server again: the same data, the same port."""
        if self.running:
            return
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-w", "-t", "60", "start", what="pg_ctl start")
        self.running = True
        atexit.register(self.stop)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, in-flight transactions
        roll back, and the server accepts connections again on the same port."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-m", "fast", "-w", "-t", "60", "restart", what="pg_ctl restart")

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " / ".join(self.log.read_text().strip().splitlines()[-lines:])
        return ""

    def create_database(self, name: str) -> str:
        """A new empty database owned by the superuser; returns its URL."""
        if not _NAME.match(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", SUPERUSER, name, what=f"createdb {name}", as_owner=False)
        return self.url(name)

    def psql(self, database: str, *args: str, stdin: str | None = None) -> str:
        """Run `psql` on `database` (ON_ERROR_STOP); returns its output."""
        out = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                              "-d", database, *args],
                             input=stdin, capture_output=True, text=True, check=False,
                             env=self.env(), timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"psql on {database} failed: {out.stderr.strip()[-500:]}")
        return out.stdout

    def stop(self) -> None:
        """Fast shutdown (in-flight transactions roll back); idempotent."""
        if not self.running:
            return
        self.running = False
        atexit.unregister(self.stop)
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                                 "fast", "-w", "stop"),
                       capture_output=True, check=False, timeout=120)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def running_postgres(prefix: str = "radiusd-pg-", settings: dict[str, str] | None = None
                     ) -> Iterator[PostgresServer]:
    """Start a throwaway server in a new temporary directory; stop and delete it after.
    `settings` override `SETTINGS` (postgresql.conf syntax: strings quoted).

    Raises `PostgresUnavailable` when the binaries are missing."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o700)
    server = PostgresServer(root, bindir, settings=dict(settings or {}))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
