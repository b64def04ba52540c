"""Versioned schema. Each entry runs once, in order, in its own transaction.

Never edit a released migration: append a new one. Times are Unix seconds (UTC).
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: phone passwords (Rules §5–§9), sessions (RFC 2866), SMS outbox (Rules §6).
    """
    CREATE TABLE passwords (
        id            INTEGER PRIMARY KEY,
        login         TEXT NOT NULL,          -- E.164 number, or a voucher login
        kind          TEXT NOT NULL DEFAULT 'phone',   -- 'phone' | 'voucher'
        state         TEXT NOT NULL,          -- 'issued' | 'active' | 'expired'
        secret        BLOB NOT NULL,          -- AES-GCM encrypted; never clear text
        language      TEXT NOT NULL,
        issued_at     REAL NOT NULL,
        unclaimed_until REAL NOT NULL,
        claimed_at    REAL,
        device        TEXT,                   -- Calling-Station-Id, 12 hex digits
        nas           TEXT,                   -- client name
        nas_address   TEXT,
        class_token   TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        expired_at    REAL,
        expire_reason TEXT,
        request_device TEXT,                  -- device that asked for it (rate limits)
        request_nas   TEXT,
        journal_id    INTEGER
    );
    CREATE INDEX passwords_login ON passwords(login, state);
    CREATE INDEX passwords_live ON passwords(state) WHERE state != 'expired';
    CREATE INDEX passwords_issued ON passwords(issued_at);

    CREATE TABLE sessions (
        id              INTEGER PRIMARY KEY,
        unique_id       TEXT NOT NULL UNIQUE, -- like FreeRADIUS Acct-Unique-Session-Id
        password_id     INTEGER,
        login           TEXT,
        device          TEXT,
        nas             TEXT NOT NULL,
        nas_address     TEXT,
        acct_session_id TEXT NOT NULL,
        framed_ip       TEXT,
        started_at      REAL,
        updated_at      REAL NOT NULL,
        stopped_at      REAL,
        session_time    INTEGER NOT NULL DEFAULT 0,
        input_octets    INTEGER NOT NULL DEFAULT 0,
        output_octets   INTEGER NOT NULL DEFAULT 0,
        input_packets   INTEGER NOT NULL DEFAULT 0,
        output_packets  INTEGER NOT NULL DEFAULT 0,
        terminate_cause TEXT,
        class_token     TEXT
    );
    CREATE INDEX sessions_open ON sessions(nas) WHERE stopped_at IS NULL;
    CREATE INDEX sessions_started ON sessions(started_at);
    CREATE INDEX sessions_login ON sessions(login);

    CREATE TABLE sms_outbox (
        id              INTEGER PRIMARY KEY,
        password_id     INTEGER NOT NULL,
        recipient       TEXT NOT NULL,
        body            BLOB NOT NULL,        -- encrypted: it carries the code
        created_at      REAL NOT NULL,
        state           TEXT NOT NULL,        -- 'queued' | 'sent' | 'failed'
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        sent_at         REAL,
        provider_ref    TEXT
    );
    CREATE INDEX sms_queued ON sms_outbox(next_attempt_at) WHERE state = 'queued';
    """,
    # 2: Rules §10 journal: entries are never edited in place; events record changes.
    """
    CREATE TABLE journal (
        id              INTEGER PRIMARY KEY,
        surname         TEXT NOT NULL,
        name            TEXT NOT NULL,
        patronymic      TEXT NOT NULL DEFAULT '',
        computer        TEXT NOT NULL,
        document_type   TEXT NOT NULL DEFAULT '',
        document_number TEXT NOT NULL DEFAULT '',
        opened_at       REAL NOT NULL,        -- when the entry was recorded
        started_at      REAL NOT NULL,
        ended_at        REAL,
        voucher_login   TEXT
    );
    CREATE INDEX journal_started ON journal(started_at);
    CREATE TABLE journal_events (
        id          INTEGER PRIMARY KEY,
        journal_id  INTEGER NOT NULL REFERENCES journal(id),
        at          REAL NOT NULL,
        actor       TEXT NOT NULL,
        event       TEXT NOT NULL,            -- 'open' | 'start' | 'close' | 'correct'
        detail      TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX journal_events_entry ON journal_events(journal_id);
    """,
    # 3: SMSC delivery receipts (SMPP deliver_sm) on the outbox row they answer.
    """
    ALTER TABLE sms_outbox ADD COLUMN delivery_state TEXT;
    ALTER TABLE sms_outbox ADD COLUMN delivered_at REAL;
    CREATE INDEX sms_provider_ref ON sms_outbox(provider_ref) WHERE provider_ref IS NOT NULL;
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply what is missing; return the schema version. Safe to run concurrently
    from several processes: BEGIN IMMEDIATE serialises them."""
    current = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if current:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if (row[0] or 0) >= len(MIGRATIONS):
            return int(row[0])  # up to date: no write lock for readers (CLI exports)
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    conn.commit()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] or 0
        if version >= len(MIGRATIONS):
            conn.execute("COMMIT")
            return version
        try:
            for stmt in _statements(MIGRATIONS[version]):
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
