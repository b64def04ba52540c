"""Issue 18 item 1: no statement's cost follows history. Every statement the store
lists as hot (run per request, per outbox round, per reaper tick, per receipt or per
scrape: each `radiusd.store` module's `HOT`) is answered from an index, never a scan
of a history table, on a database filled with a year of history by bench/growth.py
and analysed as an operator's would be after a year. Plans, not timings."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import pkgutil
import sqlite3
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import radiusd.store
from radiusd.store.postgres import PgStore, translate
from tests.test_growth_bench import growth

HISTORY = ("sessions", "passwords", "sms_outbox", "sms_parts", "journal", "journal_events")
NOW = 1_796_500_000.0


def hot_statements(attr: str = "HOT") -> list[tuple[str, str, tuple[object, ...]]]:
    out = []
    for info in pkgutil.iter_modules(radiusd.store.__path__):
        module = importlib.import_module(f"radiusd.store.{info.name}")
        out += list(getattr(module, attr, ()))
    return out


def pg_hot_statements() -> list[tuple[str, str, tuple[object, ...]]]:
    """Both stores' statements, and those only PostgreSQL runs (`PG_HOT`)."""
    return hot_statements() + hot_statements("PG_HOT")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path = tmp_path_factory.mktemp("plans") / "year.db"
    growth().fill(path, 20_000, os.urandom(32), now=NOW, pool=64)
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")  # what the planner knows after a year (PRAGMA optimize)
    return conn


def test_every_store_module_that_keeps_history_lists_its_hot_statements() -> None:
    names = {name.split(".")[0] for name, _, _ in hot_statements()}
    assert {"passwords", "sessions", "outbox", "counts"} <= names, names


@pytest.mark.parametrize(("name", "sql", "params"), hot_statements(),
                         ids=[name for name, _, _ in hot_statements()])
def test_hot_statement_reads_along_an_index(filled: sqlite3.Connection, name: str, sql: str,
                                            params: tuple[object, ...]) -> None:
    plan = [row[3] for row in filled.execute("EXPLAIN QUERY PLAN " + sql, params)]
    # "SEARCH t" with no USING names no index: SQLite walks the table (a MIN() over a
    # filtered column, say). It is a scan, whatever the word.
    plan = [f"SCAN {step[7:]}" if step.startswith("SEARCH ") and " USING " not in step
            else step for step in plan]
    walks = [step for step in plan
             if step.startswith("SCAN ") and step.split()[1] in HISTORY
             and "COVERING INDEX" not in step and " USING INDEX " not in step]
    assert walks == [], f"{name}: {plan}"
    # A scan along a (partial) index of what is live is flat; a full one is not.
    full = [step for step in plan if step.startswith("SCAN ") and step.split()[1] in HISTORY
            and not _partial_index(filled, step)]
    assert full == [], f"{name} walks a history table along a full index: {plan}"


def _partial_index(conn: sqlite3.Connection, step: str) -> bool:
    """`SCAN t USING [COVERING] INDEX i` is bounded only when `i` is partial (WHERE)."""
    words = step.split()
    if "INDEX" not in words:
        return False
    index = words[words.index("INDEX") + 1]
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                       (index,)).fetchone()
    return bool(row and row[0] and " WHERE " in row[0].upper())


# -- PostgreSQL (issue 18 item 1, once PostgreSQL landed: issue 12) -------------------
# A filled database, analysed, and the planner told to avoid a sequential scan
# (`enable_seqscan = off`): with a small table it would pick one only because the table
# is small; what it still cannot avoid is a walk no index can answer.
_PG_FILL = [
    """INSERT INTO sessions (unique_id, login, device, nas, nas_address, acct_session_id,
        started_at, updated_at, stopped_at, terminate_cause)
       SELECT 'u' || i, '+7701' || i, 'aabbccddeeff', 'nas', '10.0.0.1', 's' || i,
        i, i + 60, CASE WHEN i % 100 = 0 THEN NULL ELSE i + 120 END, 'User-Request'
       FROM generate_series(1, 20000) AS i""",
    """INSERT INTO passwords (id, login, kind, state, secret, language, issued_at,
        unclaimed_until, class_token, expired_at, expire_reason)
       SELECT i, '+7701' || i, 'phone',
        CASE WHEN i % 100 = 0 THEN 'active' ELSE 'expired' END, '\\x00', 'en', i, i + 300,
        'rd1.' || i, CASE WHEN i % 100 = 0 THEN NULL ELSE i + 600 END, 'stop'
       FROM generate_series(1, 20000) AS i""",
    """INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state,
        next_attempt_at, provider_ref)
       SELECT i, i, '+7701' || i, '\\x00', i, CASE WHEN i % 100 = 0 THEN 'queued' ELSE 'sent'
        END, i, 'M' || i || CASE WHEN i % 10 = 0 THEN ',N' || i ELSE '' END
       FROM generate_series(1, 20000) AS i""",
    """INSERT INTO sms_parts (sms_id, ref) SELECT i, 'N' || i
       FROM generate_series(10, 20000, 10) AS i""",
    """INSERT INTO journal (id, surname, name, computer, opened_at, started_at)
       SELECT i, 'S', 'N', 'PC-' || i, i, i FROM generate_series(1, 5000) AS i""",
    """INSERT INTO journal_events (journal_id, at, actor, event, detail)
       SELECT i, i, 'admin', 'close', '{"field": "ended_at", "value": ' || (i + 60) || '}'
       FROM generate_series(1, 5000) AS i""",
    "ANALYZE",
]


