"""PostgreSQL store (`[database] url`): the same promises as the SQLite one
(`radiusd.store.backend`), for several nodes sharing one database.

Driver: asyncpg (binary protocol, statements prepared and cached per connection,
`executemany` pipelined in one round trip; records answer `r[0]` and `r["col"]`).

Group commit as on SQLite: writers queue their ops and wait; one task takes what is
queued (at most `batch_max` writers), runs it on the one writer connection in one
transaction, a round trip per statement its requests share where that gives the same
outcome (`backend.rounds`), and wakes them all when it commits. When the batch fails
because of one write (a constraint), each writer's ops are run again in a transaction
of their own, so a bad op fails only its own request.

Reads come from `pool_size - 1` connections (the writer is the last one). Of them,
`POINT_READERS` (when at least one other is left) run the batched point reads
(`backend.POINTS`) with generic plans (`_readers`). `slow=True` reads (outbox rounds,
/metrics, the reaper) share at most all but one of the others, so a read an answer
waits for always finds a connection.

Placeholders: statements are written once with `?` (`backend`); `translate` turns
them into `$1, $2...` here, once per statement text (cached).

Losing the database (issue 12 item 5): an error that means the server is gone
(connection closed or refused, shutdown, timeout) reports `Health.failed("store",
...)` once, fails the writes in flight (their requests get no answer, the NAS
retransmits or fails over; an Accounting-Response is only ever sent after its
commit, so nothing acknowledged is lost), and one task reconnects with backoff
(`BACKOFF_FIRST` doubling to `BACKOFF_MAX` seconds), quietly; the first connection
that answers reports `recovered`. While failing, writes fail at once and the
dispatcher answers no RADIUS request (`radiusd.dispatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from radiusd.clock import Clock, SystemClock
from radiusd.health import Health
from radiusd.store.backend import (
    PG_FORMS,
    POINTS,
    Op,
    StoreError,
    commit_isolated,
    next_batch,
    rounds,
)
from radiusd.store.pg_migrations import migrate, take_shard
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.store")
POINT_READERS = 2  # read connections kept for the batched point reads (`PgStore`)


class _QuietPoolFloor(logging.Filter):
    """asyncpg's pool logs a traceback for every failed attempt to refill its idle
    connections while PostgreSQL is down (every 1 s doubling to 60 s); the outage is
    `Health`'s to log, once per episode (issue 12 item 5)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to restore the pool connection")


logging.getLogger("asyncpg.pool").addFilter(_QuietPoolFloor())

BACKOFF_FIRST = 0.5  # seconds before the first reconnect, doubling...
BACKOFF_MAX = 10.0  # ...up to this
CONNECT_SECONDS = 5.0  # a connection attempt gives up after this
STATEMENT_SECONDS = 10.0  # a statement with no answer by then: the server is gone
# SQLSTATE classes that mean the server, not one write: connection exception (08),
# insufficient resources (53), operator intervention (57: shutdown, cannot connect
# now), system error (58).
_DOWN_CLASSES = ("08", "53", "57", "58")


