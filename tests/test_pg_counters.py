"""PostgreSQL's `/metrics` password counters (migration 14, docs/store.md): a statement
over many passwords adds to each counter row once, not once per password (whose cost
grew as N squared), and the per-request seen marks change a row only when there is a
password to mark, so the statement triggers do not fire for them."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from radiusd.store import passwords
from radiusd.store.pg_migrations import migrate, scripts
from radiusd.store.postgres import translate

_FILL = """
INSERT INTO passwords (login, kind, state, secret, language, issued_at, unclaimed_until,
    claimed_at, device, nas, nas_address, class_token)
SELECT '+7701' || i, 'phone', 'active', '\\x00', 'en', 1, 2, 1.5, 'dev' || i, 'nas1',
    '10.0.0.1', 'rd1.' || i FROM generate_series(1, $1) AS i
"""
_CHANGED = ("SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables "
            "WHERE relname = $1")
_FIRED = ("SELECT COALESCE(SUM(calls), 0) FROM pg_stat_xact_user_functions "
          "WHERE funcname = 'counters_passwords_updated'")
_COUNTERS = ("SELECT name, label, SUM(value)::bigint FROM counters "
             "WHERE name LIKE 'passwords%' GROUP BY 1, 2 ORDER BY 1, 2")


async def _migrated(url: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(url)
    await migrate(conn)
    return conn


async def _changes(conn: asyncpg.Connection, op: Any) -> tuple[int, int, int]:
    """Rows `op` changed in counters and in passwords, and how many times the UPDATE
    counter trigger ran (counted when `track_functions` is on), in a transaction of
    its own."""
    sql, params = op

    async def figures() -> list[int]:
        return [int(await conn.fetchval(_CHANGED, "counters") or 0),
                int(await conn.fetchval(_CHANGED, "passwords") or 0),
                int(await conn.fetchval(_FIRED))]

    async with conn.transaction():
        # The backend's own figures, which also hold earlier transactions' until it
        # reports them (when idle, at most once a second): read in the same
        # transaction, the difference is this op's.
        before = await figures()
        await conn.execute(translate(sql), *params)
        after = await figures()
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


def test_accounting_on_over_many_passwords_moves_each_counter_row_once(pg_url: str) -> None:
    async def run() -> tuple[tuple[int, int], list[dict[Any, int]], tuple[int, int]]:
        conn = await _migrated(pg_url)
        try:
            await conn.execute(_FILL, 300)  # one INSERT of 300 passwords
            issued = await conn.fetch(_COUNTERS)
            moved = (await _changes(conn, passwords.expire_at_nas(
                "nas1", "10.0.0.1", 5.0, "nas-reboot")))[:2]
            expired = await conn.fetch(_COUNTERS)
            gone = (await _changes(
                conn, ("DELETE FROM passwords WHERE state = 'expired'", ())))[:2]
            purged = await conn.fetch(_COUNTERS)
            return moved, [dict(((r[0], r[1]), r[2]) for r in rows)
                           for rows in (issued, expired, purged)], gone

        finally:
            await conn.close()

    moved, (issued, expired, purged), gone = asyncio.run(run())
    # Two counter rows (expired by reason, expired rows kept), each written once; a row
    # trigger per password wrote them 600 times. The delete writes one.
    assert moved == (2, 300)
    assert gone == (1, 300)
    events = {("passwords_issued", ""): 300, ("passwords_used", ""): 300}
    assert issued == {**events, ("passwords", "expired"): 0}
    assert expired == {**events, ("passwords", "expired"): 300,
                       ("passwords_expired", "nas-reboot"): 300}
    # A purge lowers the rows kept, never the events.
    assert purged == {**events, ("passwords", "expired"): 0,
                      ("passwords_expired", "nas-reboot"): 300}


def test_seen_marks_change_a_password_only_when_there_is_one_to_mark(pg_server: Any) -> None:
    database = pg_server.new_database()

    async def run() -> list[tuple[int, int, int]]:
        await (await _migrated(pg_server.url(database))).close()
        # As the superuser, who may count calls of plpgsql functions (`track_functions`).
        conn: asyncpg.Connection = await asyncpg.connect(pg_server.server.url(database))
        try:
            await conn.execute("SET track_functions = 'pl'")
            await conn.execute(_FILL, 3)
            marks = [passwords.seen_by_login("+77011", "dev1", 7.0),
                     passwords.seen_by_login("+77011", "dev1", 8.0),
                     passwords.seen_by_login("+77019", "dev9", 7.0),
                     passwords.seen_by_class("rd1.2", 7.0),
                     passwords.seen_by_class("rd1.2", 8.0),
                     passwords.seen_by_class("rd1.9", 7.0)]
            out = [await _changes(conn, op) for op in marks]
            out.append((int(await conn.fetchval(
                "SELECT COUNT(*) FROM passwords WHERE acct_seen_at = 7.0")), 0, 0))
            return out
        finally:
            await conn.close()

    # (counter rows, password rows, counter-trigger runs) of each mark: the first mark
    # of a password sets it (the UPDATE trigger runs, counts nothing); again, or with
    # no such password, nothing is updated and no trigger runs.
    assert asyncio.run(run()) == [(0, 1, 1), (0, 0, 0), (0, 0, 0),
                                  (0, 1, 1), (0, 0, 0), (0, 0, 0), (2, 0, 0)]


def test_a_database_counted_by_row_triggers_keeps_its_figures_across_migration_14(
        pg_url: str) -> None:
    async def run() -> tuple[int, dict[Any, int]]:
        conn: asyncpg.Connection = await asyncpg.connect(pg_url)
        try:
            assert await migrate(conn, upto=13) == 13
            await conn.execute(_FILL, 10)  # counted by schema 13's row triggers
            sql, params = passwords.expire_by_class("rd1.1", 3.0, "stop")
            await conn.execute(translate(sql), *params)
            migrated = await migrate(conn)
            sql, params = passwords.expire_at_nas("nas1", "10.0.0.1", 5.0, "nas-reboot")
            await conn.execute(translate(sql), *params)
            return migrated, {(r[0], r[1]): r[2] for r in await conn.fetch(_COUNTERS)}
        finally:
            await conn.close()

    migrated, counted = asyncio.run(run())
    assert migrated == len(scripts()) == 14
    assert counted == {("passwords_issued", ""): 10, ("passwords_used", ""): 10,
                       ("passwords", "expired"): 10, ("passwords_expired", "stop"): 1,
                       ("passwords_expired", "nas-reboot"): 9}