@pytest.fixture(scope="module")
def pg_filled(pg_server: Any) -> str:
    url: str = pg_server.url(pg_server.new_database())

    async def fill() -> None:
        store = PgStore(url, pool_size=2)
        await store.open()  # migrated
        await store.close()
        conn = await asyncpg.connect(url)
        try:
            for sql in _PG_FILL:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(fill())
    return url


@pytest.mark.parametrize(("name", "sql", "params"), pg_hot_statements(),
                         ids=[name for name, _, _ in pg_hot_statements()])
def test_hot_statement_reads_along_an_index_on_postgresql(
        pg_filled: str, name: str, sql: str, params: tuple[object, ...]) -> None:
    plan, partial = asyncio.run(_pg_plan(pg_filled, sql, params))
    walks = []
    for node in _nodes(plan):
        relation = node.get("Relation Name")
        kind = node["Node Type"]
        if kind == "Seq Scan" and relation in HISTORY:
            walks.append(f"{kind} on {relation}")
        elif kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") \
                and "Index Cond" not in node and node["Index Name"] not in partial \
                and (relation is None or relation in HISTORY):
            walks.append(f"{kind} using {node['Index Name']} with no condition")
    assert walks == [], f"{name}: {json.dumps(plan)}"


async def _pg_plan(url: str, sql: str, params: tuple[object, ...]
                   ) -> tuple[dict[str, Any], set[str]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET enable_seqscan = off")
        raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + translate(sql), *params)
        partial = {r[0] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '% WHERE %'")}
    finally:
        await conn.close()
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return plan, partial


def _probes(scan: dict[str, Any]) -> list[dict[str, Any]]:
    """The index lookups of a table scan: a bitmap heap scan's children, else itself."""
    probes: list[dict[str, Any]] = scan.get("Plans", []) \
        if scan["Node Type"] == "Bitmap Heap Scan" else [scan]
    return probes


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


# -- The batched point reads (`backend.per_key`, issue 12) ---------------------------
# Rows that churn: sessions opened and then closed, passwords live and then expired, on
# a database that has never been analysed or vacuumed (autovacuum off for these tables,
# as in a fresh database's first minute), so that the partial indexes of open sessions
# and live passwords still hold an entry for every row; 1,000 users on line; and one
# open session / live password among the keys asked for. The plan is the generic one
# (`PREPARE`, `plan_cache_mode = force_generic_plan`, as on the point reads'
# connections), made while the tables were empty, as on a new node, and kept: the
# form `key = ANY(?) AND condition` gets a BitmapAnd with `sessions_login_open`
# there, and one `key = k AND condition` per key walks `sessions_login_open` for each
# key: all 20,000 closed sessions.
_NO_AUTOVACUUM = ["ALTER TABLE sessions SET (autovacuum_enabled = off)",
                  "ALTER TABLE passwords SET (autovacuum_enabled = off)"]
_CHURN = [
    """INSERT INTO sessions (unique_id, login, device, nas, nas_address, acct_session_id,
        updated_at) SELECT 'u' || i, 'bench', 'd', 'nas', '10.0.0.1', 's' || i, i
       FROM generate_series(1, 20000) AS i""",
    """INSERT INTO passwords (login, state, secret, language, issued_at, unclaimed_until,
        class_token) SELECT '+7701' || i, 'active', '\\x00', 'en', i, i, 'rd1.' || i
       FROM generate_series(1, 5000) AS i""",
    "UPDATE sessions SET stopped_at = updated_at + 60",
    "UPDATE passwords SET state = 'expired', expired_at = issued_at + 60",
    """INSERT INTO passwords (login, state, secret, language, issued_at, unclaimed_until,
        class_token) SELECT '+7702' || i, 'active', '\\x00', 'en', i, i, 'rd2.' || i
       FROM generate_series(1, 1000) AS i""",
    """INSERT INTO sessions (unique_id, login, device, nas, nas_address, acct_session_id,
        updated_at) VALUES ('open1', 'bench', 'd', 'nas', '10.0.0.1', 'open1', 1)""",
]
_PER_KEY = [("sessions.open_any", "sessions", "unique_id", ["u1", "u2", "open1"]),
            ("passwords.live_of_any", "passwords", "login", ["+77011", "+77021"]),
            ("passwords.by_class_any", "passwords", "class_token", ["rd1.1", "rd2.1"])]


@pytest.mark.parametrize(("name", "table", "key", "keys"), _PER_KEY,
                         ids=[name for name, _, _, _ in _PER_KEY])
def test_batched_point_reads_probe_the_key_whatever_the_statistics(
        pg_server: Any, name: str, table: str, key: str, keys: list[str]) -> None:
    sql = dict((n, s) for n, s, _ in pg_hot_statements())[name]
    url: str = pg_server.url(pg_server.new_database())
    array = "'{" + ",".join(keys) + "}'"

    async def plan() -> tuple[dict[str, Any], int, bool]:
        conn = await _migrated_without_autovacuum(url)
        try:
            await conn.execute(f"PREPARE batched(text[]) AS {translate(sql)}")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"EXECUTE batched({array})")  # planned on empty tables
            for step in _CHURN:
                await conn.execute(step)
            found = len(await conn.fetch(f"EXECUTE batched({array})"))
            raw = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE batched({array})")
            never = await conn.fetchval(
                "SELECT bool_and(last_analyze IS NULL AND last_autoanalyze IS NULL) "
                "FROM pg_stat_user_tables WHERE relname IN ('sessions', 'passwords')")
            return json.loads(raw)[0]["Plan"], found, never
        finally:
            await conn.close()

    tree, found, never_analysed = asyncio.run(plan())
    assert never_analysed
    scans = [n for n in _nodes(tree) if n.get("Relation Name") == table]
    assert scans, json.dumps(tree)
    for scan in scans:  # every read of the table follows the key's index, nothing else
        probes = _probes(scan)
        assert [p["Node Type"] for p in probes] in (
            ["Index Scan"], ["Index Only Scan"], ["Bitmap Index Scan"]), json.dumps(tree)
        probe = probes[0]
        assert f"{key} = " in probe.get("Index Cond", ""), json.dumps(tree)
        # One index entry per key (each names one row), none of the 20,000 others.
        assert probe["Actual Rows"] * probe["Actual Loops"] <= len(keys), json.dumps(tree)
        assert scan.get("Rows Removed by Filter", 0) * scan["Actual Loops"] <= len(keys)
    assert found == 1  # the one open session / live password among the keys


