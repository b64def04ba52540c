"""The one interface both stores satisfy (DESIGN "store/ holds all persistence").

`radiusd.store.sqlite.Store` (one file, the default) and
`radiusd.store.postgres.PgStore` (`[database] url`, several nodes) keep the same
promises, so policy code is typed against `Backend` and never asks which one it has:

- `write(ops)`: the ops run in one group commit shared with other writers, in
  order, and the call returns once they are durable; an op that fails (a constraint)
  fails only its own `write`, never its neighbours' in the batch.
- `run(ops)`: the same, and it returns, for each op in order, the rows it returned
  (RETURNING), as a list (empty for statements that return none). With
  ``guard=True`` the first op is a guard: when it returns no row, the others are
  not run (their results are empty lists), all inside the one transaction (a venue's
  SMS budget, `store.budgets`).
- `fetchall`/`fetchone`: one read on its own connection; `slow=True` marks a read
  no RADIUS answer waits for, which may never take the last free connection.
- `ok`/`health`: whether the database can commit now (`radiusd.health`: while it
  cannot, no RADIUS request is answered and `/healthz` says 503 naming the store).

Statements are written once, for SQLite's dialect with `?` placeholders, in a
portable subset (CASE rather than scalar MAX, ON CONFLICT rather than INSERT OR
IGNORE); the PostgreSQL store translates placeholders in one place (`postgres.py`),
and a statement that needs a PostgreSQL-only clause registers that form in `PG_FORMS`.
Rows support `r[0]` and `r["column"]` on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from radiusd.health import Health

if TYPE_CHECKING:
    from radiusd.clock import Clock
    from radiusd.config import DatabaseConfig

Op = tuple[str, Any]  # (sql with ? placeholders, parameters)

# A statement's PostgreSQL form where the portable one would do worse there (same
# placeholders, in the same order), registered by the store module that owns it and
# used by `postgres.translate`; SQLite runs the portable text.
PG_FORMS: dict[str, str] = {}

# Statements that touch only the rows one key names (from the op's parameters), and
# nothing that another statement reaches by another key, registered by the store
# module that owns them; or (key None) that give the same outcome in either order
# with every statement registered here, themselves included. Requests whose ops all
# are such, no key shared, commute: `rounds` may run them together, one statement at
# a time. Any other statement is a barrier. (Counter triggers only add: they commute.)
KEYED: dict[str, Callable[[Any], object | None]] = {}


class Row(Protocol):
    """A result row: by position and by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __len__(self) -> int: ...


class Backend(Protocol):
    """What `radiusd serve` needs of a store (see the module docstring)."""

    health: Health

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ok(self) -> bool: ...

    async def write(self, ops: list[Op]) -> None: ...

    async def run(self, ops: list[Op], *, guard: bool = False) -> list[list[Any]]: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> Sequence[Any]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> Any | None: ...


class SyncCursor(Protocol):
    """What the admin CLI reads from a statement (sqlite3's cursor has it)."""

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SyncConnection(Protocol):
    """The admin CLI's connection (`radiusd journal`, `sessions export`): a plain
    `sqlite3.Connection` from `sqlite.connect_sync`, or `pg_sync.PgSyncConnection`.
    Autocommit; writes inside an explicit BEGIN IMMEDIATE ... COMMIT; rows are tuples."""

    def execute(self, sql: str, parameters: Any = ..., /) -> SyncCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> SyncCursor: ...

    def close(self) -> None: ...


def connect_sync(database: DatabaseConfig, create: bool = True) -> SyncConnection:
    """The admin CLI's connection to the store `[database]` names, migrated.
    ``create=False`` (every command but `serve` and `db init`, issue 14): a missing
    SQLite file raises `sqlite.MissingDatabase` instead of becoming a new empty one."""
    if database.url is not None:
        from radiusd.store.pg_sync import PgSyncConnection

        return PgSyncConnection(database.url)
    from radiusd.store.sqlite import connect_sync as sqlite_connect

    return sqlite_connect(database.path, create=create)


class StoreError(Exception):
    """A write that was not committed (its caller sends no answer; the NAS retries)."""


T = TypeVar("T")


