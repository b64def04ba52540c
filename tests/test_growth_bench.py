"""bench/growth.py's fill (issue 18, item 8), small: a year of history in the real
schema and the real sealed formats, that the server's own code reads back."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import ModuleType

from radiusd import export, journal
from radiusd.sealing import Sealer
from radiusd.store.migrations import MIGRATIONS
from tests import benches

NOW = 1_796_500_000.0
YEAR = 365 * 86400.0
N = 2000


def growth() -> ModuleType:
    return benches.load("growth")


def test_fill_writes_a_year_of_history_that_opens_with_the_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    filled = growth().fill(tmp_path / "g.db", N, key, now=NOW, pool=64)
    assert (filled.sessions, filled.passwords, filled.sms, filled.journal) == (N, N, N, N // 10)
    db = sqlite3.connect(tmp_path / "g.db")
    one = lambda sql: db.execute(sql).fetchone()  # noqa: E731
    assert one("SELECT MAX(version) FROM schema_version") == (len(MIGRATIONS),)
    assert one("PRAGMA journal_mode") == ("wal",)
    assert one("SELECT COUNT(*), COUNT(DISTINCT unique_id), COUNT(stopped_at) FROM sessions"
               ) == (N, N, N)
    assert one("SELECT COUNT(*) FROM passwords WHERE state = 'expired'") == (N,)
    assert one("SELECT COUNT(*) FROM sms_outbox WHERE state = 'sent'") == (N,)
    assert one("SELECT COUNT(*) FROM journal") == (N // 10,)
    assert one("SELECT COUNT(DISTINCT journal_id) FROM journal_events") == (N // 10,)
    logins, devices = one("SELECT COUNT(DISTINCT login), COUNT(DISTINCT device) FROM sessions")
    assert logins > 500 and devices > logins
    first, last = one("SELECT MIN(started_at), MAX(started_at) FROM sessions")
    assert NOW - YEAR <= first < NOW - YEAR + 30 * 86400 and NOW - 30 * 86400 < last < NOW
    assert one("SELECT COUNT(*) FROM sessions WHERE stopped_at < started_at") == (0,)

    sealer = Sealer(key)
    codes = {}
    for pw_id, secret in db.execute("SELECT id, secret FROM passwords"):
        code = sealer.open(secret, b"otp").decode()
        assert code.isdigit() and len(code) == 6
        codes[pw_id] = code
    for pw_id, body in db.execute("SELECT password_id, body FROM sms_outbox"):
        assert codes[pw_id] in sealer.open(body, b"sms").decode()
    db.close()

    # What the admin CLI reads: every number is one, every entry is there.
    conn = sqlite3.connect(tmp_path / "g.db")
    rows = list(export.session_rows(conn, "KZ", None, None, None))
    assert len(rows) == N and all(r["phone"] == r["login"] for r in rows)
    assert len(journal.list_entries(conn)) == N // 10
    conn.close()