# -- The writer's per-request statements (issue 12) ----------------------------------
# The same hazard for what every Start writes: a generic plan made while the tables
# were empty (a new node), or after an ANALYZE that saw every session open and every
# password unseen, kept as the tables churn. Each must reach its rows by its key (or
# the primary key of rows found by it), never walk an index of everything.
_WRITER_FILL = [
    """INSERT INTO sessions (unique_id, login, device, nas, nas_address, acct_session_id,
        updated_at) SELECT 'u' || i, 'bench', 'd', 'nas', '10.0.0.1', 's' || i, i
       FROM generate_series(1, 20000) AS i""",
    """INSERT INTO passwords (login, state, secret, language, issued_at, unclaimed_until,
        class_token, claimed_at, device) SELECT '+7702' || i, 'active', '\\\\x00', 'en', i,
        i, 'rd2.' || i, i, 'dev' || i FROM generate_series(1, 3000) AS i""",
]
# The password the seen marks look for, there before the first call: on PostgreSQL a
# mark is a function (migration 14) that plans its UPDATE only once it has a row to mark.
_SEEN_ONE = """INSERT INTO passwords (login, state, secret, language, issued_at,
    unclaimed_until, class_token, claimed_at, device)
    VALUES ('+7709', 'active', '\\x00', 'en', 1, 1, 'rd9', 1, 'devx')"""
