"""A real PostgreSQL for the tests (issue 12 item 6), started the one way the project
starts one (`radiusd.testing.postgres`: Debian's binaries, a temporary directory,
127.0.0.1 on a free port; as root the server runs as `postgres`): one server per
test session, a role `radiusd` and a fresh database per test. Without the binaries
the tests skip locally and fail under CI=true. Tests trade durability for speed
(`fsync = off`): a test restarts PostgreSQL, it never crashes the machine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from radiusd.testing.postgres import PostgresServer, PostgresUnavailable, running_postgres

PASSWORD = "pw-Zq7x9"
USER = "radiusd"
SETTINGS = {"fsync": "off", "synchronous_commit": "on", "full_page_writes": "off"}


@dataclass
class PgServer:
    """One running PostgreSQL; `url(db)` for a database on it, as the role `radiusd`."""

    server: PostgresServer

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, database: str, user: str = USER, password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.server.psql(database, "-c", sql)

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name} OWNER {USER} TEMPLATE template0")
        return name

    def stop(self) -> None:
        """Fast shutdown: connections cut, in-flight transactions rolled back."""
        self.server.stop()

    def start(self) -> None:
        """Start it again after `stop`, on the same port."""
        self.server.resume()

    def restart(self) -> None:
        """`pg_ctl restart -m fast`."""
        self.server.restart()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """PostgreSQL for the whole session (skips without the binaries, except in CI)."""
    from tests.conftest import IN_CI  # conftest imports this module

    try:
        with running_postgres(settings=SETTINGS) as server:
            server.psql("postgres", "-c", f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
            yield PgServer(server)
    except PostgresUnavailable as e:
        message = f"{e} (scripts/install-peers)"
        if IN_CI:
            pytest.fail(f"CI=true and a required peer is missing: {message}")
        pytest.skip(message)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL to a fresh, empty database of its own."""
    return pg_server.url(pg_server.new_database())
