"""Sessions' keys (Acct-Unique-Session-Id) keep a NAS's sessions together (issue 18: a
year of history costs nothing): a new Start writes next to its NAS's last one in the
index, not at a random place among millions; and an upgrade keeps every open session
findable by its Interim-Update and Stop."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from radiusd.accounting import unique_session_id
from radiusd.store import migrations


def test_one_nas_sessions_sort_in_the_order_the_nas_numbered_them() -> None:
    keys = [unique_session_id("cafe-1", "10.0.0.1", f"81a{n:05x}", "+77011234567", 7)
            for n in range(1, 300)]
    assert keys == sorted(keys)
    other = unique_session_id("cafe-2", "10.0.0.2", "81a00001", "+77011234567", 7)
    assert not keys[0] < other < keys[-1]  # another NAS's sessions are elsewhere


def test_keys_stay_unique_for_what_acct_session_id_alone_does_not_tell_apart() -> None:
    base = ("cafe-1", "10.0.0.1", "81a00001", "+77011234567", 7)
    variants = {unique_session_id(*base),
                unique_session_id("cafe-1", "10.0.0.9", "81a00001", "+77011234567", 7),
                unique_session_id("cafe-1", "10.0.0.1", "81a00001", "+77019999999", 7),
                unique_session_id("cafe-1", "10.0.0.1", "81a00001", "+77011234567", 8)}
    assert len(variants) == 4


def _old_key(nas: str, address: str, sid: str, login: str, port: int) -> str:
    """The key as radiusd made it before (schema 8 and older): the hash alone."""
    return hashlib.md5("\x00".join([nas, address, sid, login, str(port)]).encode()).hexdigest()


def test_an_upgrade_gives_open_sessions_the_key_their_stop_will_carry(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "radiusd.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, script in enumerate(migrations.MIGRATIONS[:8], start=1):
        for stmt in migrations._statements(script):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    fields = ("cafe-1", "10.0.0.1", "81a00001", "+77011234567", 7)
    closed = ("cafe-1", "10.0.0.1", "81a00000", "+77011234567", 7)
    conn.executemany(
        "INSERT INTO sessions (unique_id, login, nas, nas_address, acct_session_id,"
        " started_at, updated_at, stopped_at) VALUES (?, ?, ?, ?, ?, 1.0, 2.0, ?)",
        [(_old_key(*fields), fields[3], fields[0], fields[1], fields[2], None),
         (_old_key(*closed), closed[3], closed[0], closed[1], closed[2], 2.0)])
    assert migrations.migrate(conn) == len(migrations.MIGRATIONS)
    rows = dict(conn.execute("SELECT acct_session_id, unique_id FROM sessions").fetchall())
    assert rows["81a00001"] == unique_session_id(*fields)  # its Stop finds it
    assert rows["81a00000"] == _old_key(*closed)  # history is left as it was
    conn.close()
