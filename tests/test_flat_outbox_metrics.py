"""Issue 18 items 1 and 2 for the outbox and `/metrics`: an outbox round, a delivery
receipt and a scrape are answered from indexes over what is live and a small summary
kept by the database itself, never by reading history, and they still say exactly
what the history holds."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from radiusd import retention
from radiusd.clock import ManualClock
from radiusd.http import start_http, stop_http
from radiusd.http.metrics import HttpCounters, render
from radiusd.store import counts, migrations, outbox
from radiusd.store.counts import Snapshot
from radiusd.store.sqlite import Op, Store
from tests.otp_support import PHONE, acct, log_in, nas_of, otp_server

HISTORY = ("sessions", "passwords", "sms_outbox", "sms_parts", "journal", "journal_events")
NOW = 1_790_000_000.0


def _fill(conn: sqlite3.Connection, n: int, first: int = 1) -> None:
    """`n` phone passwords and their SMS as a year leaves them: expired for various
    reasons, sent (every tenth in three parts), a few failed or cancelled."""
    reasons = ("stop", "stop", "stop", "stale_session", "unclaimed", None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO passwords (id, login, state, secret, language, issued_at, unclaimed_until,"
        " claimed_at, class_token) VALUES (?, ?, 'issued', x'00', 'en', ?, ?, ?, ?)",
        [(i, f"+7701{i:07d}", NOW - 1e6 + i, NOW - 1e6 + i + 300,
          None if i % 6 == 4 else NOW - 1e6 + i + 5, f"rd1.{i}") for i in range(first, first + n)])
    conn.executemany(
        "UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ? WHERE id = ?",
        [(NOW - 1e6 + i + 60, reasons[i % 6], i) for i in range(first, first + n)])
    conn.executemany(
        "INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, attempts,"
        " next_attempt_at) VALUES (?, ?, ?, x'00', ?, 'queued', 0, ?)",
        [(i, i, f"+7701{i:07d}", NOW - 1e6 + i, NOW - 1e6 + i) for i in range(first, first + n)])
    for i in range(first, first + n):
        if i % 50 == 7:
            conn.execute("UPDATE sms_outbox SET state = 'failed' WHERE id = ?", (i,))
        elif i % 50 == 9:
            conn.execute("UPDATE sms_outbox SET state = 'cancelled' WHERE id = ?", (i,))
        else:
            ref = f"M{i}a,M{i}b,M{i}c" if i % 10 == 3 else f"M{i}"
            for sql, params in outbox.sent(i, NOW - 1e6 + i + 1, ref):
                conn.execute(sql, params)
    conn.execute("COMMIT")


def _truth(conn: sqlite3.Connection) -> Snapshot:
    """What /metrics showed before issue 18, by counting all of history."""
    return Snapshot(
        passwords=dict(conn.execute("SELECT state, COUNT(*) FROM passwords GROUP BY state")),
        issued=conn.execute("SELECT COUNT(*) FROM passwords").fetchone()[0],
        used=conn.execute(
            "SELECT COUNT(*) FROM passwords WHERE claimed_at IS NOT NULL").fetchone()[0],
        expired=dict(conn.execute(
            "SELECT COALESCE(expire_reason, 'unknown'), COUNT(*) FROM passwords"
            " WHERE state = 'expired' GROUP BY expire_reason")),
        sms=dict(conn.execute("SELECT state, COUNT(*) FROM sms_outbox GROUP BY state")))


def _shown(s: Snapshot) -> Snapshot:
    """Without the zero rows a summary may keep (a state nothing is in any more)."""
    return Snapshot({k: v for k, v in s.passwords.items() if v}, s.issued, s.used,
                    {k: v for k, v in s.expired.items() if v},
                    {k: v for k, v in s.sms.items() if v})


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "radiusd.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(conn)
    _fill(conn, 20_000)
    live = [(900_000 + i, f"+7702{i:07d}", "active" if i % 2 else "issued")
            for i in range(30)]
    conn.executemany(
        "INSERT INTO passwords (id, login, state, secret, language, issued_at,"
        " unclaimed_until) VALUES (?, ?, ?, x'00', 'en', 0, 300)", live)
    conn.executemany(
        "INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state,"
        " attempts, next_attempt_at) VALUES (?, ?, ?, x'00', ?, ?, 0, ?)",
        [(900_000 + i, 900_000 + i, f"+7702{i:07d}", NOW + i, "sending" if i % 3 else "queued",
          NOW + i) for i in range(30)])
    conn.close()
    yield path


def test_outbox_receipt_and_scrape_statements_read_no_history(filled: Path) -> None:
    """Every HOT statement of store.outbox and store.counts, on a filled database with
    and without planner statistics: each history table is reached through an index
    (or the rowid), never scanned; a SEARCH without an index is a scan too (the old
    `state IN ('queued', 'sending')` was one: "SEARCH sms_outbox")."""
    conn = sqlite3.connect(filled, isolation_level=None)
    for analyzed in (False, True):
        if analyzed:
            conn.execute("ANALYZE")
        bad = []
        for module in (outbox, counts):
            for name, sql, params in module.HOT:
                for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
                    detail = str(row[3])
                    words = detail.split()
                    if words[:1] in (["SCAN"], ["SEARCH"]) and words[1] in HISTORY and not (
                            words[0] == "SEARCH" and "USING" in words):
                        bad.append(f"{name}: {detail}")
        assert bad == [], f"analyzed={analyzed}"
    conn.close()


def test_scrape_figures_equal_what_history_holds(filled: Path) -> None:
    """The counters the triggers kept while the history was written say what counting
    all of history says (the pre-issue-18 /metrics queries)."""
    async def read() -> Snapshot:
        store = Store(str(filled))
        await store.open()
        try:
            return await counts.snapshot(store)
        finally:
            await store.close()

    got = asyncio.run(read())
    conn = sqlite3.connect(filled)
    truth = _truth(conn)
    conn.close()
    assert _shown(got) == truth
    assert truth.expired["unknown"] > 0 and truth.sms["cancelled"] > 0  # all kinds seen
    assert got.issued == 20_030 and got.passwords["active"] == 15


def test_summary_follows_any_writer_through_any_change(tmp_path: Path) -> None:
    """Whatever writes (an admin's hand-made UPDATE included) and in whatever order:
    inserts, claims, expiries, un-expiries, SMS state changes and deletes keep the
    gauges equal to the rows and the counters equal to the events."""
    import random

    rng = random.Random(18)
    conn = sqlite3.connect(tmp_path / "any.db", isolation_level=None)
    migrations.migrate(conn)
    issued = used = 0
    expired: Counter[str] = Counter()
    for step in range(600):
        pid = rng.randrange(1, 60)
        exists = conn.execute("SELECT state, claimed_at FROM passwords WHERE id = ?",
                              (pid,)).fetchone()
        if exists is None:
            state = rng.choice(["issued", "active", "expired"])
            claimed = step if rng.random() < 0.3 else None
            reason = rng.choice(["stop", None]) if state == "expired" else None
            conn.execute("INSERT INTO passwords (id, login, state, secret, language, issued_at,"
                         " unclaimed_until, claimed_at, expire_reason)"
                         " VALUES (?, 'x', ?, x'00', 'en', 0, 1, ?, ?)",
                         (pid, state, claimed, reason))
            conn.execute("INSERT INTO sms_outbox (id, password_id, recipient, body, created_at,"
                         " state, next_attempt_at) VALUES (?, ?, 'x', x'00', 0, ?, 0)",
                         (pid, pid, rng.choice(["queued", "sent", "failed"])))
            issued += 1
            used += claimed is not None
            if state == "expired":
                expired[reason or "unknown"] += 1
            continue
        action = rng.choice(["claim", "expire", "revive", "sms", "delete"])
        if action == "claim":
            conn.execute("UPDATE passwords SET claimed_at = COALESCE(claimed_at, ?)"
                         " WHERE id = ?", (step, pid))
            used += exists[1] is None
        elif action == "expire":
            reason = rng.choice(["stop", "lost_stop", "admin"])
            conn.execute("UPDATE passwords SET state = 'expired', expire_reason = ? WHERE id = ?",
                         (reason, pid))
            if exists[0] != "expired":
                expired[reason] += 1
        elif action == "revive":
            conn.execute("UPDATE passwords SET state = 'active' WHERE id = ?", (pid,))
        elif action == "sms":
            conn.execute("UPDATE sms_outbox SET state = ? WHERE id = ?",
                         (rng.choice(["queued", "sending", "sent", "failed", "cancelled"]), pid))
        else:
            conn.execute("DELETE FROM passwords WHERE id = ?", (pid,))
            conn.execute("DELETE FROM sms_outbox WHERE id = ?", (pid,))
    figures = _read_sync(conn)
    truth = _truth(conn)
    assert _shown(figures).passwords == truth.passwords and _shown(figures).sms == truth.sms
    assert (figures.issued, figures.used, figures.expired) == (issued, used, dict(expired))
    assert figures.issued > truth.issued  # some were deleted: the counter did not drop
    conn.close()


def test_upgrade_counts_and_splits_what_the_database_already_holds(tmp_path: Path) -> None:
    """A database written before the summary and the parts table existed: the migration
    counts it once, and a receipt for one part of an old long text finds its row."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    saved = list(migrations.MIGRATIONS)
    try:
        migrations.MIGRATIONS[:] = saved[:5]  # as released before this change
        assert migrations.migrate(conn) == 5
        _fill_old(conn)
    finally:
        migrations.MIGRATIONS[:] = saved
    truth = _truth(conn)
    assert migrations.migrate(conn) == len(saved)
    figures = _read_sync(conn)
    assert _shown(figures) == truth and truth.issued == 3000

    conn.execute("BEGIN")
    sql, params = outbox.receipt("X13b", "UNDELIV", NOW)
    conn.execute(sql, params)
    conn.execute("COMMIT")
    rows = conn.execute("SELECT id, delivery_state FROM sms_outbox"
                        " WHERE delivery_state IS NOT NULL").fetchall()
    assert rows == [(13, "UNDELIV")]
    conn.close()


def _fill_old(conn: sqlite3.Connection) -> None:
    """What the code before this change wrote: parts only in provider_ref."""
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO passwords (id, login, state, secret, language, issued_at, unclaimed_until,"
        " claimed_at, expired_at, expire_reason) VALUES (?, ?, ?, x'00', 'en', ?, ?, ?, ?, ?)",
        [(i, f"+7701{i:07d}", "expired" if i % 7 else "active", NOW + i, NOW + i + 300,
          NOW + i + 5 if i % 3 else None, NOW + i + 60, ("stop", "lost_stop", None)[i % 3])
         for i in range(1, 3001)])
    conn.executemany(
        "INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, attempts,"
        " next_attempt_at, provider_ref) VALUES (?, ?, ?, x'00', ?, ?, 1, ?, ?)",
        [(i, i, f"+7701{i:07d}", NOW + i, ("sent", "sent", "failed", "queued")[i % 4], NOW + i,
          f"X{i}a,X{i}b" if i % 10 == 3 else f"X{i}") for i in range(1, 3001)])
    conn.execute("COMMIT")


def _read_sync(conn: sqlite3.Connection) -> Snapshot:
    """counts.snapshot's reads on a plain connection (its SQL, via HOT)."""
    class Sync:
        async def fetchall(self, sql: str, params: Any = (), *, slow: bool = False
                           ) -> list[Any]:
            return conn.execute(sql, params).fetchall()

        async def fetchone(self, sql: str, params: Any = (), *, slow: bool = False) -> Any:
            return conn.execute(sql, params).fetchone()

    return asyncio.run(counts.snapshot(Sync()))  # type: ignore[arg-type]


def test_purge_lowers_what_is_kept_but_never_a_counter(filled: Path) -> None:
    """Prometheus counters never go down: a purge removes rows (the gauges follow) but
    not the passwords issued, used and expired before it."""
    conn = sqlite3.connect(filled, isolation_level=None)
    before = _read_sync(conn)
    purged = retention.purge(conn, NOW - 1e6 + 10_000, sleep=lambda _s: None)
    assert purged["passwords"] > 9000 and purged["sms messages"] > 9000
    after = _read_sync(conn)
    truth = _truth(conn)
    assert (after.issued, after.used, after.expired) == (before.issued, before.used,
                                                         before.expired)
    assert _shown(after).passwords == truth.passwords
    assert _shown(after).sms == truth.sms
    orphans = conn.execute("SELECT COUNT(*) FROM sms_parts WHERE sms_id NOT IN"
                           " (SELECT id FROM sms_outbox)").fetchone()[0]
    assert orphans == 0
    assert conn.execute("SELECT COUNT(*) FROM sms_parts").fetchone()[0] > 0  # kept ones stay
    conn.close()


def test_receipt_names_only_the_sms_it_answers(tmp_path: Path) -> None:
    """One SMSC reference per part: "M1" is neither "M10" nor a part of "M10,M11", and
    a part given twice by a provider is kept once."""
    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    migrations.migrate(conn)
    conn.execute("BEGIN")
    for i in (1, 2, 3):
        conn.execute("INSERT INTO passwords (id, login, state, secret, language, issued_at,"
                     " unclaimed_until) VALUES (?, ?, 'issued', x'00', 'en', 0, 300)", (i, PHONE))
        conn.execute("INSERT INTO sms_outbox (id, password_id, recipient, body, created_at,"
                     " state, next_attempt_at) VALUES (?, ?, ?, x'00', 0, 'sending', 0)",
                     (i, i, PHONE))
    ops: list[Op] = (outbox.sent(1, 1.0, "M10,M11") + outbox.sent(2, 1.0, "M1")
                     + outbox.sent(3, 1.0, "M7,M7"))
    for sql, params in ops:
        conn.execute(sql, params)
    conn.execute("COMMIT")

    def receipt(ref: str, state: str) -> dict[int, str | None]:
        sql, params = outbox.receipt(ref, state, 2.0)
        conn.execute(sql, params)
        return dict(conn.execute("SELECT id, delivery_state FROM sms_outbox ORDER BY id"))

    assert receipt("M1", "DELIVRD") == {1: None, 2: "DELIVRD", 3: None}
    assert receipt("M11", "UNDELIV") == {1: "UNDELIV", 2: "DELIVRD", 3: None}
    assert receipt("M7", "DELIVRD") == {1: "UNDELIV", 2: "DELIVRD", 3: "DELIVRD"}
    assert receipt("M10,M11", "EXPIRED")[1] == "EXPIRED"  # the whole reference still does
    conn.close()


def test_counts_in_the_millions_are_shown_exactly() -> None:
    """A year at a city network: 4,448,795 Stops is not "4.4488e+06"."""
    figures = Snapshot(passwords={"expired": 5_000_000}, issued=5_000_001, used=4_999_999,
                       expired={"stop": 4_448_795}, sms={"sent": 5_000_000})
    text = render(Counter(), Counter(), None, HttpCounters(), figures, {"store": 1})
    lines = set(text.splitlines())
    assert "radiusd_passwords_issued_total 5000001" in lines
    assert "radiusd_passwords_used_total 4999999" in lines
    assert 'radiusd_passwords_expired_total{reason="stop"} 4448795' in lines
    assert 'radiusd_sms_messages{state="sent"} 5000000' in lines


async def test_metrics_follow_a_login_at_once(tmp_path: Path, clock: ManualClock) -> None:
    """Get password, log in, Stop: each scrape right after shows the event (counted in
    its own transaction, not a count cached for seconds)."""
    async with otp_server(tmp_path, clock, http={"listen": ["127.0.0.1:0"]}) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            async def scrape() -> dict[str, float]:
                async with aiohttp.ClientSession() as s, s.get(handle.url("/metrics")) as r:
                    assert r.status == 200
                    text = await r.text()
                return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines() if line and not line.startswith("#")}

            first = await scrape()
            assert first["radiusd_passwords_issued_total"] == 0
            nas = nas_of(server)
            _, klass = await log_in(server, nas)
            during = await scrape()
            assert during["radiusd_passwords_issued_total"] == 1
            assert during["radiusd_passwords_used_total"] == 1
            assert during['radiusd_passwords{state="active"}'] == 1
            await acct(nas, "Start", "s-1", klass=klass)
            await acct(nas, "Stop", "s-1", klass=klass, Acct_Session_Time=60)
            after = await scrape()
            assert after['radiusd_passwords{state="active"}'] == 0
            assert after['radiusd_passwords{state="expired"}'] == 1
            assert sum(v for k, v in after.items()
                       if k.startswith("radiusd_passwords_expired_total")) == 1
            assert after["radiusd_passwords_used_total"] == 1
        finally:
            await stop_http(handle)
