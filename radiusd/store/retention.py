"""What retention (`radiusd purge`) reads and deletes, step by step.

`radiusd.retention` decides how big a step is and when it runs; each function here
is one step's statements on the CLI's synchronous connection, in the caller's
transaction. A step finds its rows along an index from where the last one ended
(a cursor of (order key, id)), never by a scan of the table, so each step costs
the same on a database of any size (issue 18 item 5). Not per request: no `HOT`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from radiusd.store.backend import SyncConnection

_BEGIN = "COALESCE(started_at, updated_at)"
# (SQL for the next rows: ids and the order key after a cursor, the cursor clause).
# Positional `?`: the leading parameters come from `bounds`, then the cursor's
# (key, key, id) when there is one, then the limit.
_SESSIONS = (
    f"SELECT id, {_BEGIN} FROM sessions WHERE {_BEGIN} < ?"
    " AND stopped_at IS NOT NULL AND stopped_at < ?{after}"
    f" ORDER BY {_BEGIN}, id LIMIT ?",
    f" AND {_BEGIN} >= ? AND NOT ({_BEGIN} = ? AND id <= ?)",
)
_PASSWORDS = (
    "SELECT id, issued_at FROM passwords WHERE issued_at < ? AND state = 'expired'"
    " AND COALESCE(expired_at, issued_at) < ?{after} ORDER BY issued_at, id LIMIT ?",
    " AND issued_at >= ? AND NOT (issued_at = ? AND id <= ?)",
)
_SMS = (
    "SELECT id, created_at FROM sms_outbox WHERE created_at < ?"
    " AND state IN ('sent', 'failed', 'cancelled'){after} ORDER BY created_at, id"
    " LIMIT ?",
    " AND created_at >= ? AND NOT (created_at = ? AND id <= ?)",
)
_SELECTS = {"sessions": _SESSIONS, "passwords": _PASSWORDS, "sms_outbox": _SMS}
TABLES = tuple(_SELECTS)  # in the order purge goes through them, after the journal
_CHUNK = 500  # ids per DELETE ... IN (...)
_SHORTEST_SESSION = (f"SELECT MIN(stopped_at - {_BEGIN}) FROM sessions"
                     " WHERE stopped_at IS NOT NULL")

_SHORTEST_ENTRY = ("SELECT MIN(ended_at - started_at) FROM journal_span"
                   " WHERE ended_at IS NOT NULL")
_ENTRIES = ("SELECT journal_id, started_at FROM journal_span WHERE started_at < ?"
            " AND ended_at < ?")
_ENTRIES_AFTER = " AND started_at >= ? AND NOT (started_at = ? AND journal_id <= ?)"
_PRAGMAS = ("secure_delete", "synchronous", "wal_autocheckpoint")

Cursor = tuple[float, int]  # (order key, id) of the last row a step took


@contextmanager
def purging(conn: SyncConnection) -> Iterator[None]:
    """The connection set for purging, put back as it was afterwards: freed pages
    zeroed (secure_delete); no fsync per step (a step lost to a power cut is simply
    done again, WAL stays consistent), so the lock is not held through one; and a
    step's pages copied from the WAL into the database after the step, off the lock
    (`checkpoint_step`), not in COMMIT. SQLite only: PostgreSQL locks rows, not the
    database, and its own checkpoints and autovacuum need nothing from us."""
    if not isinstance(conn, sqlite3.Connection):
        yield
        return
    saved = [(p, conn.execute(f"PRAGMA {p}").fetchone()[0]) for p in _PRAGMAS]
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    try:
        yield
    finally:
        for pragma, value in saved:
            conn.execute(f"PRAGMA {pragma} = {int(value)}")


def journal_step(conn: SyncConnection, cutoff: float, after: Cursor | None, limit: int,
                 *, dry_run: bool = False) -> tuple[int, int, Cursor | None]:
    """Up to `limit` journal entries that ended before `cutoff`, after `after` in
    (start, id) order, deleted with their events (with `dry_run` only counted).
    Returns (entries, events, where the next step starts, or None when none is
    left). Found along `journal_span`: an entry that ended before the cutoff began
    before it, or at most the shortest entry's negative length after it."""
    shortest = conn.execute(_SHORTEST_ENTRY).fetchone()[0]
    below = cutoff - min(0.0, shortest or 0.0)
    sql = _ENTRIES
    params: list[Any] = [below, cutoff]
    if after is not None:
        sql += _ENTRIES_AFTER
        params += [after[0], after[0], after[1]]
    rows = conn.execute(sql + f" ORDER BY started_at, journal_id LIMIT {int(limit)}",
                        params).fetchall()
    ids = [r[0] for r in rows]
    events = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        events += conn.execute(f"SELECT COUNT(*) FROM journal_events WHERE journal_id IN"
                               f" ({marks})", chunk).fetchone()[0]
        if not dry_run:
            conn.execute(f"DELETE FROM journal_events WHERE journal_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM journal WHERE id IN ({marks})", chunk)
    nxt = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
    return len(ids), events, nxt