def rounds(requests: Sequence[Sequence[Op]]) -> Iterator[tuple[str, list[Any]]]:
    """The ops of a group commit's requests, in queue order, as (statement, the
    parameters of each run of it): what one pipelined `executemany` each can run.
    Consecutive requests whose ops are all `KEYED`, with no key shared among them, are
    run together: each round takes one statement at the head of a request not yet
    done (`_together` says which), for every request whose next op is it, so requests that
    look alike (Starts, Stops) take one round per statement instead of one per op;
    and consecutive ops of the same statement go in one call, as they always did.
    Each request's own ops keep their order, and requests that share a key or hold
    any other statement keep the queue's order; so the outcome is the one running
    them one after another would give (issue 12: a round trip per op was PostgreSQL
    accounting's bottleneck), but for what nothing reads: which of two in-flight
    requests' times a key-less statement keeps, and the order of new rows' ids."""
    sql: str | None = None
    params: list[Any] = []
    for next_sql, next_params in _rounds(requests):
        if next_sql == sql:  # the same statement again, in the same order: one call
            params += next_params
            continue
        if sql is not None:
            yield sql, params
        sql, params = next_sql, list(next_params)
    if sql is not None:
        yield sql, params


def _rounds(requests: Sequence[Sequence[Op]]) -> Iterator[tuple[str, list[Any]]]:
    wave: list[Sequence[Op]] = []
    taken: set[object] = set()
    for ops in requests:
        keys = _keys(ops)
        if keys is None or not taken.isdisjoint(keys):
            yield from _together(wave)
            wave, taken = [], set()
            if keys is None:
                yield from _together([ops])
                continue
        wave.append(ops)
        taken |= keys
    yield from _together(wave)


def _keys(ops: Sequence[Op]) -> set[object] | None:
    keys = set()
    for sql, params in ops:
        key_of = KEYED.get(sql)
        if key_of is None:
            return None
        key = key_of(params)
        if key is not None:
            keys.add(key)
    return keys


def _together(wave: Sequence[Sequence[Op]]) -> Iterator[tuple[str, list[Any]]]:
    """A wave's rounds. Each takes the first head statement (in queue order) that no
    request still holds further down, so that it is never needed again; when every
    head is also held lower, the earliest request's head. A Stop (record) queued
    before a Start (retire, record, seen) then shares the Start's record round
    instead of taking one of its own (3 rounds, not 4). Any order of a wave's
    requests gives the same outcome (`rounds`), so only the count changes."""
    heads = [0] * len(wave)
    left = [i for i, ops in enumerate(wave) if ops]
    while left:
        lower = {op[0] for i in left for op in wave[i][heads[i] + 1:]}
        sql = next((wave[i][heads[i]][0] for i in left if wave[i][heads[i]][0] not in lower),
                   wave[left[0]][heads[left[0]]][0])
        params = []
        for i in left:
            if wave[i][heads[i]][0] == sql:
                params.append(wave[i][heads[i]][1])
                heads[i] += 1
        yield sql, params
        left = [i for i in left if heads[i] < len(wave[i])]


async def next_batch(queue: asyncio.Queue[T | None], most: int) -> tuple[list[T], bool]:
    """Group commit, as both stores' writer takes it: wait for one write, then take
    whatever else is queued by then, at most `most` in all. Returns the batch and
    whether a stop (None) was among what it took; a stop first gives an empty batch."""
    first = await queue.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < most and not queue.empty():
        item = queue.get_nowait()
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


async def commit_isolated(batch: list[T], transaction: Callable[[list[T]], Awaitable[None]],
                          down: Callable[[BaseException], bool],
                          lost: Callable[[BaseException], None],
                          failed: Callable[[BaseException], None],
                          settle: Callable[[T, BaseException | None], None]) -> None:
    """Group commit's failure rule, as both stores' writer applies it: the batch in
    one `transaction`; when it fails because of one write (a constraint), each
    writer's ops again in a transaction of their own, so a bad op fails only its own
    request (`failed` logs it); when the database itself is `down`, `lost` once and
    every write not yet committed fails. `settle` wakes each writer (None: committed)."""
    try:
        await transaction(batch)
    except Exception as e:
        if down(e):
            lost(e)
            for p in batch:
                settle(p, e)
            return
        if len(batch) == 1:
            failed(e)
            settle(batch[0], e)
            return
        for i, p in enumerate(batch):
            try:
                await transaction([p])
            except Exception as alone:
                if down(alone):
                    lost(alone)
                    for rest in batch[i:]:
                        settle(rest, alone)
                    return
                failed(alone)
                settle(p, alone)
            else:
                settle(p, None)
        return
    for p in batch:
        settle(p, None)


