"""Issue 12 item 1: every SQL statement lives under `radiusd/store/`. No module outside
it (policy, CLI, exports, retention, key checks, HTTP, SMS, wire) holds a string of
SQL; docstrings may name a statement (`BEGIN IMMEDIATE`), code may not run one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "radiusd"
SQL = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TABLE|INDEX|TRIGGER"
    r"|VIEW|UNIQUE INDEX)|DROP (TABLE|INDEX)|PRAGMA|BEGIN( IMMEDIATE| EXCLUSIVE)?$"
    r"|BEGIN (IMMEDIATE|EXCLUSIVE|DEFERRED)|COMMIT$|ROLLBACK$|WHERE \w+(\.\w+)? ?(=|<|>|IN|IS)"
    r"|ORDER BY \w+|json_extract\(|sqlite_master)", re.S)
MODULES = sorted(p for p in ROOT.rglob("*.py") if "store" not in p.relative_to(ROOT).parts)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (module, class, function)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                out.add(id(body[0].value))
    return out


def sql_strings(source: str) -> list[str]:
    """String constants (f-string parts included) that read as SQL, docstrings aside."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and SQL.search(n.value.strip())]


def test_the_check_sees_sql_in_code_and_not_in_docstrings() -> None:
    code = '''
"""Writes run in BEGIN IMMEDIATE, e.g. SELECT id FROM journal WHERE id = ?."""
def f(conn, t):
    """DELETE FROM journal in steps."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"DELETE FROM {t} WHERE id = ?", (1,))
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.execute("SELECT 1 FROM passwords WHERE login = ? LIMIT 1")
    conn.execute("COMMIT")
    return "say what to type instead: radiusd journal list"
'''
    assert sorted(sql_strings(code)) == sorted([
        "BEGIN IMMEDIATE", "DELETE FROM ", " WHERE id = ?", "PRAGMA wal_checkpoint(PASSIVE)",
        "SELECT 1 FROM passwords WHERE login = ? LIMIT 1", "COMMIT"])


@pytest.mark.parametrize("module", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_no_module_outside_the_store_holds_sql(module: Path) -> None:
    assert sql_strings(module.read_text()) == []
