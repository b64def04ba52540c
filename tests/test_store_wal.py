"""The WAL stays bounded under continuous load (issue 18 item 6): a long reader can
hold a checkpoint back, but once it lets go the -wal file comes back under the
store's limit; writes with the server's pattern of short reads beside them keep it
within a few times the limit (SQLite's own checkpoints alone let it reach 4 MB); and
a large WAL left by a migration at start is emptied though nothing is written.

The limit is made small (`Store.wal_limit`, 256 KiB) so that a few MB of writes show
it; what is asserted is the file's size, never a time.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from pathlib import Path

import pytest

from radiusd.store import sessions
from radiusd.store import sqlite as sqlite_store
from radiusd.store.migrations import migrate
from radiusd.store.sqlite import CHECKPOINT_RETRY_COMMITS, Op, Store

LIMIT = 256 * 1024
ROWS = 8  # per batch
ROW_BYTES = 2000  # each row's class_token: a batch is about ROWS * ROW_BYTES of pages
# What one batch can add to the WAL: its rows' pages and the index pages they touch
# (sessions has eight indexes; a WAL frame is a 4 KiB page and a 24-byte header),
# counted generously.
BATCH_WAL = (ROWS * ROW_BYTES + 12 * 4096) * 2
INSERT = ("INSERT INTO sessions (unique_id, nas, acct_session_id, updated_at, class_token) "
          "VALUES (?, 'n', ?, ?, ?)")


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def batch(start: int) -> list[Op]:
    noise = random.Random(start)
    return [(INSERT, (f"u{i}", f"s{i}", float(i),
                      noise.randbytes(ROW_BYTES // 2).hex()))
            for i in range(start, start + ROWS)]


async def short_reads(store: Store, stop: asyncio.Event) -> int:
    """What the server reads beside its writes: a Start's lost-Stop check, a slow
    outbox/metrics-like read of a few rows."""
    n = 0
    while not stop.is_set():
        await sessions.open_session(store, f"u{n}")
        await store.fetchall("SELECT id FROM sessions ORDER BY id DESC LIMIT 50", slow=True)
        n += 1
    return n


async def settle(store: Store, first: int) -> None:
    """Writes with no reader about: the writer's next checkpoint is due within
    `CHECKPOINT_RETRY_COMMITS` commits and nothing holds it back."""
    for k in range(CHECKPOINT_RETRY_COMMITS + 1):
        await store.write(batch(first + k * ROWS))


async def test_wal_is_cut_back_once_a_long_reader_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "radiusd.db"
    store = Store(str(path))
    store.wal_limit = LIMIT
    await store.open()
    long_reader = sqlite3.connect(path, isolation_level=None)
    try:
        # A reader (an export in another process, say) holds its snapshot open:
        # no checkpoint can copy past it, so the WAL grows.
        long_reader.execute("BEGIN")
        long_reader.execute("SELECT COUNT(*) FROM sessions").fetchone()
        n = 0
        while wal_bytes(path) <= 4 * LIMIT:
            await store.write(batch(n))
            n += ROWS
        grown = wal_bytes(path)
        long_reader.execute("COMMIT")  # it lets go

        # The load goes on, with the server's short reads beside it.
        stop = asyncio.Event()
        reads = asyncio.create_task(short_reads(store, stop))
        written = 0
        while written < 2 * grown:
            await store.write(batch(n))
            n += ROWS
            written += ROWS * ROW_BYTES
        stop.set()
        assert await reads > 0
        await settle(store, n)
        assert wal_bytes(path) <= LIMIT + BATCH_WAL < grown
    finally:
        long_reader.close()
        await store.close()


async def test_wal_stays_bounded_under_writes_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "radiusd.db"
    store = Store(str(path))
    store.wal_limit = LIMIT
    await store.open()
    largest = 0

    async def writer(first: int) -> None:
        nonlocal largest
        for k in range(first, first + 60 * ROWS * 4, ROWS * 4):
            await store.write(batch(k))
            largest = max(largest, wal_bytes(path))

    try:
        stop = asyncio.Event()
        reads = [asyncio.create_task(short_reads(store, stop)) for _ in range(3)]
        await asyncio.gather(*(writer(w * ROWS) for w in range(4)))  # 16 * LIMIT in all
        stop.set()
        assert all(n > 0 for n in await asyncio.gather(*reads))
        # Busy, the writer checkpoints once the file is twice the limit, after a
        # group commit of the four writers' batches; a short reader that holds one
        # checkpoint back lets the file grow by the limit again before the next.
        # Allowed: two such in a row.
        assert largest <= 4 * LIMIT + 4 * BATCH_WAL
        assert os.path.getsize(path) > 8 * LIMIT  # the rows did go to the database
        await settle(store, 10**6)
        assert wal_bytes(path) <= LIMIT + BATCH_WAL
    finally:
        await store.close()


async def test_wal_a_migration_left_large_is_emptied_after_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade's CREATE INDEX over a year of history writes its pages to the WAL in
    one transaction; the server then writes nothing, and the file is emptied anyway."""
    path = tmp_path / "radiusd.db"

    def migrate_big(conn: sqlite3.Connection) -> None:
        migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE upgrade_pages (data BLOB)")
        conn.execute("INSERT INTO upgrade_pages SELECT randomblob(4000)"
                     " FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                     " LIMIT 500) SELECT x FROM c)")
        conn.execute("COMMIT")

    monkeypatch.setattr(sqlite_store, "migrate", migrate_big)
    # Another process (a CLI command) has the database open, so closing the store is
    # not the last close, which would empty the WAL by itself.
    store = Store(str(path))
    store.wal_limit = LIMIT
    await store.open()
    other = sqlite3.connect(path)
    try:
        other.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        await store.close()
        assert wal_bytes(path) <= LIMIT
    finally:
        other.close()