# SQLite's words that PostgreSQL has no use for: BEGIN IMMEDIATE (PostgreSQL locks
# rows, not the database) and INDEXED BY (a planner hint; PostgreSQL plans alone).
_SQLITE_ONLY = [(re.compile(r"^\s*BEGIN\s+IMMEDIATE\s*$", re.I), "BEGIN"),
                (re.compile(r"\s+INDEXED\s+BY\s+\w+", re.I), "")]


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """The one place statements become PostgreSQL's: the form a store module
    registered (`backend.PG_FORMS`), `?` placeholders as `$1, $2...` (outside quotes
    and comments), and SQLite-only words dropped (`_SQLITE_ONLY`)."""
    sql = PG_FORMS.get(sql, sql)
    for pattern, replacement in _SQLITE_ONLY:
        sql = pattern.sub(replacement, sql)
    out: list[str] = []
    n = 0
    i = 0
    quote: str | None = None
    while i < len(sql):
        c = sql[i]
        if quote is not None:
            out.append(c)
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            out.append(c)
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            out.append(sql[i:end])
            i = end
            continue
        elif c == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def database_down(error: BaseException) -> bool:
    """An error of the server or the connection, not of one write."""
    if isinstance(error, OSError | TimeoutError | asyncpg.InterfaceError
                  | asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and state[:2] in _DOWN_CLASSES


def reason(error: BaseException) -> str:
    """PostgreSQL's (or the socket's) own words, on one line."""
    if isinstance(error, TimeoutError):
        return "PostgreSQL did not answer in time"
    text = " ".join(str(error).split()) or type(error).__name__
    state = getattr(error, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text


@dataclass(slots=True)
class _Pending:
    ops: list[Op]
    done: asyncio.Future[list[list[Any]]]
    rows: bool  # `run`: return what each op returned
    guard: bool = False  # `run(guard=True)`: the rest only when the first op returned rows
    result: list[list[Any]] = field(default_factory=list)


class PgStore:
    """One writer connection (group commit) and a read pool; module docstring."""

    def __init__(self, url: str, pool_size: int = 10, batch_max: int = 256,
                 health: Health | None = None, clock: Clock | None = None) -> None:
        if pool_size < 2:
            raise ValueError("pool_size must be at least 2 (one writer, one reader)")
        self.url = url
        self.batch_max = batch_max
        self.health = health or Health()
        self.clock = clock or SystemClock()
        self.readers = pool_size - 1
        # Of the readers, those kept for the batched point reads (`backend.POINTS`),
        # when there are enough to spare; else they share the others.
        self.point_readers = POINT_READERS if self.readers > POINT_READERS else 0
        self.backoff = (BACKOFF_FIRST, BACKOFF_MAX)
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._points: asyncpg.Pool | None = None
        self._slow = asyncio.Semaphore(max(1, self.readers - self.point_readers - 1))
        self._task: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._throttle = LogThrottle(60.0)
        self.commits = 0
        self.writes = 0
        self.shard: int | None = None

    async def open(self) -> None:
        """Connect, migrate (once across nodes: `pg_migrations`), start the writer."""
        self._writer = await self._connect()
        try:
            await migrate(self._writer)
            self._pool = await self._readers(self.readers - self.point_readers)
            if self.point_readers:
                self._points = await self._readers(
                    self.point_readers, plan_cache_mode="force_generic_plan")
        except BaseException:
            await self._writer.close()
            self._writer = None
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def _readers(self, size: int, **settings: str) -> asyncpg.Pool:
        """A pool of read connections; `settings` are PostgreSQL's, for its sessions.

        The point reads' connections use generic plans (`plan_cache_mode`): a point
        read's statement is one key's index probe whatever the keys (`backend.per_key`),
        and with the default PostgreSQL made a custom plan for every batch, since its
        generic estimate of `unnest` (100 keys) never beat one made for the real few:
        25-75 us of planning a read (pg_stat_statements, issue 12), more than the read.
        Other reads keep custom plans: a range of times (an export, the reaper) is
        better planned with its bounds."""
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=size, timeout=CONNECT_SECONDS,
            command_timeout=None, max_inactive_connection_lifetime=60.0,
            reset=_reader_kept, server_settings=settings)
        return pool

    async def _connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self.url, timeout=CONNECT_SECONDS, command_timeout=STATEMENT_SECONDS)
        try:
            self.shard = await take_shard(conn)  # its own `counters` rows (migration 11)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        return conn

    @property
    def ok(self) -> bool:
        """False while PostgreSQL cannot be reached (module docstring)."""
        return self.health.ok("store")

    async def close(self) -> None:
        """Flush what is queued, then close the writer and the pool."""
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
            self._reconnect = None
        if self._task is not None:
            await self._queue.put(None)
            task, self._task = self._task, None
            await task
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item.done.done():
                item.done.set_exception(StoreError("the store is closed"))
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.remove_termination_listener(self._terminated)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.close(), CONNECT_SECONDS)
            writer.terminate()
        for pool in (self._pool, self._points):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), CONNECT_SECONDS)
                except (TimeoutError, OSError, asyncpg.InterfaceError):
                    pool.terminate()
        self._pool = self._points = None

    async def write(self, ops: list[Op]) -> None:
        """Run ``ops`` in one transaction shared with other writers; return once durable."""
        if ops:
            await self._submit(ops, rows=False)

    async def run(self, ops: list[Op], *, guard: bool = False) -> list[list[Any]]:
        """Run ``ops`` in the same group commit as `write` and return, for each op in
        order, the rows it returned (RETURNING), as a list (empty for statements that
        return none). ``guard``: the first op decides whether the others run
        (`backend`)."""
        if not ops:
            return []
        return await self._submit(ops, rows=True, guard=guard)

    async def _submit(self, ops: list[Op], rows: bool, guard: bool = False
                      ) -> list[list[Any]]:
        if self._task is None:
            raise RuntimeError("store is closed")
        if self._writer is None:  # reconnecting: the request gets no answer
            raise StoreError(f"PostgreSQL is unreachable: {self.health.reason('store')}")
        fut: asyncio.Future[list[list[Any]]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(ops, fut, rows, guard=guard))
        return await fut

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> list[asyncpg.Record]:
        """Every row of one read; `slow=True`: no RADIUS answer waits for it."""
        return await self._read(sql, params, slow=slow, one=False)

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> asyncpg.Record | None:
        """The first row of one read, or None."""
        rows = await self._read(sql, params, slow=slow, one=True)
        return rows[0] if rows else None

    async def _read(self, sql: str, params: Sequence[Any], *, slow: bool,
                    one: bool) -> list[asyncpg.Record]:
        pool = self._points if sql in POINTS and self._points is not None else self._pool
        if pool is None:
            raise RuntimeError("store is not open")
        gate = self._slow if slow else None
        if gate is not None:
            await gate.acquire()
        try:
            async with pool.acquire(timeout=STATEMENT_SECONDS) as conn:
                query = translate(sql)
                if one:
                    row = await conn.fetchrow(query, *params, timeout=STATEMENT_SECONDS)
                    return [] if row is None else [row]
                rows: list[asyncpg.Record] = await conn.fetch(
                    query, *params, timeout=STATEMENT_SECONDS)
                return rows
        except Exception as e:
            if database_down(e):
                self._lost(e)
            raise
        finally:
            if gate is not None:
                gate.release()

    async def _run(self) -> None:
        while True:
            batch, stop = await next_batch(self._queue, self.batch_max)
            if batch:
                await self._commit(batch)
            if stop:
                break

    async def _commit(self, batch: list[_Pending]) -> None:
        def down(e: BaseException) -> bool:
            return database_down(e) or self._writer is None

        await commit_isolated(batch, self._transaction, down, self._lost, self._write_failed,
                              lambda p, e: _settle(p, error=e))

    async def _transaction(self, batch: list[_Pending]) -> None:
        """BEGIN, every op (runs of the same statement pipelined), COMMIT."""
        conn = self._writer
        if conn is None:
            raise StoreError("PostgreSQL is unreachable")
        for p in batch:
            p.result = []
        async with conn.transaction():
            run: list[list[Op]] = []
            for p in batch:
                if not p.rows:
                    run.append(p.ops)
                    continue
                await _execute(conn, run)
                run = []
                for sql, params in p.ops:
                    if p.guard and p.result and not p.result[0]:
                        p.result.append([])  # the guard returned nothing: not run
                        continue
                    p.result.append(list(await conn.fetch(translate(sql), *params)))
            await _execute(conn, run)
        self.writes += sum(len(p.ops) for p in batch)
        self.commits += 1
        self.health.recovered("store", self.clock.now())

    def _terminated(self, conn: asyncpg.Connection) -> None:
        """The writer's connection closed under us (PostgreSQL stopped, network)."""
        if conn is self._writer and self._task is not None:
            self._lost(ConnectionError("the connection to PostgreSQL was closed"))

    def _lost(self, error: BaseException) -> None:
        """Once per outage (Health): drop the writer, reconnect in the background."""
        self.health.failed("store", reason(error), self.clock.now())
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.remove_termination_listener(self._terminated)
            writer.terminate()
        if self._reconnect is None and self._task is not None:
            self._reconnect = asyncio.create_task(self._reconnecting(), name="store-reconnect")

    async def _reconnecting(self) -> None:
        """Backoff until PostgreSQL answers again; then `recovered`, once."""
        delay, cap = self.backoff
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    conn = await self._connect()
                    await conn.fetchval("SELECT 1")
                except Exception as e:
                    log.debug("PostgreSQL still unreachable: %s", reason(e))
                    delay = min(delay * 2, cap)
                    continue
                self._writer = conn
                for pool in (self._pool, self._points):
                    if pool is not None:
                        await pool.expire_connections()  # those from before the outage
                self.health.recovered("store", self.clock.now())
                return
        finally:
            self._reconnect = None

    def _write_failed(self, error: BaseException) -> None:
        self._throttle.log(log, logging.ERROR, f"write/{type(error).__name__}", time.monotonic(),
                           "a write failed and was rolled back: %s", reason(error))


