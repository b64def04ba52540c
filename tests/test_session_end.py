"""Issue 12 item 1 and issue 18 items 1 and 7 for passwords and sessions: the statements
live in `radiusd.store`, each reads along an index whatever the history, the password
model no longer reaches up into accounting or the journal, and what a session's end
ends (`radiusd.session_end`) still happens: the newest code survives a restart, a
voucher that dies of old age closes its journal entry."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pytest

from radiusd import journal
from radiusd.clock import ManualClock
from radiusd.otp import Issued
from radiusd.sealing import Sealer
from radiusd.store import passwords, sessions
from radiusd.store.sqlite import connect_sync
from radiusd.testing.server import loopback_config, nas_for, running_server
from tests.otp_support import PHONE, otp_server

ROOT = Path(__file__).resolve().parent.parent / "radiusd"
POLICY = ["otp.py", "auth.py", "accounting.py", "reaper.py", "session_end.py"]
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TABLE|INDEX))\b")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_password_model_imports_neither_accounting_nor_the_journal() -> None:
    imported = _imports(ROOT / "otp.py")
    assert not {"radiusd.accounting", "radiusd.journal", "radiusd.session_end"} & imported


@pytest.mark.parametrize("module", POLICY)
def test_password_and_session_policy_builds_no_sql(module: str) -> None:
    strings = [n.value for n in ast.walk(ast.parse((ROOT / module).read_text()))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert [s for s in strings if SQL.search(s)] == []


def test_session_and_password_statements_never_walk_history(tmp_path: Path) -> None:
    """Issue 18 item 1: per Stop, per reaper tick, per voucher name and at start-up,
    every statement finds its rows by key or along a partial index of what is live
    or open, on a database of closed sessions and expired passwords."""
    conn = connect_sync(str(tmp_path / "plans.db"))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO sessions (unique_id, login, nas, nas_address, acct_session_id,"
        " started_at, updated_at, stopped_at) VALUES (?, ?, 'nas', '10.0.0.1', ?, ?, ?, ?)",
        [(f"u{i}", f"+7701{i:07d}", f"s{i}", i, i + 60, i + 60) for i in range(2000)])
    conn.executemany(
        "INSERT INTO passwords (id, login, state, secret, language, issued_at,"
        " unclaimed_until, class_token) VALUES (?, ?, 'expired', x'00', 'en', ?, ?, ?)",
        [(i, f"+7701{i:07d}", i, i + 300, f"rd1.{i}") for i in range(2000)])
    conn.execute("COMMIT")
    plans = {}
    for name, sql, params in passwords.HOT + sessions.HOT:
        plans[name] = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    conn.close()
    walks = {n: p for n, p in plans.items() if "SCAN sessions" in p or "SCAN passwords" in p}
    assert walks == {}
    assert "sessions_stale" in plans["sessions.stale"]
    assert "passwords_class" in plans["passwords.expire_by_class"]


async def test_a_restart_remembers_the_newest_of_the_days_codes(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules §9 across a restart: of two codes sent to a number today, the later one
    is what the next code must differ from, and both count toward its limits."""
    otp = {"resend_after_seconds": 0, "per_number_hourly": 3}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        codes = []
        for _ in range(2):
            issued = await server.book.request(PHONE, device=None, nas="t", language="en",
                                               now=clock.now())
            assert isinstance(issued, Issued)
            codes.append(issued.password.code)
            clock.advance(120)
    offered = iter(list(codes[1]) + list(codes[0]))  # the newest code first, then the older
    monkeypatch.setattr("radiusd.otp.secrets.choice", lambda _seq: next(offered))
    async with otp_server(tmp_path, clock, otp=otp) as server:
        third = await server.book.request(PHONE, device=None, nas="t", language="en",
                                          now=clock.now())
        assert isinstance(third, Issued)
        assert third.password.code == codes[0] != codes[1]
        fourth = await server.book.request(PHONE, device=None, nas="t", language="en",
                                           now=clock.now())
        assert getattr(fourth, "reason", None) == "number_limit"


async def test_a_voucher_past_its_lifetime_closes_its_journal_entry(tmp_path: Path) -> None:
    """Rules §8 and §10: the reaper ends a used voucher at max lifetime, and the end of
    its password is the end of the entry."""
    config = loopback_config(tmp_path, journal={"vouchers": True},
                             otp={"max_lifetime_seconds": 3600})
    clock = ManualClock(time.time())
    settings = journal.VoucherSettings(
        Sealer.from_config(config.otp), config.otp.length, config.otp.language)
    async with running_server(config, clock) as server:
        conn = connect_sync(config.database.path)
        opened = journal.open_entry(conn, clock.now(), journal.Person(
            surname="Ахметова", name="Дана", patronymic="", computer="2"), "alice",
            vouchers=settings)
        v = opened.voucher
        assert v is not None
        nas = nas_for(server, timeout=1, retries=1)
        assert (await nas.send(nas.access_request(v.login, v.password))).code == 2
        clock.advance(3601)
        await server.reaper.run_once()
        assert journal.get_entry(conn, opened.entry.id).ended_at == pytest.approx(clock.now())
        assert (await nas.send(nas.access_request(v.login, v.password))).code == 3
        conn.close()
