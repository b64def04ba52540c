"""Retention (`radiusd purge`): delete what ended before a cutoff, in small steps.

What goes, once it ended before the cutoff (what is still open stays, whatever its age):
- journal entries closed before it, with their events (Rules §10);
- sessions that stopped before it;
- expired passwords, issued and expired before it (a password is issued before it
  expires: only one whose NAS reported a Stop time before its issue could differ);
- SMS sent, failed or cancelled, created before it.

Each step deletes at most `BATCH` rows (journal entries count with their events) in
its own short `BEGIN IMMEDIATE` transaction, then sleeps `PAUSE`: the server's writer,
waiting for the same lock in SQLite's busy handler, gets in between two steps, so no
write waits behind more than one step. A step finds its rows along an index from
where the last one ended (never a scan of the table), so each costs the same on a
database of any size. Stopped half-way (Ctrl-C, a crash, the machine going down), the
database holds whole steps only and is consistent; the next run finishes the job.
Freed pages are zeroed (secure_delete).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from radiusd import journal

BATCH = 2000  # rows in a step at most
TARGET = 0.01  # seconds a step may hold the write lock: fewer rows when they take longer
PAUSE = 0.05  # seconds between steps: longer than the busy handler's first few polls

# (what, SQL for the next rows: ids and the order key after a cursor, the cursor clause)
_BEGIN = "COALESCE(started_at, updated_at)"
_SESSIONS = (
    f"SELECT id, {_BEGIN} FROM sessions WHERE {_BEGIN} < :below"
    " AND stopped_at IS NOT NULL AND stopped_at < :cutoff{after}"
    f" ORDER BY {_BEGIN}, id LIMIT :limit",
    f" AND {_BEGIN} >= :key AND NOT ({_BEGIN} = :key AND id <= :id)",
)
_PASSWORDS = (
    "SELECT id, issued_at FROM passwords WHERE issued_at < :cutoff AND state = 'expired'"
    " AND COALESCE(expired_at, issued_at) < :cutoff{after} ORDER BY issued_at, id"
    " LIMIT :limit",
    " AND issued_at >= :key AND NOT (issued_at = :key AND id <= :id)",
)
_SMS = (
    "SELECT id, created_at FROM sms_outbox WHERE created_at < :cutoff"
    " AND state IN ('sent', 'failed', 'cancelled'){after} ORDER BY created_at, id"
    " LIMIT :limit",
    " AND created_at >= :key AND NOT (created_at = :key AND id <= :id)",
)
_TABLES = (("sessions", "sessions", _SESSIONS), ("passwords", "passwords", _PASSWORDS),
           ("sms messages", "sms_outbox", _SMS))

Step = Callable[[str, int], None]


class Pace:
    """How many rows the next step takes: about as many as fit in `target` seconds of
    holding the write lock (measured on the last full step), never more than `most`."""

    def __init__(self, most: int, target: float) -> None:
        self.most, self.target = most, target
        self.rows = min(most, 256)

    def took(self, seconds: float, full: bool) -> None:
        if not full:  # a short last step says nothing about the next
            return
        scale = min(2.0, max(0.5, self.target / max(seconds, 1e-6)))
        self.rows = max(1, min(self.most, int(self.rows * scale)))


def purge(conn: sqlite3.Connection, cutoff: float, *, dry_run: bool = False,
          batch: int = BATCH, target: float = TARGET, pause: float = PAUSE,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic,
          on_step: Step | None = None) -> dict[str, int]:
    """Remove (with `dry_run`, count) what ended before `cutoff`; rows per kind, in the
    order `radiusd purge` prints them. A step takes at most `batch` rows, fewer when
    they take longer than `target` seconds to delete; `on_step(what, rows)` is called
    after each step is committed."""
    counts = {"journal events": 0, "journal entries": 0, "sessions": 0, "passwords": 0,
              "sms messages": 0}
    saved = [(p, conn.execute(f"PRAGMA {p}").fetchone()[0])
             for p in ("secure_delete", "synchronous")]
    conn.execute("PRAGMA secure_delete = ON")
    # A step lost to a power cut is simply done again: no fsync per step (WAL stays
    # consistent), so the lock is not held through one.
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        pace = Pace(batch, target)
        if dry_run:  # nothing is locked: no need to go slow
            pace.rows = batch
        after: tuple[float, int] | None = None
        while True:
            with _step(conn, dry_run, clock) as took:
                entries, events, after = journal.purge_step(
                    conn, cutoff, after, max(1, pace.rows // 4), dry_run=dry_run)
            pace.took(took[0], after is not None)
            counts["journal entries"] += entries  # an entry comes with a few events
            counts["journal events"] += events
            _done(on_step, "journal entries", entries, dry_run, pause, sleep)
            if after is None:
                break
        for what, table, (select, cursor) in _TABLES:
            params: dict[str, Any] = {"cutoff": cutoff, "below": cutoff}
            if table == "sessions":  # one that stopped before it began may begin after
                shortest = conn.execute(
                    f"SELECT MIN(stopped_at - {_BEGIN}) FROM sessions"
                    " WHERE stopped_at IS NOT NULL").fetchone()[0]
                params["below"] = cutoff - min(0.0, shortest or 0.0)
            key: tuple[float, int] | None = None
            while True:
                with _step(conn, dry_run, clock) as took:
                    n, key = _rows(conn, table, select, cursor,
                                   {**params, "limit": pace.rows}, key, dry_run)
                pace.took(took[0], key is not None)
                counts[what] += n
                _done(on_step, what, n, dry_run, pause, sleep)
                if key is None:
                    break
        if not dry_run:
            _checkpoint(conn)
    finally:
        for pragma, value in saved:
            conn.execute(f"PRAGMA {pragma} = {int(value)}")
    return counts


@contextmanager
def _step(conn: sqlite3.Connection, dry_run: bool,
          clock: Callable[[], float]) -> Iterator[list[float]]:
    """One step's own short write transaction (none for a dry run: it only reads);
    yields where it puts how long it held the lock, to its commit."""
    took = [0.0]
    if dry_run:
        yield took
        return
    conn.execute("BEGIN IMMEDIATE")
    t0 = clock()
    try:
        yield took
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    took[0] = clock() - t0


def _rows(conn: sqlite3.Connection, table: str, select: str, cursor: str,
          params: dict[str, Any], after: tuple[float, int] | None,
          dry_run: bool) -> tuple[int, tuple[float, int] | None]:
    """One step on one table: the next rows past `after`, deleted unless `dry_run`."""
    if after is not None:
        params = {**params, "key": after[0], "id": after[1]}
    rows = conn.execute(select.format(after=cursor if after else ""), params).fetchall()
    if rows and not dry_run:
        conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(r[0],) for r in rows])
    key = (rows[-1][1], rows[-1][0]) if len(rows) == params["limit"] else None
    return len(rows), key


def _done(on_step: Step | None, what: str, rows: int, dry_run: bool, pause: float,
          sleep: Callable[[float], None]) -> None:
    if on_step is not None:
        on_step(what, rows)
    if rows and not dry_run:
        sleep(pause)  # the server's writes go first


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Best effort, never in the server's way: copy the WAL into the database without
    blocking (PASSIVE), then try for a moment to empty the WAL file (TRUNCATE waits for
    readers holding the write lock, so only 20 ms), so no deleted row stays in it."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    busy = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 20")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError:
        pass  # busy: the server's own checkpoints will reset it
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy)}")
