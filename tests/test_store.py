"""The store's group commit: many writers share one transaction, each waits for it,
and one bad write fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from radiusd.store.sqlite import Store, StoreError

INSERT = ("INSERT INTO sessions (unique_id, nas, acct_session_id, updated_at) "
          "VALUES (?, 'n', ?, 0)")


async def test_concurrent_writes_share_one_transaction(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    await store.open()
    try:
        await asyncio.gather(*(store.write([(INSERT, (f"u{i}", f"s{i}"))]) for i in range(100)))
        assert store.writes == 100
        assert store.commits == 1  # all were queued before the writer ran
        rows = await store.fetchall("SELECT COUNT(*) FROM sessions")
        assert rows[0][0] == 100
    finally:
        await store.close()


async def test_a_failing_write_fails_alone(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    await store.open()
    try:
        results = await asyncio.gather(
            store.write([(INSERT, ("a", "1"))]),
            store.write([(INSERT, ("dup", "2")), (INSERT, ("dup", "3"))]),  # UNIQUE fails
            store.write([(INSERT, ("b", "4"))]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], StoreError)
        rows = await store.fetchall("SELECT unique_id FROM sessions ORDER BY unique_id")
        assert [r[0] for r in rows] == ["a", "b"]  # nothing half-written from the bad one
    finally:
        await store.close()


async def test_close_flushes_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = Store(str(path))
    await store.open()
    pending = asyncio.ensure_future(store.write([(INSERT, ("x", "1"))]))
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    await pending
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone() == (1,)


async def test_database_file_is_private(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    await store.open()
    await store.close()
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o600


def test_write_after_close_is_refused(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(store.write([(INSERT, ("x", "1"))]))
