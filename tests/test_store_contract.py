"""The store contract (`radiusd.store.backend`), the same assertions on both stores:
group commit, `run`'s rows, reads by position and name, a bad op failing alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from radiusd.store.backend import Backend
from radiusd.store.postgres import PgStore, translate
from radiusd.store.sqlite import Store

NEW_SESSION = ("INSERT INTO sessions (unique_id, nas, acct_session_id, updated_at)"
               " VALUES (?, 'nas', ?, ?)")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    db: Any
    if request.param == "sqlite":
        db = Store(str(tmp_path / "radiusd.db"))
    else:
        db = PgStore(request.getfixturevalue("pg_url"), pool_size=4)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def test_placeholders_become_numbered_outside_quotes_and_comments() -> None:
    sql = "SELECT '?', \"a?\" FROM t WHERE a = ? -- why?\n AND b = ?"
    assert translate(sql) == "SELECT '?', \"a?\" FROM t WHERE a = $1 -- why?\n AND b = $2"


async def test_writes_are_read_back_by_position_and_by_name(store: Backend) -> None:
    await store.write([(NEW_SESSION, ("u1", "s1", 5.0))])
    row = await store.fetchone("SELECT unique_id, updated_at FROM sessions WHERE unique_id = ?",
                               ("u1",))
    assert row is not None
    assert (row[0], row["updated_at"]) == ("u1", 5.0)
    assert await store.fetchone("SELECT unique_id FROM sessions WHERE unique_id = ?",
                                ("none",)) is None


async def test_run_returns_each_ops_rows_in_order(store: Backend) -> None:
    rows = await store.run([
        (NEW_SESSION + " RETURNING unique_id", ("u1", "s1", 1.0)),
        ("UPDATE sessions SET updated_at = ? WHERE unique_id = ?", (2.0, "u1")),
        ("UPDATE sessions SET updated_at = ? WHERE unique_id = ? RETURNING updated_at",
         (3.0, "nobody")),
    ])
    assert [[tuple(r) for r in op] for op in rows] == [[("u1",)], [], []]


async def test_concurrent_writers_share_commits_and_all_land(store: Backend) -> None:
    await asyncio.gather(*(store.write([(NEW_SESSION, (f"u{i}", f"s{i}", float(i)))])
                           for i in range(50)))
    row = await store.fetchone("SELECT COUNT(*) FROM sessions")
    assert row is not None and row[0] == 50
    assert getattr(store, "commits") < 50  # noqa: B009  (both stores count commits)


async def test_a_bad_op_fails_its_own_write_only(store: Backend) -> None:
    await store.write([(NEW_SESSION, ("taken", "s", 0.0))])
    results = await asyncio.gather(
        store.write([(NEW_SESSION, ("a", "s", 1.0))]),
        store.write([(NEW_SESSION, ("taken", "s", 1.0))]),  # UNIQUE unique_id
        store.run([(NEW_SESSION + " RETURNING unique_id", ("b", "s", 1.0))]),
        return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert [[r[0] for r in op] for op in results[2]] == [["b"]]  # type: ignore[union-attr]
    rows = await store.fetchall("SELECT unique_id FROM sessions ORDER BY unique_id")
    assert [r[0] for r in rows] == ["a", "b", "taken"]
