"""SQLite store: WAL, versioned migrations, one writer with group commit.

The writer is a plain sqlite3 connection on one dedicated thread, and a whole batch
runs there in one hop (aiosqlite, which the readers use, hops once per statement).

Group commit: writers hand in their statements and wait; one task takes everything
queued, runs it in one transaction and wakes them all when it commits. While a
commit is in the SQLite thread, new writes queue up for the next one, so under load
a batch grows by itself and the fsync is paid once per batch, not per packet; with
one request in flight the latency is one transaction. FreeRADIUS's
`buffered-sql` gets durability with a detail file; this gets it with the database.

Health (RFC 5997 §4: Status-Server must say whether we can serve): when a commit
fails because of the database itself (disk full, locked, read-only, I/O error,
corrupt; or the file was deleted or replaced under us) the store reports
`Health.failed("store", <SQLite's own error>)`, which logs it once, fails the whole
batch at once (no per-write retries against a database that cannot commit), and
from then on writes a trivial probe transaction every `PROBE_SECONDS` when nothing
else is written; the first commit that succeeds, a request's or the probe's, reports
`recovered`. An error in one write only (a constraint) fails that write alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import aiosqlite

from radiusd.clock import Clock, SystemClock
from radiusd.health import Health
from radiusd.store.migrations import migrate
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.store")

Op = tuple[str, Any]  # (sql, parameters)

PROBE_SECONDS = 2.0  # while failing and idle: how often a probe write tries again
WRITER_BUSY_SECONDS = 5.0  # "database is locked" after this: a NAS has given up by then
# A real write that changes nothing: the first UPDATE dirties the page (SQLite skips
# writing a row updated to the value it has), the second restores it, and COMMIT must
# append it to the WAL, which is what fails on a full disk.
PROBE: list[Op] = [("UPDATE schema_version SET version = -version", ()),
                   ("UPDATE schema_version SET version = -version", ())]
# SQLite primary result codes that mean the database cannot commit at all.
_DATABASE_DOWN = {
    5,   # SQLITE_BUSY: locked by another process past the busy timeout
    6,   # SQLITE_LOCKED
    7,   # SQLITE_NOMEM
    8,   # SQLITE_READONLY
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL: database or disk is full
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    26,  # SQLITE_NOTADB
}


def create_private(path: str) -> None:
    """Create the database file with mode 0600 (it holds personal data, Rules §10)."""
    if path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def connect_sync(path: str, timeout: float = 10.0, same_thread: bool = True) -> sqlite3.Connection:
    """A plain connection for the CLI, start-up and the writer thread: WAL, migrated,
    busy timeout, autocommit (transactions are explicit)."""
    create_private(path)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn)
    return conn


@dataclass(slots=True)
class _Pending:
    ops: list[Op]
    done: asyncio.Future[None] | None  # None: the health probe, which nobody awaits


class DatabaseGone(OSError):
    """The database file was deleted or replaced while the writer had it open."""


class Store:
    """The one writer (group commit) and a reader, both on aiosqlite threads."""

    def __init__(self, path: str, batch_max: int = 256, health: Health | None = None,
                 clock: Clock | None = None) -> None:
        self.path = path
        self.batch_max = batch_max
        self.health = health or Health()
        self.clock = clock or SystemClock()
        self.probe_seconds = PROBE_SECONDS
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of what we opened
        self._throttle = LogThrottle(60.0)
        self.commits = 0
        self.writes = 0

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        loop = asyncio.get_running_loop()
        # Created, migrated and used only on the writer thread.
        self._writer = await loop.run_in_executor(
            self._thread, lambda: connect_sync(self.path, timeout=WRITER_BUSY_SECONDS,
                                               same_thread=False))
        if self.path != ":memory:":
            st = os.stat(self.path)
            self._file = (st.st_dev, st.st_ino)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None, timeout=30)
        self._reader.row_factory = sqlite3.Row
        self._task = asyncio.create_task(self._run(), name="store-writer")

    @property
    def ok(self) -> bool:
        """False while the database cannot commit (see the module docstring)."""
        return self.health.ok("store")

    async def close(self) -> None:
        """Flush what is queued, then close (graceful shutdown)."""
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        while not self._queue.empty():  # arrived after the stop mark: refuse, never hang
            item = self._queue.get_nowait()
            if item is not None:
                _settle(item, error=True)
        if self._writer is not None and self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._writer.close)
            self._thread.shutdown(wait=True)
        if self._reader is not None:
            await self._reader.close()
        self._writer = self._reader = None
        self._thread = None

    async def write(self, ops: list[Op]) -> None:
        """Run ``ops`` in one transaction shared with other writers; return once durable."""
        if not ops:
            return
        if self._task is None:
            raise RuntimeError("store is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(ops, fut))
        await fut

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        assert self._reader is not None, "store is not open"
        rows = await self._reader.execute_fetchall(sql, params)
        return list(rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def _run(self) -> None:
        queue = self._queue
        stop = False
        while not stop:
            first = await queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.batch_max and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self._transaction(op for p in batch for op in p.ops)
        except Exception as e:
            if _database_down(e):
                self._failing(e)
                for p in batch:
                    _settle(p, error=True)
                return
            if len(batch) == 1:
                self._write_failed(e)
                _settle(batch[0], error=True)
                return
            # One bad write must not fail its neighbours: retry each on its own.
            for i, p in enumerate(batch):
                try:
                    await self._transaction(p.ops)
                except Exception as e:
                    if _database_down(e):
                        self._failing(e)
                        for rest in batch[i:]:
                            _settle(rest, error=True)
                        return
                    self._write_failed(e)
                    _settle(p, error=True)
                else:
                    _settle(p)
            return
        for p in batch:
            _settle(p)

    def _failing(self, error: BaseException) -> None:
        """The database cannot commit: once per episode in the log (Health), and a
        probe write later in case nothing else comes to find out it works again."""
        self.health.failed("store", _reason(error), self.clock.now())
        if self._probe_timer is None and self._task is not None:
            self._probe_timer = asyncio.get_running_loop().call_later(
                self.probe_seconds, self._probe)

    def _probe(self) -> None:
        self._probe_timer = None
        if self.health.ok("store") or self._task is None:
            return
        if self._queue.empty():  # otherwise the queued writes are the probe
            self._queue.put_nowait(_Pending(PROBE, None))
        else:
            self._probe_timer = asyncio.get_running_loop().call_later(
                self.probe_seconds, self._probe)

    def _write_failed(self, error: BaseException) -> None:
        self._throttle.log(log, logging.ERROR, f"write/{type(error).__name__}", time.monotonic(),
                           "a write failed and was rolled back: %s", _reason(error))

    async def _transaction(self, ops: Iterable[Op]) -> None:
        """One thread hop for the whole batch: BEGIN, every statement, COMMIT."""
        assert self._thread is not None
        batch = list(ops)
        await asyncio.get_running_loop().run_in_executor(self._thread, self._apply, batch)
        self.writes += len(batch)
        self.commits += 1
        self.health.recovered("store", self.clock.now())

    def _apply(self, ops: list[Op]) -> None:
        conn = self._writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, run in groupby(ops, key=lambda op: op[0]):
                conn.executemany(sql, [p for _, p in run])
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR...): a
            # ROLLBACK then fails with "no transaction is active" and would hide the
            # error that matters.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as e:
                    log.debug("ROLLBACK failed too: %s", e)
            raise
        self._check_file()

    def _check_file(self) -> None:
        """Committed, but to the file we opened: is it still the one at ``path``? A
        database deleted or replaced under a running server takes writes that nobody
        will ever read."""
        if self._file is None:
            return
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise DatabaseGone(f"the database file is gone ({e.strerror}): writes go to a "
                               f"deleted file; restore it and restart radiusd") from None
        if (st.st_dev, st.st_ino) != self._file:
            raise DatabaseGone("the database file was replaced while radiusd runs: writes go "
                               "to the old file; restart radiusd")


def _database_down(error: BaseException) -> bool:
    """An error of the database, not of one write (see `_DATABASE_DOWN`)."""
    if isinstance(error, OSError):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.Error) and code is not None \
        and code & 0xFF in _DATABASE_DOWN


def _reason(error: BaseException) -> str:
    """SQLite's own words, e.g. "database or disk is full (SQLITE_FULL)"."""
    name = getattr(error, "sqlite_errorname", None)
    return f"{error} ({name})" if name else str(error) or type(error).__name__


def _settle(p: _Pending, error: bool = False) -> None:
    if p.done is None or p.done.done():
        return
    if error:
        p.done.set_exception(StoreError("the database cannot commit this write; "
                                        "see the log"))
    else:
        p.done.set_result(None)


class StoreError(Exception):
    pass
