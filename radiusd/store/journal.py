"""What is kept of the Rules §10 journal: entries written once, and their events.

A row of `journal` is never updated: what an entry says *now* is its row with the
latest event for each field applied (`CURRENT`). `radiusd.journal` decides; this
only keeps. The admin CLI's reads and writes are plain functions over a synchronous
connection (`backend.SyncConnection`: SQLite's or PostgreSQL's, autocommit, as
`backend.connect_sync` makes it; writes inside `transaction`); the server's voucher
start and end are `Op`s committed with the Accounting-Request that carries them,
found by the entry's id (`HOT`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from radiusd.store.backend import Op, SyncConnection

# Fields an event may set, in export order. The row holds the first value.
TEXT_FIELDS = ("surname", "name", "patronymic", "computer", "document_type", "document_number")
TIME_FIELDS = ("started_at", "ended_at")
FIELDS = TEXT_FIELDS + TIME_FIELDS
SERVER_ACTOR = "radiusd"


def _latest(field: str) -> str:
    # A time is cast: PostgreSQL's json_extract (pg_migrations) gives text.
    value = "json_extract(e.detail, '$.value')"
    if field in TIME_FIELDS:
        value = f"CAST({value} AS DOUBLE PRECISION)"
    return (
        f"COALESCE((SELECT {value} FROM journal_events e"
        f" WHERE e.journal_id = j.id AND json_extract(e.detail, '$.field') = '{field}'"
        f" ORDER BY e.id DESC LIMIT 1), j.{field}) AS {field}"
    )


# The journal as it reads now: the first-written row with later events applied.
_CURRENT_COLUMNS = (
    "j.id AS id, j.opened_at AS opened_at, j.voucher_login AS voucher_login, "
    + ", ".join(_latest(f) for f in FIELDS)
    + ", (SELECT COUNT(*) FROM journal_events e WHERE e.journal_id = j.id"
    " AND e.event = 'correct') AS corrections, j.venue AS venue"
)
CURRENT = f"SELECT {_CURRENT_COLUMNS} FROM journal j"
_ENTRY = f"SELECT * FROM ({CURRENT}) AS entry WHERE id = ?"
_FIRST_WRITTEN = "SELECT * FROM journal WHERE id = ?"
_EVENTS = ("SELECT id, journal_id, at, actor, event, detail FROM journal_events"
           " WHERE journal_id = ? ORDER BY id")
_EVENT = ("INSERT INTO journal_events (journal_id, at, actor, event, detail)"
          " VALUES (?, ?, ?, ?, ?)")
_OPEN = ("INSERT INTO journal (surname, name, patronymic, computer, document_type,"
         " document_number, opened_at, started_at, ended_at, voucher_login, venue)"
         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) RETURNING id")
_LOGIN_TAKEN = ("SELECT 1 FROM passwords WHERE login = ? UNION ALL"
                " SELECT 1 FROM journal WHERE voucher_login = ? LIMIT 1")
# Per voucher Accounting-Start / end of its password: along `journal_events_entry`.
_VOUCHER_STARTED = (
    "INSERT INTO journal_events (journal_id, at, actor, event, detail)"
    " SELECT id, ?, ?, 'start', ?"
    " FROM journal WHERE id = ? AND NOT EXISTS (SELECT 1 FROM journal_events"
    " WHERE journal_id = ? AND event IN ('start', 'close'))"
)
_VOUCHER_ENDED = (
    "INSERT INTO journal_events (journal_id, at, actor, event, detail)"
    " SELECT id, ?, ?, 'close', ?"
    " FROM journal WHERE id = ? AND NOT EXISTS (SELECT 1 FROM journal_events"
    " WHERE journal_id = ? AND event = 'close')"
)
# Reads go along `journal_span` (migration 4): each entry's current start and end,
# kept by triggers from the same events, indexed. Rows per query: each is a short
# read of its own, so a long export never holds one snapshot (the WAL stays small).
_SPAN = f"SELECT {_CURRENT_COLUMNS}, s.started_at FROM journal_span s{{hint}}" \
    " JOIN journal j ON j.id = s.journal_id"
_LONGEST = ("SELECT MAX(ended_at - started_at) FROM journal_span"
            " WHERE ended_at IS NOT NULL")


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    surname: str
    name: str
    patronymic: str
    computer: str
    document_type: str
    document_number: str
    started_at: float
    ended_at: float | None
    opened_at: float
    voucher_login: str | None
    corrections: int
    venue: str | None = None  # issue 15: where (a [[venues]] name), when venues exist

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.surname, self.name, self.patronymic) if p)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    journal_id: int
    at: float
    actor: str
    event: str  # 'open' | 'start' | 'close' | 'correct'
    detail: dict[str, Any]


_NAMES = ("id", "opened_at", "voucher_login", *FIELDS, "corrections", "venue")


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(**dict(zip(_NAMES, row, strict=True)))


@contextmanager
def transaction(conn: SyncConnection) -> Iterator[None]:
    """One write transaction; BEGIN IMMEDIATE waits (busy timeout) for the server.
    Anything raised inside rolls it all back: a failed command writes nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def run(conn: SyncConnection, ops: Sequence[Op]) -> None:
    """Ops (this module's, `passwords`') on the CLI's connection, in its transaction."""
    for sql, params in ops:
        conn.execute(sql, params)


