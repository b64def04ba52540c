"""The store's group commit: many writers share one transaction, each waits for it,
and one bad write fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from radiusd.store.quick import QuickReads
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


CLOSE = ("UPDATE sessions SET stopped_at = 1 WHERE unique_id = ? AND stopped_at IS NULL "
         "RETURNING unique_id, acct_session_id")


async def test_run_returns_what_each_statement_changed_in_the_shared_commit(
        tmp_path: Path) -> None:
    """Issue 12: `run` answers with the RETURNING rows, op by op, in the same group
    commit as plain writes; a conditional statement returns a row to one caller only."""
    store = Store(str(tmp_path / "db"))
    await store.open()
    try:
        await store.write([(INSERT, ("u1", "s1"))])
        first, second, plain = await asyncio.gather(
            store.run([(CLOSE, ("u1",)), (INSERT, ("u2", "s2"))]),
            store.run([(CLOSE, ("u1",))]),
            store.write([(INSERT, ("u3", "s3"))]))
        assert store.commits == 2  # the first write, then all three together
        closed, inserted = first
        assert [(r[0], r["acct_session_id"]) for r in closed] == [("u1", "s1")]
        assert inserted == []
        assert second == [[]] and plain is None  # closed already: nothing for the second
    finally:
        await store.close()


async def test_a_failing_run_fails_alone_and_returns_nothing_half_done(
        tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    await store.open()
    try:
        await store.write([(INSERT, ("u1", "s1"))])
        results = await asyncio.gather(
            store.run([(CLOSE, ("u1",)), (INSERT, ("u1", "dup"))]),  # UNIQUE fails
            store.run([(CLOSE, ("u1",))]),
            return_exceptions=True)
        assert isinstance(results[0], StoreError)
        assert [[tuple(r) for r in rows] for rows in results[1]] == [[("u1", "s1")]]
    finally:
        await store.close()


async def test_quick_reads_see_every_commit_and_step_aside_when_they_cannot(
        tmp_path: Path) -> None:
    """The login's read on the loop's thread sees what any writer committed; closed (or
    for a database in memory) it answers None and the reader threads take over."""
    store = Store(str(tmp_path / "db"))
    await store.open()
    quick = QuickReads(store)
    try:
        sql = "SELECT acct_session_id FROM sessions WHERE unique_id = ?"
        assert quick.fetchall(sql, ("u1",)) == []
        await store.write([(INSERT, ("u1", "s1"))])
        rows = quick.fetchall(sql, ("u1",))
        assert rows is not None and [r["acct_session_id"] for r in rows] == ["s1"]
        quick.close()
        assert quick.fetchall(sql, ("u1",)) is None
        assert QuickReads(Store(":memory:")).fetchall("SELECT 1", ()) is None
    finally:
        quick.close()
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