_WRITER = [("sessions.retire", "sessions", "unique_id", ("u1",), "text", None),
           ("passwords.seen_by_login", "passwords", "login", (1.0, "+7709", "devx"),
            "float8, text, text", _SEEN_ONE),
           ("passwords.seen_by_class", "passwords", "class_token", (1.0, "rd9"),
            "float8, text", _SEEN_ONE)]


@pytest.mark.parametrize("planned", ["on empty tables", "after an analyse of open rows"])
@pytest.mark.parametrize(("name", "table", "key", "params", "types", "seed"), _WRITER,
                         ids=[name for name, *_ in _WRITER])
def test_per_request_writes_reach_their_rows_by_key_whatever_the_plan_saw(
        pg_server: Any, planned: str, name: str, table: str, key: str,
        params: tuple[object, ...], types: str, seed: str | None) -> None:
    sql = dict((n, s) for n, s, _ in pg_hot_statements())[name]
    database = pg_server.new_database()
    args = ", ".join(repr(p) for p in params)

    async def plans() -> list[dict[str, Any]]:
        conn = await _migrated_without_autovacuum(pg_server.url(database))
        await conn.close()
        # As the superuser, who may LOAD auto_explain: a statement's PostgreSQL form
        # may be a function (`passwords.seen_by_login`), whose own statements EXPLAIN
        # does not show; auto_explain reports each of them, as run, to the client.
        conn = await asyncpg.connect(pg_server.server.url(database))
        try:
            if seed is not None:
                await conn.execute(seed)
            if planned != "on empty tables":
                for step in _WRITER_FILL:
                    await conn.execute(step)
                await conn.execute("ANALYZE")
            await conn.execute(f"PREPARE write({types}) AS {translate(sql)}")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await _rolled_back(conn, f"EXECUTE write({args})")  # planned now
            if planned == "on empty tables":
                for step in _WRITER_FILL:
                    await conn.execute(step)
            await conn.execute("UPDATE sessions SET stopped_at = updated_at + 60")
            return await _explained(conn, f"EXECUTE write({args})")
        finally:
            await conn.close()

    trees = asyncio.run(plans())
    nodes = [n for tree in trees for n in _nodes(tree) if n.get("Relation Name") == table]
    assert any(n["Node Type"] == "ModifyTable" for n in nodes), json.dumps(trees)  # it wrote
    scans = [n for n in nodes if n["Node Type"] != "ModifyTable"]
    assert scans, json.dumps(trees)
    for scan in scans:  # an index probe by the key (or by the id of rows found by it)
        probes = _probes(scan)
        assert [p["Node Type"] for p in probes] in (["Index Scan"], ["Bitmap Index Scan"]), \
            json.dumps(trees)
        cond = probes[0].get("Index Cond", "")
        assert f"{key} = " in cond or "id = " in cond, json.dumps(trees)
        assert scan.get("Rows Removed by Filter", 0) <= 1, json.dumps(trees)
        assert scan["Actual Rows"] >= 1, json.dumps(trees)  # it ran and found the row


async def _explained(conn: asyncpg.Connection, sql: str) -> list[dict[str, Any]]:
    """The plans, with what they found, of a statement that writes and of every
    statement it runs inside (a function's), as auto_explain reports them; what it
    wrote is undone."""
    got: list[str] = []
    conn.add_log_listener(lambda _conn, message: got.append(message.message))
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_analyze = on", "SET auto_explain.log_format = json",
                    "SET auto_explain.log_nested_statements = on",
                    "SET auto_explain.log_level = notice"):
        await conn.execute(setting)
    await _rolled_back(conn, sql)
    await conn.execute("SET auto_explain.log_min_duration = -1")
    return [json.loads(m.split("plan:", 1)[1])["Plan"] for m in got if "plan:" in m]


async def _rolled_back(conn: asyncpg.Connection, sql: str) -> Any:
    """Run a statement that writes, and undo what it wrote."""
    tr = conn.transaction()
    await tr.start()
    try:
        return await conn.fetchval(sql)
    finally:
        await tr.rollback()


async def _migrated_without_autovacuum(url: str) -> asyncpg.Connection:
    """A connection to a database radiusd has migrated, whose sessions and passwords
    autovacuum leaves alone (never analysed, never vacuumed)."""
    store = PgStore(url, pool_size=2)
    await store.open()
    await store.close()
    conn: asyncpg.Connection = await asyncpg.connect(url)
    for step in _NO_AUTOVACUUM:
        await conn.execute(step)
    return conn