def event(journal_id: int, at: float, actor: str, kind: str, detail: dict[str, Any]) -> Op:
    """Something happened to an entry (Rules §10: who and when, never an update)."""
    return (_EVENT, (journal_id, at, actor, kind, json.dumps(detail, ensure_ascii=False)))


def open_entry(conn: SyncConnection, fields: dict[str, str], at: float,
               voucher_login: str | None, venue: str | None = None) -> int:
    """The entry as first written (`fields`: every one of `TEXT_FIELDS`); its id."""
    row = conn.execute(_OPEN, (*(fields[f] for f in TEXT_FIELDS), at, at,
                               voucher_login, venue)).fetchone()
    return int(row[0])


def voucher_login_taken(conn: SyncConnection, login: str) -> bool:
    """Whether a password or an entry still on record has this login."""
    return conn.execute(_LOGIN_TAKEN, (login, login)).fetchone() is not None


def entry(conn: SyncConnection, entry_id: int) -> Entry | None:
    """The entry as it reads now, if there is one."""
    row = conn.execute(_ENTRY, (entry_id,)).fetchone()
    return None if row is None else _entry(row)


def first_written(conn: SyncConnection, entry_id: int) -> dict[str, object] | None:
    """The entry's row as first written, column by column."""
    cur = conn.execute(_FIRST_WRITTEN, (entry_id,))
    row = cur.fetchone()
    return None if row is None else dict(zip((d[0] for d in cur.description), row, strict=True))


def events(conn: SyncConnection, entry_id: int) -> list[Event]:
    """Every event of an entry, oldest first."""
    rows = conn.execute(_EVENTS, (entry_id,))
    return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def entries(conn: SyncConnection, since: float | None, until: float | None,
            open_only: bool, chunk: int) -> Iterator[Entry]:
    """Entries online at some moment of [since, until) (open ones only with
    `open_only`), oldest first, `chunk` per query along `journal_span`'s start index.
    An entry that ends at or after `since` began at most the longest closed entry
    before it (`journal_span_length`), or is still open (`journal_span_open`)."""
    where: list[str] = []
    params: list[Any] = []
    lower = None
    if since is not None and not open_only:
        longest = conn.execute(_LONGEST).fetchone()[0]
        lower = since - max(0.0, longest or 0.0)
        # Still open and begun before that: few (the open entries), from their index.
        early = conn.execute(
            _SPAN.format(hint=" INDEXED BY journal_span_open")
            + " WHERE s.ended_at IS NULL AND s.started_at < ?"
            + (" AND s.started_at < ?" if until is not None else "")
            + " ORDER BY s.started_at, s.journal_id",
            (lower, until) if until is not None else (lower,)).fetchall()
        yield from (_entry(r[:-1]) for r in early)
        where.append("(s.ended_at IS NULL OR s.ended_at >= ?)")
        params.append(since)
    if open_only:  # online until now, so at any `since`
        where.append("s.ended_at IS NULL")
    if until is not None:
        where.append("s.started_at < ?")
        params.append(until)
    after: tuple[float, int] | None = None
    while True:
        w, p = list(where), list(params)
        if after is not None:
            w.append("s.started_at >= ? AND NOT (s.started_at = ? AND s.journal_id <= ?)")
            p += [after[0], after[0], after[1]]
        elif lower is not None:
            w.append("s.started_at >= ?")
            p.append(lower)
        sql = (_SPAN.format(hint="") + (" WHERE " + " AND ".join(w) if w else "")
               + f" ORDER BY s.started_at, s.journal_id LIMIT {int(chunk)}")
        batch = conn.execute(sql, p).fetchall()
        yield from (_entry(r[:-1]) for r in batch)
        if len(batch) < chunk:
            return
        after = (batch[-1][-1], batch[-1][0])


def voucher_started(journal_id: int, at: float) -> Op:
    """The entry starts at `at`: only the first Start counts, and not once it is closed."""
    return (_VOUCHER_STARTED, (at, SERVER_ACTOR, _detail("started_at", at), journal_id,
                               journal_id))


def voucher_ended(journal_id: int, at: float) -> Op:
    """The entry ends at `at` unless it is already closed (by hand or a first Stop)."""
    return (_VOUCHER_ENDED, (at, SERVER_ACTOR, _detail("ended_at", at), journal_id,
                             journal_id))


def voucher_unused(journal_id: int, at: float) -> Op:
    """The entry's voucher was never used: it ends at `at` (its TTL), marked unused,
    unless it is already closed."""
    return (_VOUCHER_ENDED, (at, SERVER_ACTOR, _detail("ended_at", at, unused=True,
                                                     reason="voucher never used"),
                             journal_id, journal_id))


def _detail(field: str, at: float, **more: Any) -> str:
    """An event's detail as the journal keeps it (built here, not by SQLite's
    json_object, so the statement runs on PostgreSQL too)."""
    return json.dumps({"field": field, "value": at, **more})


# Per voucher Accounting-Start, and per end of a voucher's password (Stop, NAS
# reboot, reaper, lifetime).
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("journal.voucher_started", _VOUCHER_STARTED,
     (0.0, SERVER_ACTOR, _detail("started_at", 0.0), 1, 1)),
    ("journal.voucher_ended", _VOUCHER_ENDED,
     (0.0, SERVER_ACTOR, _detail("ended_at", 0.0), 1, 1)),
]
