"""The admin CLI's connection to PostgreSQL (`radiusd journal`, `radiusd sessions
export` with `[database] url`): the part of sqlite3's API that the CLI's store
functions use (`backend.SyncConnection`), over asyncpg on a private event loop, so
those functions and their statements are the same for both stores.

Statements are translated as the server's are (`postgres.translate`); rows are
tuples, as the SQLite CLI connection gives them; each statement is fetched whole.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import asyncpg

from radiusd.store.pg_migrations import migrate
from radiusd.store.postgres import CONNECT_SECONDS, translate

T = TypeVar("T")


class PgCursor:
    """One statement's rows, already fetched."""

    def __init__(self, rows: list[tuple[Any, ...]], names: list[str]) -> None:
        self._rows = rows
        self._next = 0
        self.description = tuple((n, None, None, None, None, None, None) for n in names)

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class PgSyncConnection:
    """A blocking connection for one CLI command; migrated on connect. Its event loop
    runs on a thread of its own, so it also works when called from inside a running
    loop (as a `sqlite3.Connection` does: the caller blocks)."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="pg-sync")
        self._thread.start()
        try:
            self._conn: asyncpg.Connection = self._wait(
                asyncpg.connect(url, timeout=CONNECT_SECONDS))
            self._wait(migrate(self._conn))
        except BaseException:
            self._stop()
            raise

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def execute(self, sql: str, parameters: Any = (), /) -> PgCursor:
        return self._wait(self._execute(sql, tuple(parameters)))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> PgCursor:
        for params in parameters:
            self.execute(sql, params)
        return PgCursor([], [])

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> PgCursor:
        query = translate(sql)
        if not params and query.split(None, 1)[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK"):
            await self._conn.execute(query)
            return PgCursor([], [])
        stmt = await self._conn.prepare(query)
        rows = await stmt.fetch(*params)
        return PgCursor([tuple(r) for r in rows], [a.name for a in stmt.get_attributes()])

    def close(self) -> None:
        try:
            self._wait(self._conn.close(timeout=CONNECT_SECONDS))
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
