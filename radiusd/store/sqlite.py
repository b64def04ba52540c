"""SQLite store: WAL, versioned migrations, one writer with group commit.

The writer is a plain sqlite3 connection on one dedicated thread, and a whole batch
runs there in one hop (aiosqlite, which the readers use, hops once per statement).

Group commit: writers hand in their statements and wait; one task takes everything
queued, runs it in one transaction and wakes them all when it commits. While a
commit is in the SQLite thread, new writes queue up for the next one, so under load
a batch grows by itself and the fsync is paid once per batch, not per packet; with
one request in flight the latency is one transaction. FreeRADIUS's
`buffered-sql` gets durability with a detail file; this gets it with the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import aiosqlite

from radiusd.store.migrations import migrate

log = logging.getLogger("radiusd.store")

Op = tuple[str, Any]  # (sql, parameters)


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
    done: asyncio.Future[None]


class Store:
    """The one writer (group commit) and a reader, both on aiosqlite threads."""

    def __init__(self, path: str, batch_max: int = 256) -> None:
        self.path = path
        self.batch_max = batch_max
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        loop = asyncio.get_running_loop()
        # Created, migrated and used only on the writer thread.
        self._writer = await loop.run_in_executor(
            self._thread, lambda: connect_sync(self.path, timeout=30, same_thread=False))
        self._reader = await aiosqlite.connect(self.path, isolation_level=None, timeout=30)
        self._reader.row_factory = sqlite3.Row
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        """Flush what is queued, then close (graceful shutdown)."""
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
        except Exception:
            if len(batch) == 1:
                log.exception("write failed")
                _settle(batch[0], error=True)
                return
            # One bad write must not fail its neighbours: retry each on its own.
            for p in batch:
                try:
                    await self._transaction(p.ops)
                except Exception:
                    log.exception("write failed")
                    _settle(p, error=True)
                else:
                    _settle(p)
            return
        for p in batch:
            _settle(p)

    async def _transaction(self, ops: Iterable[Op]) -> None:
        """One thread hop for the whole batch: BEGIN, every statement, COMMIT."""
        assert self._thread is not None
        batch = list(ops)
        await asyncio.get_running_loop().run_in_executor(self._thread, self._apply, batch)
        self.writes += len(batch)
        self.commits += 1

    def _apply(self, ops: list[Op]) -> None:
        conn = self._writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, run in groupby(ops, key=lambda op: op[0]):
                conn.executemany(sql, [p for _, p in run])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _settle(p: _Pending, error: bool = False) -> None:
    if p.done.done():
        return
    if error:
        p.done.set_exception(StoreError("the database write failed; see the log"))
    else:
        p.done.set_result(None)


class StoreError(Exception):
    pass
