"""Reads made together (`store.backend.PointReads`, PostgreSQL's login reads): many
askers, few statements, each asker its own rows, never a read older than its ask."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from radiusd.store import passwords
from radiusd.store.backend import PointReads


class FakeStore:
    """Rows (key, value) in memory; each statement can be held open by the test."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.statements: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> list[tuple[str, str]]:
        keys = list(params[0])
        self.statements.append(keys)
        snapshot = [r for r in self.rows if r[0] in keys]  # read when the statement runs
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return snapshot


async def test_many_askers_share_few_statements_and_get_their_own_rows() -> None:
    store = FakeStore()
    store.rows = [(f"k{i}", f"v{i}") for i in range(10)] + [("k3", "second")]
    reads = PointReads(store, "SELECT", key_index=0)  # type: ignore[arg-type]
    got = await asyncio.gather(*(reads.get(f"k{i % 12}") for i in range(120)))
    for i, rows in enumerate(got):
        key = f"k{i % 12}"
        assert rows == [r for r in store.rows if r[0] == key]  # k10, k11: none
    assert len(store.statements) <= 2  # the first alone, the rest together
    assert sum(len(keys) for keys in store.statements) <= 13


async def test_a_key_asked_while_a_batch_is_out_is_read_afterwards() -> None:
    """What was committed before an ask is seen by it: no answer from an older read."""
    store = FakeStore()
    store.rows = [("phone", "live")]
    store.hold = asyncio.Event()
    reads = PointReads(store, "SELECT", key_index=0)  # type: ignore[arg-type]
    first = asyncio.ensure_future(reads.get("phone"))
    await asyncio.sleep(0)
    while not store.statements:
        await asyncio.sleep(0)
    store.rows = [("phone", "expired by another node")]  # committed, then asked
    second = asyncio.ensure_future(reads.get("phone"))
    store.hold.set()
    assert await first == [("phone", "live")]
    assert await second == [("phone", "expired by another node")]
    assert store.statements == [["phone"], ["phone"]]


