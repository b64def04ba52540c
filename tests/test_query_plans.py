"""Issue 18 item 1: no statement's cost follows history. Every statement the store
lists as hot (run per request, per outbox round, per reaper tick, per receipt or per
scrape: each `radiusd.store` module's `HOT`) is answered from an index, never a scan
of a history table, on a database filled with a year of history by bench/growth.py
and analysed as an operator's would be after a year. Plans, not timings."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sqlite3

import pytest

import radiusd.store
from tests.test_growth_bench import growth

HISTORY = ("sessions", "passwords", "sms_outbox", "sms_parts", "journal", "journal_events")
NOW = 1_796_500_000.0


def hot_statements() -> list[tuple[str, str, tuple[object, ...]]]:
    out = []
    for info in pkgutil.iter_modules(radiusd.store.__path__):
        module = importlib.import_module(f"radiusd.store.{info.name}")
        out += list(getattr(module, "HOT", ()))
    return out


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
