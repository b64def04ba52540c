"""Health tells the truth (issue 11): while the database cannot commit, Status-Server
is not answered (RFC 5997 §4: a NAS must fail over), the real SQLite error is logged
once for the episode and its recovery once, requests that fail leave at most a
throttled line without a traceback, and Status-Server is answered again once a
write succeeds: a request's, or the store's own probe when no traffic comes.

The failures are real: SQLite's own "database or disk is full" (a page limit, and a
small tmpfs where the machine lets us mount one), "database is locked" (another
connection holds the write lock), and the database file deleted under the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncio_dgram
import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.radius.wire import Code
from radiusd.store import sqlite as sqlite_store
from radiusd.store.sqlite import Store, StoreError
from radiusd.testing.nas import NoReply, SimulatedNAS
from radiusd.testing.server import eventually, loopback_config, nas_for, running_server

INSERT = ("INSERT INTO sessions (unique_id, nas, acct_session_id, updated_at, class_token) "
          "VALUES (?, 'n', ?, 0, ?)")


def lines(caplog: pytest.LogCaptureFixture, text: str,
          level: int = logging.DEBUG) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage() and r.levelno >= level]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r.getMessage() for r in caplog.records if r.exc_info]
    assert not lines(caplog, "no transaction is active")


class Nas:
    """A NAS that fires requests (no waiting for answers it may not get) and asks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.nas: SimulatedNAS = nas_for(server, timeout=2.0, retries=0)

    async def fire_start(self) -> None:
        stream = await asyncio_dgram.connect(self.nas.acct_address)
        start = self.nas.accounting_request("Start", user="+77011234567",
                                            session_id=self.nas.new_session_id())
        await stream.send(self.nas.encode(start))
        stream.close()

    async def settled(self) -> None:
        """Nothing in flight: a fired request's drop is counted when its handler
        resumes, which can be after the store's health turned."""
        await eventually(lambda: not self.server.in_flight)

    async def status_withheld(self) -> None:
        """A Status-Server goes out and is dropped as "store_failing" (not answered)."""
        dropped = self.server.stats.dropped
        await self.settled()
        before = dropped["store_failing"]
        stream = await asyncio_dgram.connect(self.nas.auth_address)
        await stream.send(self.nas.encode(self.nas.status_server()))
        await eventually(lambda: dropped["store_failing"] == before + 1)
        stream.close()

    async def status_answered(self) -> bool:
        return (await self.nas.send(self.nas.status_server())).code == Code.ACCESS_ACCEPT

    async def accounting_answered(self) -> bool:
        """Once the store is ok: while it fails every request is dropped (issue 12
        item 5), and the store finds out it works again by itself (its probe)."""
        await eventually(lambda: self.server.health.ok("store"), limit=15.0)
        start = self.nas.accounting_request("Start", user="+77011234567",
                                            session_id=self.nas.new_session_id())
        return (await self.nas.send(start)).code == Code.ACCOUNTING_RESPONSE


@pytest.fixture
async def locking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                         ) -> AsyncIterator[Server]:
    """A server whose writer gives up on a locked database after 50 ms (not 5 s)."""
    monkeypatch.setattr(sqlite_store, "WRITER_BUSY_SECONDS", 0.05, raising=False)
    async with running_server(loopback_config(tmp_path), ManualClock()) as server:
        yield server


@contextlib.contextmanager
def write_lock(path: str) -> Iterator[None]:
    """Another process's connection holding the write lock (an admin's sqlite3 shell)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_status_server_is_not_answered_while_the_database_is_locked(
        locking_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server = locking_server
    caplog.set_level(logging.INFO)
    nas = Nas(server)
    assert await nas.status_answered()
    with write_lock(server.config.database.path):
        for _ in range(5):
            await nas.fire_start()
        dropped = server.stats.dropped
        # The first failed commit marks the store failing; what comes after it is
        # dropped unanswered without trying (issue 12 item 5).
        await eventually(lambda: dropped["store_failing"] == 5)
        assert dropped["policy_error"] == 0  # even the one whose commit found it locked
        assert not server.health.ok("store")
        await nas.status_withheld()
        await nas.status_withheld()
    assert await nas.accounting_answered()  # a write succeeds: the store is back
    assert await nas.status_answered()
    assert len(lines(caplog, "database is locked", logging.ERROR)) == 1  # once
    assert len(lines(caplog, "store recovered")) == 1
    # The store's one line says why; the requests it cost are counted, not logged.
    assert lines(caplog, "no reply to a request") == []
    assert_no_traceback(caplog)


async def test_status_server_comes_back_without_traffic_once_a_probe_write_succeeds(
        locking_server: Server) -> None:
    """A NAS that failed over sends nothing but Status-Server: the store finds out
    by itself that it can write again."""
    server = locking_server
    server.store.probe_seconds = 0.02
    nas = Nas(server)
    with write_lock(server.config.database.path):
        await nas.fire_start()
        await eventually(lambda: not server.health.ok("store"))
        await nas.status_withheld()
    received = server.stats.counts["acct.received"]
    await eventually(lambda: server.health.ok("store"))
    assert server.stats.counts["acct.received"] == received  # no request did it
    assert await nas.status_answered()


async def test_status_server_is_not_answered_once_the_database_file_is_deleted(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite writes on into the deleted file, which nobody will ever read."""
    nas = Nas(server)
    Path(server.config.database.path).unlink()
    await nas.fire_start()
    await eventually(lambda: not server.health.ok("store"))
    assert "gone" in (server.health.reason("store") or "")
    await nas.status_withheld()
    assert len(lines(caplog, "database file is gone")) == 1