async def test_a_failing_statement_fails_every_asker_of_that_batch_only() -> None:
    store = FakeStore()
    store.rows = [("a", "1")]
    store.fail = OSError("connection lost")
    reads = PointReads(store, "SELECT", key_index=0)  # type: ignore[arg-type]
    results = await asyncio.gather(reads.get("a"), reads.get("b"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    store.fail = None
    assert await reads.get("a") == [("a", "1")]


@pytest.mark.usefixtures("pg_url")
async def test_postgresql_login_reads_together_equal_reads_one_by_one(pg_url: str) -> None:
    from radiusd.store.postgres import PgStore

    store = PgStore(pg_url, pool_size=3)
    await store.open()
    try:
        await store.write([passwords.insert(
            id=i, login=f"+7701000000{i % 4}", kind="phone",
            state="issued" if i % 3 else "expired", secret=b"x", language="ru",
            issued_at=float(i), unclaimed_until=300.0, request_device=None,
            request_nas=None, journal_id=None) for i in range(1, 13)])
        together = passwords.batched(store)
        assert together is not None
        logins = [f"+7701000000{i}" for i in range(5)]
        batched = await asyncio.gather(*(passwords.live_of(store, x, None, together)
                                         for x in logins * 3))
        alone = [await passwords.live_of(store, x) for x in logins * 3]
        assert [sorted(r.id for r in rows) for rows in batched] == \
               [sorted(r.id for r in rows) for rows in alone]
        assert any(batched) and not batched[4]  # +77010000004 has none
    finally:
        await store.close()


@pytest.mark.usefixtures("pg_url")
async def test_postgresql_accounting_reads_together_equal_reads_one_by_one(
        pg_url: str) -> None:
    """The Starts' lost-Stop reads (`sessions.batched`) and the Stops' reads by Class
    (`passwords.batched_by_class`): the same rows as one statement each."""
    from radiusd.store import sessions
    from radiusd.store.postgres import PgStore

    store = PgStore(pg_url, pool_size=3)
    await store.open()
    try:
        ops = []
        for i in range(1, 9):
            ops.append(passwords.insert(
                id=i, login=f"+7701000000{i}", kind="phone", state="issued", secret=b"x",
                language="ru", issued_at=float(i), unclaimed_until=300.0,
                request_device=None, request_nas=None, journal_id=None))
            ops.append(passwords.claim(id=i, device="d", nas="nas", nas_address="10.0.0.1",
                                       class_token=f"rd1.c{i}", max_attempts=5, now=1.0,
                                       born_after=0.0))
            ops.append(sessions.record(
                unique_id=f"u{i}", login=f"+7701000000{i}", device="d", nas="nas",
                nas_address="10.0.0.1", acct_session_id=f"s{i}", framed_ip=None,
                started_at=1.0, updated_at=1.0, stopped_at=2.0 if i % 3 == 0 else None,
                session_time=0, input_octets=0, output_octets=0, input_packets=0,
                output_packets=0, terminate_cause=None, class_token=f"rd1.c{i}"))
        await store.write(ops)
        await store.write([passwords.expire_by_class("rd1.c2", 3.0, "stop")])
        open_reads, class_reads = sessions.batched(store), passwords.batched_by_class(store)
        assert open_reads is not None and class_reads is not None
        ids = [f"u{i}" for i in range(1, 11)] * 2
        together = await asyncio.gather(*(sessions.open_session(store, u, open_reads)
                                          for u in ids))
        alone = [await sessions.open_session(store, u) for u in ids]
        assert together == alone
        assert sum(s is not None for s in alone) == 2 * 6  # u3, u6 stopped; u9, u10 none
        tokens = [f"rd1.c{i}" for i in range(1, 11)] * 2
        together_pw = await asyncio.gather(*(passwords.by_class(store, t, class_reads)
                                             for t in tokens))
        alone_pw = [await passwords.by_class(store, t) for t in tokens]
        assert together_pw == alone_pw
        assert sum(p is not None for p in alone_pw) == 2 * 7  # c2 expired; c9, c10 none
    finally:
        await store.close()


@pytest.mark.usefixtures("pg_url")
async def test_postgresql_blocked_checks_together_equal_checks_one_by_one(pg_url: str) -> None:
    from radiusd.store import blocked
    from radiusd.store.postgres import PgStore

    store = PgStore(pg_url, pool_size=3)
    await store.open()
    try:
        await store.write([blocked.block("+77010000001", 1.0, "abuse", "admin"),
                           blocked.block("+77010000003", 1.0, "", "admin")])
        together = blocked.batched(store)
        assert together is not None
        logins = [f"+7701000000{i}" for i in range(5)] * 2
        batched = await asyncio.gather(*(blocked.reason_of(store, x, None, together)
                                         for x in logins))
        alone = [await blocked.reason_of(store, x) for x in logins]
        assert batched == alone == [None, "abuse", None, "", None] * 2
    finally:
        await store.close()


@pytest.mark.parametrize(("pool_size", "expected"), [(10, "force_generic_plan"), (3, "auto")])
def test_point_reads_run_with_generic_plans_where_connections_can_be_spared(
        pg_url: str, pool_size: int, expected: str) -> None:
    """PostgreSQL: the batched point reads' statements (`backend.POINTS`) run on
    connections of their own that use generic plans (no planning per batch); other
    reads keep PostgreSQL's default; with too few readers to spare, all share them."""
    from radiusd.store.backend import POINTS, point_reads
    from radiusd.store.postgres import PgStore

    sql = "SELECT current_setting('plan_cache_mode') WHERE cardinality(?::text[]) > 0"

    async def modes() -> tuple[str, str]:
        store = PgStore(pg_url, pool_size=pool_size)
        await store.open()
        try:
            reads = point_reads(store, sql, key_index=0)
            assert reads is not None and sql in POINTS
            point = await store.fetchall(sql, (["x"],))
            other = await store.fetchall("SELECT current_setting('plan_cache_mode')")
            return point[0][0], other[0][0]
        finally:
            await store.close()
            POINTS.discard(sql)

    assert asyncio.run(modes()) == (expected, "auto")
