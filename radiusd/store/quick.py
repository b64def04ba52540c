"""Point reads answered on the event loop's own thread (DESIGN "Performance shape": no
thread hop per packet on the hot path).

Every login reads the number's live passwords from the database (issue 12: the
database, not a node's memory, is the truth). Through the reader threads that read
costs a hop each way and a fight for the GIL; here it is one indexed search of a few
rows, a few tens of microseconds, on a read-only connection of its own. Under WAL a
reader never waits for the writer, so it cannot stall the loop; the rare wait
(SQLite rebuilding its WAL index) is bounded by `BUSY_MS`, and any error hands the
read back to the reader threads (`None`), which wait as long as they must.

Only statements that are an index search of a bounded handful of rows belong here.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from radiusd.store.backend import Backend
from radiusd.store.sqlite import Store, connect_reader

BUSY_MS = 20


class QuickReads:
    """A read-only connection for the loop's thread, opened with the store's file
    (never later: connecting to a path whose file was deleted would create one).
    SQLite only: with PostgreSQL every read is a network round trip, made through the
    store's pool (`fetchall` answers None)."""

    def __init__(self, store: Backend) -> None:
        self._conn: sqlite3.Connection | None = None
        if not isinstance(store, Store) or store.path == ":memory:" \
                or not os.path.exists(store.path):
            return
        try:
            conn = connect_reader(store.path)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            conn.execute("SELECT version FROM schema_version").fetchall()  # opens the WAL
        except sqlite3.Error:
            return
        self._conn = conn

    def fetchall(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row] | None:
        """The rows, or None: not available, ask the reader threads instead."""
        if self._conn is None:
            return None
        try:
            cur = self._conn.execute(sql, params)
            try:
                return cur.fetchall()
            finally:
                cur.close()
        except sqlite3.Error:
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
