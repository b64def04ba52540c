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
    # 4: a year of history (issue 18): exports and purge read along indexes.
    # sessions_begin: a session's start as exports show it, in export order;
    # sessions_length: the longest and shortest closed session, which bound how long
    # before a time window a session that overlaps it can have begun;
    # sms_created: SMS by age, for retention;
    # journal_span: each entry's current start and end (its latest event for each, as
    # journal.CURRENT reads them), kept by triggers; the journal itself stays as written.
    """
    CREATE INDEX sessions_begin ON sessions(COALESCE(started_at, updated_at));
    CREATE INDEX sessions_length ON sessions(stopped_at - COALESCE(started_at, updated_at))
        WHERE stopped_at IS NOT NULL;
    CREATE INDEX sms_created ON sms_outbox(created_at);
    CREATE TABLE journal_span (
        journal_id  INTEGER PRIMARY KEY,      -- journal.id
        started_at  REAL NOT NULL,
        ended_at    REAL
    );
    INSERT INTO journal_span (journal_id, started_at, ended_at)
    SELECT j.id,
        COALESCE((SELECT json_extract(e.detail, '$.value') FROM journal_events e
                  WHERE e.journal_id = j.id AND json_extract(e.detail, '$.field') = 'started_at'
                  ORDER BY e.id DESC LIMIT 1), j.started_at),
        COALESCE((SELECT json_extract(e.detail, '$.value') FROM journal_events e
                  WHERE e.journal_id = j.id AND json_extract(e.detail, '$.field') = 'ended_at'
                  ORDER BY e.id DESC LIMIT 1), j.ended_at)
    FROM journal j;
    CREATE INDEX journal_span_started ON journal_span(started_at);
    CREATE INDEX journal_span_length ON journal_span(ended_at - started_at)
        WHERE ended_at IS NOT NULL;
    CREATE INDEX journal_span_open ON journal_span(started_at) WHERE ended_at IS NULL;
    CREATE TRIGGER journal_span_entry AFTER INSERT ON journal BEGIN
        INSERT INTO journal_span (journal_id, started_at, ended_at)
        VALUES (new.id, new.started_at, new.ended_at);
    END;
    CREATE TRIGGER journal_span_event AFTER INSERT ON journal_events
    WHEN json_extract(new.detail, '$.field') IN ('started_at', 'ended_at') BEGIN
        UPDATE journal_span SET
            started_at = CASE json_extract(new.detail, '$.field') WHEN 'started_at'
                THEN COALESCE(json_extract(new.detail, '$.value'),
                              (SELECT started_at FROM journal WHERE id = new.journal_id))
                ELSE started_at END,
            ended_at = CASE json_extract(new.detail, '$.field') WHEN 'ended_at'
                THEN COALESCE(json_extract(new.detail, '$.value'),
                              (SELECT ended_at FROM journal WHERE id = new.journal_id))
                ELSE ended_at END
        WHERE journal_id = new.journal_id;
    END;
    CREATE TRIGGER journal_span_gone AFTER DELETE ON journal BEGIN
        DELETE FROM journal_span WHERE journal_id = old.id;
    END;
    """,
    # 5: flat per-tick and per-Stop statements (issue 18, radiusd/store/sessions.py and
    # passwords.py): the reaper's stale sessions along open sessions by last update;
    # a Stop's password by its Class among the live ones only.
    """
    CREATE INDEX sessions_stale ON sessions(updated_at) WHERE stopped_at IS NULL;
    CREATE INDEX passwords_class ON passwords(class_token) WHERE state != 'expired';
    """,
    # 6: a flat outbox round, receipt and scrape (issue 18, radiusd/store/outbox.py and
    # counts.py). sms_due (for sms_queued, which a count could only scan) and
    # sms_sending: queued rows by due time, claimed rows by lease end; sms_waiting:
    # queued rows by age; sms_parts: each part's SMSC reference of a text sent in
    # parts ("M1,M2" in provider_ref), so a receipt for one part is an index search;
    # counters: what /metrics counts, kept by triggers in the event's own transaction,
    # seeded once here from what the database holds (see counts.py for the names).
    """
    DROP INDEX sms_queued;
    CREATE INDEX sms_due ON sms_outbox(state, next_attempt_at) WHERE state = 'queued';
    CREATE INDEX sms_sending ON sms_outbox(state, next_attempt_at) WHERE state = 'sending';
    CREATE INDEX sms_waiting ON sms_outbox(state, created_at) WHERE state = 'queued';
    CREATE TABLE sms_parts (
        sms_id  INTEGER NOT NULL,             -- sms_outbox.id
        ref     TEXT NOT NULL,                -- the SMSC's message id of one part
        PRIMARY KEY (sms_id, ref)
    );
    CREATE INDEX sms_parts_ref ON sms_parts(ref);
    INSERT INTO sms_parts (sms_id, ref)
    WITH RECURSIVE split(sms_id, ref, rest) AS (
        SELECT id, '', provider_ref || ',' FROM sms_outbox
        WHERE provider_ref IS NOT NULL AND instr(provider_ref, ',') > 0
        UNION ALL
        SELECT sms_id, substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1)
        FROM split WHERE rest != ''
    )
    SELECT DISTINCT sms_id, ref FROM split WHERE ref != '';
    CREATE TRIGGER sms_parts_gone AFTER DELETE ON sms_outbox
    WHEN instr(old.provider_ref, ',') > 0 BEGIN
        DELETE FROM sms_parts WHERE sms_id = old.id;
    END;

    CREATE TABLE counters (
        name    TEXT NOT NULL,
        label   TEXT NOT NULL DEFAULT '',
        value   INTEGER NOT NULL,
        PRIMARY KEY (name, label)
    );
    INSERT INTO counters (name, label, value)
    SELECT 'passwords_issued', '', COUNT(*) FROM passwords
    UNION ALL SELECT 'passwords_used', '', COUNT(*) FROM passwords WHERE claimed_at IS NOT NULL;
    INSERT INTO counters (name, label, value)
    SELECT 'passwords_expired', COALESCE(expire_reason, 'unknown'), COUNT(*) FROM passwords
    WHERE state = 'expired' GROUP BY COALESCE(expire_reason, 'unknown');
    INSERT INTO counters (name, label, value)
    SELECT 'passwords', 'expired', COUNT(*) FROM passwords WHERE state = 'expired';
    INSERT INTO counters (name, label, value)
    SELECT 'sms', state, COUNT(*) FROM sms_outbox
    WHERE state NOT IN ('queued', 'sending') GROUP BY state;

    CREATE TRIGGER counters_password_issued AFTER INSERT ON passwords BEGIN
        INSERT INTO counters (name, label, value)
        SELECT 'passwords_issued', '', 1
        UNION ALL SELECT 'passwords_used', '', 1 WHERE new.claimed_at IS NOT NULL
        UNION ALL SELECT 'passwords_expired', COALESCE(new.expire_reason, 'unknown'), 1
            WHERE new.state = 'expired'
        UNION ALL SELECT 'passwords', 'expired', 1 WHERE new.state = 'expired'
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_password_used AFTER UPDATE OF claimed_at ON passwords
    WHEN old.claimed_at IS NULL AND new.claimed_at IS NOT NULL BEGIN
        INSERT INTO counters (name, label, value) VALUES ('passwords_used', '', 1)
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_password_expired AFTER UPDATE OF state ON passwords
    WHEN new.state = 'expired' AND old.state != 'expired' BEGIN
        INSERT INTO counters (name, label, value)
        VALUES ('passwords_expired', COALESCE(new.expire_reason, 'unknown'), 1),
               ('passwords', 'expired', 1)
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_password_revived AFTER UPDATE OF state ON passwords
    WHEN old.state = 'expired' AND new.state != 'expired' BEGIN
        INSERT INTO counters (name, label, value) VALUES ('passwords', 'expired', -1)
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_password_gone AFTER DELETE ON passwords
    WHEN old.state = 'expired' BEGIN
        INSERT INTO counters (name, label, value) VALUES ('passwords', 'expired', -1)
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_sms_added AFTER INSERT ON sms_outbox
    WHEN new.state NOT IN ('queued', 'sending') BEGIN
        INSERT INTO counters (name, label, value) VALUES ('sms', new.state, 1)
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_sms_state AFTER UPDATE OF state ON sms_outbox
    WHEN old.state != new.state BEGIN
        INSERT INTO counters (name, label, value)
        SELECT 'sms', old.state, -1 WHERE old.state NOT IN ('queued', 'sending')
        UNION ALL SELECT 'sms', new.state, 1 WHERE new.state NOT IN ('queued', 'sending')
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    CREATE TRIGGER counters_sms_gone AFTER DELETE ON sms_outbox
    WHEN old.state NOT IN ('queued', 'sending') BEGIN
        INSERT INTO counters (name, label, value) VALUES ('sms', old.state, -1)
        ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value;
    END;
    """,
    # 7: `journal open` with vouchers looks up whether a voucher login is taken: along
    # an index of the entries that have one, not a walk of the whole journal.
    """
    CREATE INDEX journal_voucher ON journal(voucher_login) WHERE voucher_login IS NOT NULL;
    """,
    # 8: every rule holds across nodes (issue 12 item 3): the database, not a node's
    # memory, keeps the per-number cooldown (otp_cooldowns), the SMS and guess caps
    # (limit_counts: one row per cap, key and time bucket), the Access-Challenge
    # States (challenges), the "auto" Message-Authenticator latch (client_latches)
    # and, per password, a keyed tag of its code (Rules §9: a new code is never one
    # that is live, nor the number's previous one, whichever node issued them).
    # portable: run as-is on PostgreSQL too
    """
    ALTER TABLE passwords ADD COLUMN code_tag TEXT;
    CREATE INDEX passwords_code_tag ON passwords(code_tag) WHERE state != 'expired';
    CREATE INDEX passwords_login_issued ON passwords(login, issued_at);
    CREATE TABLE otp_cooldowns (
        login       TEXT PRIMARY KEY,
        until_at    DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX otp_cooldowns_until ON otp_cooldowns(until_at);
    CREATE TABLE limit_counts (
        cap         TEXT NOT NULL,
        key         TEXT NOT NULL,
        bucket      BIGINT NOT NULL,
        first_at    DOUBLE PRECISION NOT NULL,
        hits        INTEGER NOT NULL,
        PRIMARY KEY (cap, key, bucket)
    );
    CREATE INDEX limit_counts_bucket ON limit_counts(bucket);
    CREATE TABLE challenges (
        state       TEXT PRIMARY KEY,
        login       TEXT NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX challenges_expires ON challenges(expires_at);
    CREATE TABLE client_latches (
        client      TEXT PRIMARY KEY,
        latched_at  DOUBLE PRECISION NOT NULL
    );
    """,
    # 9 (portable: run as-is on PostgreSQL too): sessions' keys lead with the NAS and its
    # Acct-Session-Id (accounting.unique_session_id). Open sessions take the new form,
    # so their Interim-Update and Stop find them; closed ones keep theirs (history is
    # only read). Along `sessions_open`: as quick on a year of history as on none.
    """
    UPDATE sessions SET unique_id = nas || ':' || acct_session_id || ':' || unique_id
    WHERE stopped_at IS NULL;
    """,
    # 10: revocations (issue 13). A session remembers the User-Name its NAS sent (the
    # Disconnect-Request names it so) and the last Disconnect-Request about it and its
    # answer; a session is found by its Class among the open ones. A password
    # remembers when accounting first spoke of it (Rules §8: without an
    # Accounting-Start it is single-use); those in use before this version count as
    # seen. Blocked numbers get no password and no SMS.
    # portable: run as-is on PostgreSQL too
    """
    ALTER TABLE sessions ADD COLUMN user_name TEXT;
    ALTER TABLE sessions ADD COLUMN disconnect_at DOUBLE PRECISION;
    ALTER TABLE sessions ADD COLUMN disconnect_answer TEXT;
    ALTER TABLE sessions ADD COLUMN disconnect_error_cause INTEGER;
    ALTER TABLE sessions ADD COLUMN disconnect_detail TEXT;
    CREATE INDEX sessions_class ON sessions(class_token) WHERE stopped_at IS NULL;
    CREATE INDEX sessions_login_open ON sessions(login) WHERE stopped_at IS NULL;
    ALTER TABLE passwords ADD COLUMN acct_seen_at DOUBLE PRECISION;
    UPDATE passwords SET acct_seen_at = claimed_at WHERE state = 'active';
    CREATE INDEX passwords_unseen ON passwords(claimed_at)
        WHERE state = 'active' AND acct_seen_at IS NULL;
    CREATE TABLE blocked_numbers (
        login       TEXT PRIMARY KEY,
        since       DOUBLE PRECISION NOT NULL,
        reason      TEXT NOT NULL,
        actor       TEXT NOT NULL
    );
    """,
    # 11: hot rows split per writer (issue 12). A cap's counter row (`limit_counts`)
    # gets a `shard`, and a cap is the sum over shards (as it was over buckets). On
    # SQLite there is one writer at a time and every row is shard 0; on PostgreSQL
    # each writer connection adds to its own shard, and so do the `counters`
    # triggers (`pg_migrations`), so two nodes never wait on each other's counter.
    """
    CREATE TABLE limit_counts_sharded (
        cap         TEXT NOT NULL,
        key         TEXT NOT NULL,
        bucket      BIGINT NOT NULL,
        shard       INTEGER NOT NULL DEFAULT 0,
        first_at    DOUBLE PRECISION NOT NULL,
        hits        INTEGER NOT NULL,
        PRIMARY KEY (cap, key, bucket, shard)
    );
    INSERT INTO limit_counts_sharded (cap, key, bucket, first_at, hits)
    SELECT cap, key, bucket, first_at, hits FROM limit_counts;
    DROP TABLE limit_counts;
    ALTER TABLE limit_counts_sharded RENAME TO limit_counts;
    CREATE INDEX limit_counts_bucket ON limit_counts(bucket);
    """,
    # 12: Disconnect-Requests for a RadSec NAS, handed to the process that holds its
    # connection (issue 16, `store/handoffs.py`): only what waits, a few rows.
    # portable: run as-is on PostgreSQL too
    """
    CREATE TABLE disconnect_handoffs (
        unique_id   TEXT PRIMARY KEY,
        client      TEXT NOT NULL,
        target      TEXT NOT NULL,
        queued_at   DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX disconnect_handoffs_queued ON disconnect_handoffs(queued_at);
    """,
    # 13: venues (issue 15). An SMS remembers the venue whose provider, sender and text
    # it takes (NULL: the top-level [sms]); a venue's `sms_daily_budget` is one row per
    # venue and calendar day, reserved by the press's own transaction
    # (`store.budgets.reserve`); what each venue did per day (`store.venue_days`, for
    # `radiusd venues report`); the venue of each journal entry (Rules §10). The
    # per-day tables have an index on the day: `radiusd purge` goes along it.
    # portable: run as-is on PostgreSQL too
    """
    ALTER TABLE sms_outbox ADD COLUMN venue TEXT;
    ALTER TABLE journal ADD COLUMN venue TEXT;
    CREATE TABLE sms_budget (
        venue       TEXT NOT NULL,
        day         TEXT NOT NULL,
        sent        INTEGER NOT NULL,
        PRIMARY KEY (venue, day)
    );
    CREATE TABLE venue_days (
        venue       TEXT NOT NULL,
        day         TEXT NOT NULL,
        name        TEXT NOT NULL,
        value       BIGINT NOT NULL,
        PRIMARY KEY (venue, day, name)
    );
    CREATE INDEX venue_days_day ON venue_days(day);
    CREATE TABLE venue_numbers (
        venue       TEXT NOT NULL,
        day         TEXT NOT NULL,
        number_tag  TEXT NOT NULL,        -- keyed tag of the number, never the number
        PRIMARY KEY (venue, day, number_tag)
    );
    CREATE INDEX venue_numbers_day ON venue_numbers(day);
    CREATE INDEX sms_budget_day ON sms_budget(day);
    """,
    # 14: PostgreSQL's password counters, once per statement (`pg_migrations.PG_ONLY`).
    # Nothing to do here: SQLite updates a row in place, so a statement that changes
    # many passwords adds to the same counter row at the same cost each time.
    """
    -- PostgreSQL only
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