def bounds(conn: SyncConnection, table: str, cutoff: float) -> tuple[float, ...]:
    """What a sweep of `table` (one of `TABLES`) looks below, as the leading
    parameters of its statement: a session that stopped before the cutoff may have
    begun after it by the shortest session's negative length (a NAS's clock), the
    others began before it."""
    if table == "sessions":
        shortest = conn.execute(_SHORTEST_SESSION).fetchone()[0]
        return (cutoff - min(0.0, shortest or 0.0), cutoff)
    if table == "passwords":
        return (cutoff, cutoff)
    return (cutoff,)


def sweep_step(conn: SyncConnection, table: str, params: tuple[float, ...], limit: int,
               after: Cursor | None, dry_run: bool) -> tuple[int, Cursor | None]:
    """One step on one table (`bounds`' params): up to `limit` rows past `after`,
    deleted unless `dry_run`. Returns (rows, where the next step starts, or None)."""
    select, cursor = _SELECTS[table]
    args: list[Any] = list(params)
    if after is not None:
        args += [after[0], after[0], after[1]]
    args.append(int(limit))
    rows = conn.execute(select.format(after=cursor if after else ""), args).fetchall()
    if rows and not dry_run:
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            conn.execute(f"DELETE FROM {table} WHERE id IN ({','.join('?' * len(chunk))})",
                         chunk)
    key = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
    return len(rows), key


class WriteWatch:
    """Whether another connection (a running server) committed to the SQLite file since
    the last look (`PRAGMA data_version` changed). Never on PostgreSQL: its steps lock
    only the old rows they delete, never another writer."""

    def __init__(self, conn: SyncConnection) -> None:
        self.conn = conn
        self.version = self._version()

    def _version(self) -> int | None:
        if not isinstance(self.conn, sqlite3.Connection):
            return None
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def others_wrote(self) -> bool:
        version = self._version()
        changed = version != self.version
        self.version = version
        return changed


# Issue 15's per-venue, per-day tables (migration 13): a day's rows go together, one
# venue at a time, along their `day` index. Days are local dates ('YYYY-MM-DD').
VENUE_TABLES = ("venue_numbers", "venue_days", "sms_budget")
_OLDEST_DAY = {t: f"SELECT day, venue FROM {t} WHERE day < ? ORDER BY day, venue LIMIT 1"
               for t in VENUE_TABLES}
_NEXT_DAY = {t: f"SELECT day, venue FROM {t} WHERE day < ?"
                 " AND (day > ? OR (day = ? AND venue > ?)) ORDER BY day, venue LIMIT 1"
             for t in VENUE_TABLES}
_COUNT_DAY = {t: f"SELECT COUNT(*) FROM {t} WHERE day = ? AND venue = ?" for t in VENUE_TABLES}
_DROP_DAY = {t: f"DELETE FROM {t} WHERE day = ? AND venue = ?" for t in VENUE_TABLES}


def venue_day_step(conn: SyncConnection, table: str, before_day: str,
                   after: tuple[str, str] | None, dry_run: bool
                   ) -> tuple[int, tuple[str, str] | None]:
    """One venue's day in `table` (one of `VENUE_TABLES`) before `before_day`, deleted
    unless `dry_run`. Returns (rows, the (day, venue) it took, or None when none is
    left). It goes on from `after` (a dry run leaves the rows there)."""
    if after is None:
        row = conn.execute(_OLDEST_DAY[table], (before_day,)).fetchone()
    else:
        row = conn.execute(_NEXT_DAY[table], (before_day, after[0], after[0],
                                              after[1])).fetchone()
    if row is None:
        return 0, None
    day, venue = str(row[0]), str(row[1])
    n = int(conn.execute(_COUNT_DAY[table], (day, venue)).fetchone()[0])
    if not dry_run:
        conn.execute(_DROP_DAY[table], (day, venue))
    return n, (day, venue)


def checkpoint_step(conn: SyncConnection) -> None:
    """A step's pages into the database now, by us: the server's own checkpoint
    (after one of its commits) then finds little to copy. PASSIVE never blocks.
    (SQLite; nothing to do on PostgreSQL.)"""
    if isinstance(conn, sqlite3.Connection):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def checkpoint(conn: SyncConnection) -> None:
    """Best effort, never in the server's way: copy the WAL into the database without
    blocking (PASSIVE), then try for a moment to empty the WAL file (TRUNCATE waits for
    readers holding the write lock, so only 20 ms), so no deleted row stays in it.
    (SQLite; on PostgreSQL, VACUUM and its own checkpoints reclaim the space.)"""
    if not isinstance(conn, sqlite3.Connection):
        return
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    busy = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 20")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError:
        pass  # busy: the server's own checkpoints will reset it
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy)}")