class PointReads:
    """Reads of one statement by key, made together (group commit for reads): every key
    asked for while a batch is out goes into the next one, a single statement for all
    of them (`sql` takes the list of keys, each once, as its one parameter: `per_key`,
    or `= ANY(?)`; the row's key is at `key_index`). For PostgreSQL, where each
    statement is a round trip: at 64 requests in flight, one statement answers many.
    Each read still starts after it was asked for, so it sees what was committed
    before: no staler than its own."""

    def __init__(self, store: Backend, sql: str, key_index: int, most: int = 512) -> None:
        self.store, self.sql, self.key_index, self.most = store, sql, key_index, most
        self._waiting: dict[Any, list[asyncio.Future[list[Any]]]] = {}
        self._draining = False
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: Any) -> list[Any]:
        """The rows with this key, read in the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.setdefault(key, []).append(fut)
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[:self.most]
                batch = {k: self._waiting.pop(k) for k in keys}
                try:
                    rows = await self.store.fetchall(self.sql, (keys,))
                except Exception as e:  # each asker gets the error, as from its own read
                    for futs in batch.values():
                        for f in futs:
                            if not f.done():
                                f.set_exception(e)
                    continue
                found: dict[Any, list[Any]] = {}
                for r in rows:
                    found.setdefault(r[self.key_index], []).append(r)
                for k, futs in batch.items():
                    for f in futs:
                        if not f.done():
                            f.set_result(found.get(k, []))
        finally:
            self._draining = False


def per_key(columns: str, table: str, key: str, condition: str = "TRUE", *,
            partial: bool = False) -> str:
    """A `PointReads` statement (PostgreSQL only): the rows of `table` whose `key` is
    one of the array's and that meet `condition`, one index probe per key.

    PostgreSQL plans it once per connection (generic plans, `postgres.PgStore`), maybe
    while the table is empty, and keeps that plan as the table grows. Written as
    `key = ANY(?) AND condition`, or as one `key = k AND condition` per key, it was
    seen to pick a partial index of `condition` (`sessions_login_open`: open sessions)
    and walk it whole for every key; and a partial index keeps an entry for each row
    that stopped matching until vacuum, so each read walked every session closed since
    (2.9 ms a read after 20,000 Start/Stop pairs, against 0.05 ms; 182 us a read in
    the benchmark's first minute). So each key is looked up alone, in a subquery the
    planner keeps apart (`OFFSET 0`), where only the key's own index applies, and
    `condition` filters the few rows it finds (`tests/test_query_plans.py`).
    ``partial=True``: the key's one index is a partial index of `condition` itself
    (`passwords_class`), whose entries for one key are few: the condition stays
    beside the key, so that index can answer. A key given twice gives its rows twice
    (`PointReads` asks for each once)."""
    inner = (f"SELECT {columns} FROM {table} WHERE {key} = wanted.key AND {condition}"
             if partial else
             f"SELECT {columns} FROM {apart(table, key, 'wanted.key', condition)}")
    return (f"SELECT found.* FROM unnest(?::text[]) AS wanted(key) CROSS JOIN LATERAL "
            f"({inner} OFFSET 0) AS found")


def apart(table: str, key: str, value: str, condition: str) -> str:
    """The rows of `table` whose `key` is `value` (`?` or a column) and that meet
    `condition`, for a FROM clause (PostgreSQL): the key looked up alone, in a
    subquery the planner keeps apart (`OFFSET 0`), so only the key's own index can
    answer it, whatever plan PostgreSQL made and kept (`per_key`), and `condition`
    filtering the few rows found. `condition`'s placeholders come after `value`'s."""
    return f"(SELECT * FROM {table} WHERE {key} = {value} OFFSET 0) AS one WHERE {condition}"


# The statements `point_reads` batches: PostgreSQL runs them on connections of their
# own with generic plans (`postgres.PgStore`), since one plan is right for any keys.
POINTS: set[str] = set()


def point_reads(store: Backend, sql: str, key_index: int) -> PointReads | None:
    """`PointReads` of `sql` where a read is a round trip (PostgreSQL); None on SQLite,
    whose reads are local (the caller then reads one key at a time)."""
    from radiusd.store.postgres import PgStore

    if not isinstance(store, PgStore):
        return None
    POINTS.add(sql)
    return PointReads(store, sql, key_index)


def for_config(database: DatabaseConfig, health: Health, clock: Clock) -> Backend:
    """The store `[database]` names: PostgreSQL with `url`, else the SQLite file."""
    if database.url is not None:
        from radiusd.store.postgres import PgStore

        return PgStore(database.url, database.pool_size, database.batch_max, health, clock)
    from radiusd.store.sqlite import Store

    return Store(database.path, database.batch_max, health, clock)


def describe(database: DatabaseConfig) -> str:
    """What the log and check-config say the database is (a URL's password masked)."""
    if database.url is None:
        return database.path
    from radiusd.store.postgres import describe as masked

    return masked(database.url)