async def test_sqlite_rolling_back_by_itself_is_reported_with_its_real_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On SQLITE_FULL SQLite has already rolled back; a ROLLBACK then fails with "no
    transaction is active", which must not hide "database or disk is full"."""
    caplog.set_level(logging.INFO)
    store = Store(str(tmp_path / "db"))
    await store.open()
    loop = asyncio.get_running_loop()

    def page_limit(pages: int | None) -> Any:
        def run() -> None:
            conn = store._writer
            assert conn is not None
            limit = pages or conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {limit}")
        return loop.run_in_executor(store._thread, run)

    try:
        await page_limit(None)  # the database may not grow: it is "full"
        for i in range(3):
            with pytest.raises(StoreError):
                await store.write([(INSERT, (f"u{i}", f"s{i}", "x" * 100_000))])
        assert_no_traceback(caplog)
        assert len(lines(caplog, "database or disk is full", logging.ERROR)) == 1
        assert not store.ok
        await page_limit(1_000_000)  # space again
        await store.write([(INSERT, ("u9", "s9", "x"))])
        assert store.ok
        assert len(lines(caplog, "store recovered")) == 1
    finally:
        await store.close()


# -- a real full disk --------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``; skip when this machine will not mount one."""
    where.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount(8) here to make a small filesystem")
    out = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                          str(where)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {out.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write until the filesystem says ENOSPC."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


async def test_disk_full_stops_status_server_until_space_is_freed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with small_filesystem(tmp_path / "small") as disk:
        config = loopback_config(tmp_path, database={"path": str(disk / "radiusd.db")})
        async with running_server(config, ManualClock()) as server:
            nas = Nas(server)
            assert await nas.accounting_answered()
            filler = fill(disk)
            for _ in range(3):
                await nas.fire_start()
            dropped = server.stats.dropped
            await eventually(lambda: dropped["policy_error"] + dropped["store_failing"] == 3)
            assert "database or disk is full" in (server.health.reason("store") or "")
            await nas.status_withheld()
            filler.unlink()
            assert await nas.accounting_answered()
            assert await nas.status_answered()
    assert len(lines(caplog, "database or disk is full", logging.ERROR)) == 1
    assert len(lines(caplog, "store recovered")) == 1
    assert_no_traceback(caplog)


async def test_no_request_is_answered_while_the_store_cannot_commit(
        locking_server: Server) -> None:
    """Issue 12 item 5: a node whose database fails answers no RADIUS request (the NAS
    fails over) rather than rejecting users it cannot check; it answers again once the
    store is back."""
    server = locking_server
    nas = Nas(server)
    asker = nas_for(server, timeout=0.3, retries=0)
    with write_lock(server.config.database.path):
        await nas.fire_start()
        await eventually(lambda: not server.health.ok("store"))
        await nas.settled()
        before = server.stats.dropped["store_failing"]
        with pytest.raises(NoReply):
            await asker.send(asker.access_request("+77011234567", password=""))
        with pytest.raises(NoReply):
            await asker.send(asker.accounting_request(
                "Start", user="+77011234567", session_id=asker.new_session_id()))
        # NoReply comes after 0.3 s whether or not the server has read the datagrams
        # yet (a busy machine): wait for it to have dropped both.
        await eventually(lambda: server.stats.dropped["store_failing"] == before + 2)
    assert await nas.accounting_answered()
