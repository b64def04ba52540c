"""Rules §10: the electronic journal of document-based access.

Where there is no mobile coverage the owner admits a person by identity document and
records surname, first name, patronymic (if any), the start and end time of the
Internet session and the number of the owner's computer.

The journal is a legal record, so a row of `journal` is written once and never
updated: everything that happens afterwards (the session starting on a voucher, the
entry being closed, a correction) is a new row of `journal_events` with who and
when. What an entry says *now* is its row with the latest event for each field
applied (`CURRENT`); list and export read that. The only deletion is `purge`
(retention), which removes whole entries with their events.

Plain functions over a `sqlite3.Connection` in autocommit mode (as
`radiusd.store.sqlite.connect_sync` makes it) and an explicit `now`; writes run in
`BEGIN IMMEDIATE` so they queue behind the running server instead of failing.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

# Fields an event may set, in export order. The row holds the first value.
TEXT_FIELDS = ("surname", "name", "patronymic", "computer", "document_type", "document_number")
TIME_FIELDS = ("started_at", "ended_at")
FIELDS = TEXT_FIELDS + TIME_FIELDS
REQUIRED = ("surname", "name", "computer")  # Rules §10; the patronymic only "if any"
MAX_TEXT = 200

VOUCHER_UNCLAIMED_SECONDS = 86400.0  # a voucher not used within a day expires
VOUCHER_LOGIN_TRIES = 50
SERVER_ACTOR = "radiusd"


def _latest(field: str) -> str:
    return (
        f"COALESCE((SELECT json_extract(e.detail, '$.value') FROM journal_events e"
        f" WHERE e.journal_id = j.id AND json_extract(e.detail, '$.field') = '{field}'"
        f" ORDER BY e.id DESC LIMIT 1), j.{field}) AS {field}"
    )


# The journal as it reads now: the first-written row with later events applied.
_CURRENT_COLUMNS = (
    "j.id AS id, j.opened_at AS opened_at, j.voucher_login AS voucher_login, "
    + ", ".join(_latest(f) for f in FIELDS)
    + ", (SELECT COUNT(*) FROM journal_events e WHERE e.journal_id = j.id"
    " AND e.event = 'correct') AS corrections"
)
CURRENT = f"SELECT {_CURRENT_COLUMNS} FROM journal j"
# Reads go along `journal_span` (migration 4): each entry's current start and end,
# kept by triggers from the same events, indexed. Rows per query: each is a short
# read of its own, so a long export never holds one snapshot (the WAL stays small).
CHUNK = 2000


class JournalError(Exception):
    """Bad input, worded for the operator: what is wrong and what to type instead."""


@dataclass(frozen=True, slots=True)
class Person:
    """What the owner copies from the identity document (Rules §10)."""

    surname: str
    name: str
    computer: str
    patronymic: str = ""
    document_type: str = ""
    document_number: str = ""


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


@dataclass(frozen=True, slots=True)
class Voucher:
    login: str
    password: str


class Sealer(Protocol):
    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes: ...


@dataclass(frozen=True, slots=True)
class VoucherSettings:
    """How to issue a voucher password; the sealer is the server's (`[otp]` key)."""

    sealer: Sealer
    length: int
    language: str
    unclaimed_seconds: float = VOUCHER_UNCLAIMED_SECONDS


@dataclass(frozen=True, slots=True)
class Opened:
    entry: Entry
    voucher: Voucher | None


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; BEGIN IMMEDIATE waits (busy timeout) for the server."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def clean_text(field: str, value: str) -> str:
    """NFC, trimmed, one line. Kazakh and Russian letters pass through unchanged."""
    text = unicodedata.normalize("NFC", value).strip()
    flag = "--" + field.replace("_", "-")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise JournalError(f"{flag} has a control character (a line break?): type it on one line")
    if len(text) > MAX_TEXT:
        raise JournalError(f"{flag} is longer than {MAX_TEXT} characters: shorten it")
    if not text and field in REQUIRED:
        example = {"surname": "Әбілқасымов", "name": "Нұрлан", "computer": "3"}[field]
        raise JournalError(f"{flag} is empty: type it as in the document, e.g. {flag} {example}")
    return text


def _event(journal_id: int, at: float, actor: str, event: str,
           detail: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO journal_events (journal_id, at, actor, event, detail) VALUES (?, ?, ?, ?, ?)",
        (journal_id, at, actor, event, json.dumps(detail, ensure_ascii=False)),
    )


