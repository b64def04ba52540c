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

Plain functions over a synchronous connection in autocommit mode (SQLite's or
PostgreSQL's, as `radiusd.store.backend.connect_sync` makes it) and an explicit `now`; writes run in
`BEGIN IMMEDIATE` so they queue behind the running server instead of failing. What
is kept, and how, is `radiusd.store.journal`'s.
"""

from __future__ import annotations

import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from radiusd.store import journal as kept
from radiusd.store import passwords, retention
from radiusd.store.backend import Op, SyncConnection
from radiusd.store.journal import CURRENT as CURRENT
from radiusd.store.journal import FIELDS as FIELDS
from radiusd.store.journal import SERVER_ACTOR as SERVER_ACTOR
from radiusd.store.journal import TEXT_FIELDS as TEXT_FIELDS
from radiusd.store.journal import TIME_FIELDS as TIME_FIELDS
from radiusd.store.journal import Entry as Entry
from radiusd.store.journal import Event as Event

REQUIRED = ("surname", "name", "computer")  # Rules §10; the patronymic only "if any"
MAX_TEXT = 200

VOUCHER_UNCLAIMED_SECONDS = 86400.0  # a voucher not used within a day expires
VOUCHER_LOGIN_TRIES = 50
# Entries per query of a list or export: each is a short read of its own, so a long
# export never holds one snapshot (the WAL stays small).
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


def open_entry(
    conn: SyncConnection, now: float, person: Person, actor: str, *,
    store_document_number: bool = False, vouchers: VoucherSettings | None = None,
    venue: str | None = None,
) -> Opened:
    """Record a person starting at a computer now; with `vouchers`, also issue the
    login/password that computer's session will use (stored sealed, never in clear)."""
    fields = {f: clean_text(f, getattr(person, f)) for f in TEXT_FIELDS}
    if fields["document_number"] and not store_document_number:
        raise JournalError(
            "document numbers are not kept ([journal] store_document_number = false): "
            "leave out --document-number, or set it to true in the config file"
        )
    with kept.transaction(conn):
        voucher = _new_voucher(conn, vouchers) if vouchers else None
        entry_id = kept.open_entry(conn, fields, now, voucher.login if voucher else None,
                                   venue)
        ops = [kept.event(entry_id, now, actor, "open", {})]
        if voucher and vouchers:
            ops.append(_voucher_password(now, entry_id, voucher, vouchers))
        kept.run(conn, ops)
    return Opened(get_entry(conn, entry_id), voucher)


def _new_voucher(conn: SyncConnection, settings: VoucherSettings) -> Voucher:
    """A login "v" + 6 digits used by no password or entry still on record (so one
    login names one journal entry for as long as the data is kept)."""
    for _ in range(VOUCHER_LOGIN_TRIES):
        login = f"v{secrets.randbelow(10**6):06d}"
        if not kept.voucher_login_taken(conn, login):
            code = "".join(secrets.choice("0123456789") for _ in range(settings.length))
            return Voucher(login, code)
    raise JournalError("no free voucher login found: run `radiusd purge` to drop old data")


def _voucher_password(now: float, entry_id: int, voucher: Voucher,
                      settings: VoucherSettings) -> Op:
    return passwords.issue_voucher(
        id=secrets.randbits(62), login=voucher.login,
        secret=settings.sealer.seal(voucher.password.encode(), aad=b"otp"),
        language=settings.language, issued_at=now,
        unclaimed_until=now + settings.unclaimed_seconds, journal_id=entry_id,
    )


def get_entry(conn: SyncConnection, entry_id: int) -> Entry:
    entry = kept.entry(conn, entry_id)
    if entry is None:
        raise JournalError(
            f"there is no journal entry {entry_id}: see the ids with `radiusd journal list`"
        )
    return entry


def list_entries(
    conn: SyncConnection, *, since: float | None = None, until: float | None = None,
    computer: str | None = None, open_only: bool = False, venue: str | None = None,
) -> list[Entry]:
    """Entries online at some moment of [since, until) (an open entry is online until
    it is closed), oldest first."""
    return list(iter_entries(conn, since=since, until=until, computer=computer,
                             open_only=open_only, venue=venue))


def iter_entries(
    conn: SyncConnection, *, since: float | None = None, until: float | None = None,
    computer: str | None = None, open_only: bool = False, chunk: int = CHUNK,
    venue: str | None = None,
) -> Iterator[Entry]:
    """`list_entries` as it reads: `chunk` entries per query along `journal_span`'s
    start index, so memory stays flat and a window is answered from the index. An
    entry that ends at or after `since` began at most the longest closed entry before
    it (`journal_span_length`), or is still open (`journal_span_open`)."""
    wanted = unicodedata.normalize("NFC", computer).strip() if computer is not None else None
    for entry in kept.entries(conn, since, until, open_only, chunk):
        if (wanted is None or entry.computer == wanted) \
                and (venue is None or entry.venue == venue):
            yield entry


def close_entry(conn: SyncConnection, now: float, entry_id: int, at: float,
                actor: str) -> Entry:
    """Set the end time (Rules §10). A voucher still usable dies with the entry."""
    with kept.transaction(conn):
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
        kept.run(conn, [kept.event(entry_id, now, actor, "close",
                                   {"field": "ended_at", "value": at}),
                        passwords.expire_vouchers_of_entry(entry_id, now)])
    return get_entry(conn, entry_id)


def correct_entry(
    conn: SyncConnection, now: float, entry_id: int, field: str, value: str | float,
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
    with kept.transaction(conn):
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
        kept.run(conn, [kept.event(entry_id, now, actor, "correct", detail)])
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


def history(conn: SyncConnection, entry_id: int) -> list[Event]:
    """Every event of an entry, oldest first: the audit trail."""
    get_entry(conn, entry_id)
    return kept.events(conn, entry_id)


def first_written(conn: SyncConnection, entry_id: int) -> dict[str, object] | None:
    """The entry as first written, column by column (what `history` changed)."""
    return kept.first_written(conn, entry_id)


# Server side (vouchers): ops for the server's own transaction. Rules §10 wants the
# start and end of the *Internet session*, so the voucher's Accounting-Start time
# replaces the time the entry was opened, and its Accounting-Stop closes it.

def voucher_session_started_ops(journal_id: int, at: float) -> list[Op]:
    """The entry starts at `at`: only the first Start counts, and not once it is closed."""
    return [kept.voucher_started(journal_id, at)]


def voucher_session_ended_ops(journal_id: int, at: float) -> list[Op]:
    """The entry ends at `at` unless it is already closed (by hand or a first Stop)."""
    return [kept.voucher_ended(journal_id, at)]


def voucher_unused_ops(journal_id: int, at: float) -> list[Op]:
    """A voucher never used ends its entry at its TTL, marked unused (the event's
    detail says `"unused": true`), unless the entry is already closed."""
    return [kept.voucher_unused(journal_id, at)]


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


def purge_step(conn: SyncConnection, cutoff: float, after: tuple[float, int] | None,
               limit: int, *, dry_run: bool = False) -> tuple[int, int, tuple[float, int] | None]:
    """One step of retention in the caller's transaction: up to `limit` entries that
    ended before `cutoff`, after `after` in (start, id) order, deleted with their events
    (with `dry_run` only counted). Returns (entries, events, where the next step
    starts, or None when none is left). Found along `journal_span`: an entry that
    ended before the cutoff began before it, or at most the shortest entry's
    negative length after it."""
    return retention.journal_step(conn, cutoff, after, limit, dry_run=dry_run)