async def _execute(conn: asyncpg.Connection, requests: list[list[Op]]) -> None:
    """Requests' ops, a round trip per statement that requests share (`rounds`)."""
    for sql, params in rounds(requests):
        if len(params) == 1:
            await conn.execute(translate(sql), *params[0])
        else:
            await conn.executemany(translate(sql), params)


async def _reader_kept(conn: asyncpg.Connection) -> None:
    """A read connection goes back to the pool as it is. A reader runs one SELECT and
    changes no session state (no SET, LISTEN, advisory lock or cursor), so asyncpg's
    default reset query (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`)
    would only cost a round trip that every read waits for, since the pool's release
    is awaited before the read returns (issue 12: a read's median at half of the
    accounting peak went from 1.45 to 1.09 ms; BENCHMARKS.md). asyncpg still rolls
    back a transaction left open before calling this (`Connection._reset`)."""


def _settle(p: _Pending, error: BaseException | None = None) -> None:
    if p.done.done():
        return
    if error is not None:
        exc = StoreError(f"the database did not commit this write: {reason(error)}")
        p.done.set_exception(exc)
    else:
        p.done.set_result(p.result)


def describe(url: str) -> str:
    """The URL as it may be printed: the password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


async def connect_problem(url: str, timeout: float = CONNECT_SECONDS) -> str | None:
    """`radiusd check-config`: None when a connection works, else what failed, in one
    line (authentication, the host, a missing database)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    user = unquote(parts.username or "") or "(default)"
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except (asyncpg.InvalidPasswordError,
            asyncpg.exceptions.InvalidAuthorizationSpecificationError) as e:
        return f"authentication failed for user \"{user}\" ({' '.join(str(e).split())})"
    except asyncpg.InvalidCatalogNameError as e:
        return " ".join(str(e).split())  # database "x" does not exist
    except socket.gaierror as e:
        return f"cannot reach {host}:{port}: unknown host ({e.strerror})"
    except ConnectionRefusedError:
        return f"cannot reach {host}:{port}: connection refused"
    except TimeoutError:
        return f"cannot reach {host}:{port}: no answer within {timeout:g}s (timeout)"
    except OSError as e:
        return f"cannot reach {host}:{port}: {e.strerror or e}"
    except Exception as e:
        return reason(e)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None
