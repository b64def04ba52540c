"""Shared fixtures: the real server in-process on loopback, a simulated NAS, a clock
the test moves, and the rule for real peers (skip locally, fail under CI=true)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import (
    DATABASE_URL_ENV,
    loopback_config,
    nas_for,
    running_server,
)
from tests.hangs import watched
from tests.pg import pg_server, pg_url  # noqa: F401  (fixtures: a real PostgreSQL)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_KEY_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """A config without [otp] key_file puts the sealing key in /etc/radiusd (root: the
    suite often runs as root) or the home directory: point every test, and every
    radiusd process a test starts, at a temporary one instead (docs/keys.md)."""
    global _KEY_DIR
    _KEY_DIR = tempfile.mkdtemp(prefix="radiusd-test-key-")
    os.environ["RADIUSD_KEY_FILE"] = os.path.join(_KEY_DIR, "radiusd.key")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _KEY_DIR is not None:
        os.environ.pop("RADIUSD_KEY_FILE", None)
        shutil.rmtree(_KEY_DIR, ignore_errors=True)


# A phase of a test that hangs fails with every thread's and task's stack (tests/hangs.py).
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from watched(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from watched(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from watched(item, "teardown"))


def require_peer(executable: str, package: str) -> str:
    """Path of a real peer program; skip without it locally, fail without it in CI."""
    path = shutil.which(executable) or (
        executable if os.path.isabs(executable) and os.access(executable, os.X_OK) else None
    )
    if path:
        return path
    message = f"{executable} not found (Debian package {package}; scripts/install-peers)"
    if IN_CI:
        pytest.fail(f"CI=true and a required peer is missing: {message}")
    pytest.skip(message)


# Suites that run against both stores (issue 12 item 6): the same tests, the same
# assertions, once on SQLite and once on a fresh PostgreSQL database.
BOTH_STORES = {"test_otp_accounting", "test_otp_login", "test_otp_limits", "test_journal",
               "test_admin_cli", "test_otp_request", "test_venues"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_STORES \
            and "store_backend" in metafunc.fixturenames \
            and metafunc.definition.get_closest_marker("sqlite_only") is None:
        metafunc.parametrize("store_backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(autouse=True)
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """"sqlite" (the default), or "postgres" for `BOTH_STORES`: loopback configs then
    name a fresh PostgreSQL database (`radiusd.testing.server.DATABASE_URL_ENV`)."""
    backend: str = getattr(request, "param", "sqlite")
    if backend == "postgres":
        monkeypatch.setenv(DATABASE_URL_ENV, request.getfixturevalue("pg_url"))
    return backend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def server(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Server]:
    async with running_server(loopback_config(tmp_path, ipv6=True), clock) as s:
        yield s


@pytest.fixture
def nas(server: Server) -> SimulatedNAS:
    return nas_for(server, timeout=0.5, retries=1)