def _run(conn: sqlite3.Connection, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
    for sql, params in ops:
        conn.execute(sql, params)


def open_entry(
    conn: sqlite3.Connection, now: float, person: Person, actor: str, *,
    store_document_number: bool = False, vouchers: VoucherSettings | None = None,
) -> Opened:
    """Record a person starting at a computer now; with `vouchers`, also issue the
    login/password that computer's session will use (stored sealed, never in clear)."""
    fields = {f: clean_text(f, getattr(person, f)) for f in TEXT_FIELDS}
    if fields["document_number"] and not store_document_number:
        raise JournalError(
            "document numbers are not kept ([journal] store_document_number = false): "
            "leave out --document-number, or set it to true in the config file"
        )
    with _write(conn):
        voucher = _new_voucher(conn, vouchers) if vouchers else None
        cur = conn.execute(
            "INSERT INTO journal (surname, name, patronymic, computer, document_type,"
            " document_number, opened_at, started_at, ended_at, voucher_login)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (*(fields[f] for f in TEXT_FIELDS), now, now, voucher.login if voucher else None),
        )
        entry_id = int(cur.lastrowid or 0)
        _run(conn, [_event(entry_id, now, actor, "open", {})])
        if voucher and vouchers:
            _insert_voucher(conn, now, entry_id, voucher, vouchers)
    return Opened(get_entry(conn, entry_id), voucher)


def _new_voucher(conn: sqlite3.Connection, settings: VoucherSettings) -> Voucher:
    """A login "v" + 6 digits used by no password or entry still on record (so one
    login names one journal entry for as long as the data is kept)."""
    for _ in range(VOUCHER_LOGIN_TRIES):
        login = f"v{secrets.randbelow(10**6):06d}"
        taken = conn.execute(
            "SELECT 1 FROM passwords WHERE login = ? UNION ALL"
            " SELECT 1 FROM journal WHERE voucher_login = ? LIMIT 1", (login, login),
        ).fetchone()
        if not taken:
            code = "".join(secrets.choice("0123456789") for _ in range(settings.length))
            return Voucher(login, code)
    raise JournalError("no free voucher login found: run `radiusd purge` to drop old data")


def _insert_voucher(conn: sqlite3.Connection, now: float, entry_id: int, voucher: Voucher,
                    settings: VoucherSettings) -> None:
    conn.execute(
        "INSERT INTO passwords (id, login, kind, state, secret, language, issued_at,"
        " unclaimed_until, attempts, journal_id)"
        " VALUES (?, ?, 'voucher', 'issued', ?, ?, ?, ?, 0, ?)",
        (
            secrets.randbits(62), voucher.login,
            settings.sealer.seal(voucher.password.encode(), aad=b"otp"), settings.language,
            now, now + settings.unclaimed_seconds, entry_id,
        ),
    )


def get_entry(conn: sqlite3.Connection, entry_id: int) -> Entry:
    row = conn.execute(f"SELECT * FROM ({CURRENT}) WHERE id = ?", (entry_id,)).fetchone()
    if row is None:
        raise JournalError(
            f"there is no journal entry {entry_id}: see the ids with `radiusd journal list`"
        )
    return _entry(row)


def _entry(row: tuple[Any, ...]) -> Entry:
    names = ("id", "opened_at", "voucher_login", *FIELDS, "corrections")
    return Entry(**dict(zip(names, row, strict=True)))


def list_entries(
    conn: sqlite3.Connection, *, since: float | None = None, until: float | None = None,
    computer: str | None = None, open_only: bool = False,
) -> list[Entry]:
    """Entries online at some moment of [since, until) (an open entry is online until
    it is closed), oldest first."""
    return list(iter_entries(conn, since=since, until=until, computer=computer,
                             open_only=open_only))


def iter_entries(
    conn: sqlite3.Connection, *, since: float | None = None, until: float | None = None,
    computer: str | None = None, open_only: bool = False, chunk: int = CHUNK,
) -> Iterator[Entry]:
    """`list_entries` as it reads: `chunk` entries per query along `journal_span`'s
    start index, so memory stays flat and a window is answered from the index. An
    entry that ends at or after `since` began at most the longest closed entry before
    it (`journal_span_length`), or is still open (`journal_span_open`)."""
    wanted = unicodedata.normalize("NFC", computer).strip() if computer is not None else None
    rows = _span_rows(conn, since, until, open_only, chunk)
    for row in rows:
        entry = _entry(row)
        if wanted is None or entry.computer == wanted:
            yield entry


_SPAN = f"SELECT {_CURRENT_COLUMNS}, s.started_at FROM journal_span s{{hint}}" \
    " JOIN journal j ON j.id = s.journal_id"


def _span_rows(conn: sqlite3.Connection, since: float | None, until: float | None,
               open_only: bool, chunk: int) -> Iterator[tuple[Any, ...]]:
    where: list[str] = []
    params: list[Any] = []
    lower = None
    if since is not None and not open_only:
        longest = conn.execute("SELECT MAX(ended_at - started_at) FROM journal_span"
                               " WHERE ended_at IS NOT NULL").fetchone()[0]
        lower = since - max(0.0, longest or 0.0)
        # Still open and begun before that: few (the open entries), from their index.
        early = conn.execute(
            _SPAN.format(hint=" INDEXED BY journal_span_open")
            + " WHERE s.ended_at IS NULL AND s.started_at < ?"
            + (" AND s.started_at < ?" if until is not None else "")
            + " ORDER BY s.started_at, s.journal_id",
            (lower, until) if until is not None else (lower,)).fetchall()
        yield from (r[:-1] for r in early)
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
        yield from (r[:-1] for r in batch)
        if len(batch) < chunk:
            return
        after = (batch[-1][-1], batch[-1][0])


def close_entry(conn: sqlite3.Connection, now: float, entry_id: int, at: float,
                actor: str) -> Entry:
    """Set the end time (Rules §10). A voucher still usable dies with the entry."""
    with _write(conn):
        entry = get_entry(conn, entry_id)
        if entry.ended_at is not None:
            raise JournalError(
                f"entry {entry_id} is already closed: to change its end time type "
                f"`radiusd journal correct {entry_id} --field ended_at --value TIME`"
            )
        _check_not_future(now, at)
        if at < entry.started_at:
            raise JournalError(
                f"end before start: entry {entry_id} started at {_shown(entry.started_at)};"
                f" give --at {_shown(entry.started_at)} or later"
            )
        _run(conn, [_event(entry_id, now, actor, "close", {"field": "ended_at", "value": at})])
        conn.execute(
            "UPDATE passwords SET state = 'expired', expired_at = ?,"
            " expire_reason = 'journal-closed'"
            " WHERE journal_id = ? AND kind = 'voucher' AND state != 'expired'",
            (now, entry_id),
        )
    return get_entry(conn, entry_id)


def correct_entry(
    conn: sqlite3.Connection, now: float, entry_id: int, field: str, value: str | float,
    actor: str, *, reason: str = "", store_document_number: bool = False,
) -> Entry:
    """A correction is a new event with who, when and why; the first-written value and
    every earlier correction stay on record (`history`)."""
    if field not in FIELDS:
        raise JournalError(f"--field {field!r} cannot be corrected: use one of {', '.join(FIELDS)}")
    if field == "document_number" and not store_document_number:
        raise JournalError(
            "document numbers are not kept ([journal] store_document_number = false)"
        )
    reason = clean_text("reason", reason)
    with _write(conn):
        entry = get_entry(conn, entry_id)
        if field in TIME_FIELDS:
            if not isinstance(value, float | int):
                raise JournalError(f"--value for {field} must be a time, e.g. 2026-01-05T14:30")
            _check_times(now, entry, field, float(value))
            new: str | float = float(value)
        else:
            new = clean_text(field, str(value))
        if getattr(entry, field) == new:
            raise JournalError(f"nothing to correct: {field} of entry {entry_id} already is that")
        detail: dict[str, Any] = {"field": field, "value": new}
        if reason:
            detail["reason"] = reason
        _run(conn, [_event(entry_id, now, actor, "correct", detail)])
    return get_entry(conn, entry_id)


def _check_times(now: float, entry: Entry, field: str, value: float) -> None:
    _check_not_future(now, value)
    if field == "ended_at":
        if entry.ended_at is None:
            raise JournalError(
                f"entry {entry.id} is still open: close it with "
                f"`radiusd journal close {entry.id} --at TIME`"
            )
        if value < entry.started_at:
            raise JournalError(
                f"end before start: entry {entry.id} started at {_shown(entry.started_at)};"
                " give that time or later"
            )
    elif entry.ended_at is not None and value > entry.ended_at:
        raise JournalError(
            f"start after end: entry {entry.id} ended at {_shown(entry.ended_at)};"
            " give that time or earlier"
        )


def _check_not_future(now: float, at: float) -> None:
    if at > now + 60:
        raise JournalError(f"{_shown(at)} is in the future: give a time up to now")


def _shown(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="minutes")


def history(conn: sqlite3.Connection, entry_id: int) -> list[Event]:
    """Every event of an entry, oldest first: the audit trail."""
    get_entry(conn, entry_id)
    rows = conn.execute(
        "SELECT id, journal_id, at, actor, event, detail FROM journal_events"
        " WHERE journal_id = ? ORDER BY id", (entry_id,),
    )
    return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


# Server side (vouchers): ops for the server's own transaction. Rules §10 wants the
# start and end of the *Internet session*, so the voucher's Accounting-Start time
# replaces the time the entry was opened, and its Accounting-Stop closes it.

def voucher_session_started_ops(journal_id: int, at: float) -> list[tuple[str, tuple[Any, ...]]]:
    """The entry starts at `at`: only the first Start counts, and not once it is closed."""
    return [(
        "INSERT INTO journal_events (journal_id, at, actor, event, detail)"
        " SELECT id, ?, ?, 'start', json_object('field', 'started_at', 'value', ?)"
        " FROM journal WHERE id = ? AND NOT EXISTS (SELECT 1 FROM journal_events"
        " WHERE journal_id = ? AND event IN ('start', 'close'))",
        (at, SERVER_ACTOR, at, journal_id, journal_id),
    )]


def voucher_session_ended_ops(journal_id: int, at: float) -> list[tuple[str, tuple[Any, ...]]]:
    """The entry ends at `at` unless it is already closed (by hand or a first Stop)."""
    return [(
        "INSERT INTO journal_events (journal_id, at, actor, event, detail)"
        " SELECT id, ?, ?, 'close', json_object('field', 'ended_at', 'value', ?)"
        " FROM journal WHERE id = ? AND NOT EXISTS (SELECT 1 FROM journal_events"
        " WHERE journal_id = ? AND event = 'close')",
        (at, SERVER_ACTOR, at, journal_id, journal_id),
    )]


def purge_entries(conn: sqlite3.Connection, cutoff: float) -> int:
    """Retention: delete entries that ended before `cutoff`, with their events; open
    entries are kept whatever their age. Runs in the caller's transaction, all at
    once; `radiusd purge` goes in steps (`purge_step`)."""
    removed = 0
    after: tuple[float, int] | None = None
    while True:
        entries, _, after = purge_step(conn, cutoff, after, CHUNK)
        removed += entries
        if after is None:
            return removed


def purge_step(conn: sqlite3.Connection, cutoff: float, after: tuple[float, int] | None,
               limit: int, *, dry_run: bool = False) -> tuple[int, int, tuple[float, int] | None]:
    """One step of retention in the caller's transaction: up to `limit` entries that
    ended before `cutoff`, after `after` in (start, id) order, deleted with their events
    (with `dry_run` only counted). Returns (entries, events, where the next step
    starts, or None when none is left). Found along `journal_span`: an entry that
    ended before the cutoff began before it, or at most the shortest entry's
    negative length after it."""
    shortest = conn.execute("SELECT MIN(ended_at - started_at) FROM journal_span"
                            " WHERE ended_at IS NOT NULL").fetchone()[0]
    below = cutoff - min(0.0, shortest or 0.0)
    sql = "SELECT journal_id, started_at FROM journal_span WHERE started_at < ? AND ended_at < ?"
    params: list[Any] = [below, cutoff]
    if after is not None:
        sql += " AND started_at >= ? AND NOT (started_at = ? AND journal_id <= ?)"
        params += [after[0], after[0], after[1]]
    rows = conn.execute(sql + f" ORDER BY started_at, journal_id LIMIT {int(limit)}",
                        params).fetchall()
    ids = [r[0] for r in rows]
    events = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        events += conn.execute(f"SELECT COUNT(*) FROM journal_events WHERE journal_id IN"
                               f" ({marks})", chunk).fetchone()[0]
        if not dry_run:
            conn.execute(f"DELETE FROM journal_events WHERE journal_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM journal WHERE id IN ({marks})", chunk)
    nxt = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
    return len(ids), events, nxt
