"""What is kept of each one-time password and voucher (Rules §5–§9).

Writes are `Op`s that the caller commits with the rest of its request
(`Store.write`); reads are typed. `otp.PasswordBook` decides, this only keeps.
Every statement is answered from an index over live rows or a bounded time range
(issue 18): `HOT` lists them for the plan test.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, NamedTuple

from radiusd.store.backend import Backend, Op

_COLUMNS = (
    "id, login, kind, state, secret, language, issued_at, unclaimed_until, claimed_at, "
    "device, nas, nas_address, class_token, attempts, request_device, request_nas, journal_id"
)
# `state != 'expired'` makes the partial index `passwords_live` usable, the IN turns
# its scan into a search (issued and active are the only other states).
_LIVE = (f"SELECT {_COLUMNS} FROM passwords "
         "WHERE state != 'expired' AND state IN ('issued', 'active')")
_LIVE_VOUCHER = (f"SELECT {_COLUMNS} FROM passwords "
                 "WHERE login = ? AND state IN ('issued', 'active') AND kind = 'voucher'")
_ISSUED_SINCE = ("SELECT login, request_device, request_nas, issued_at, secret FROM passwords "
                 "WHERE issued_at > ? AND kind = 'phone' ORDER BY issued_at")
_INSERT = """
INSERT INTO passwords (id, login, kind, state, secret, language, issued_at, unclaimed_until,
    request_device, request_nas, journal_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SAVE = """
UPDATE passwords SET state = ?, claimed_at = ?, device = ?, nas = ?, nas_address = ?,
    class_token = ?, attempts = ?, expired_at = ?, expire_reason = ?
WHERE id = ?
"""
_EXPIRE_BY_CLASS = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ?
WHERE class_token = ? AND state != 'expired'
"""
_EXPIRE_BY_ID = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ?
WHERE id = ? AND state != 'expired'
"""
# The outbox row is written by the issue itself (Rules §6: the SMS is queued in the
# same transaction as the password).
_QUEUE_SMS = """
INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, attempts,
    next_attempt_at)
VALUES (?, ?, ?, ?, ?, 'queued', 0, ?)
"""


@dataclass(frozen=True, slots=True)
class PasswordRow:
    """A live password as stored (the code sealed, `sealing.py`)."""

    id: int
    login: str
    kind: str  # phone | voucher
    state: str  # issued | active
    secret: bytes
    language: str
    issued_at: float
    unclaimed_until: float
    claimed_at: float | None
    device: str | None
    nas: str | None
    nas_address: str | None
    class_token: str | None
    attempts: int
    request_device: str | None
    request_nas: str | None
    journal_id: int | None


class Issue(NamedTuple):
    """A phone password issued recently: what the SMS limits and Rules §9 remember."""

    login: str
    request_device: str | None
    request_nas: str | None
    issued_at: float
    secret: bytes


def _row(r: Any) -> PasswordRow:
    return PasswordRow(*(r[i] for i in range(17)))


async def live(db: Backend) -> list[PasswordRow]:
    """Every password not expired (start-up): read along `passwords_live`."""
    return [_row(r) for r in await db.fetchall(_LIVE)]


async def live_voucher(db: Backend, login: str) -> list[PasswordRow]:
    """The live voucher(s) of `login` (Rules §10): `radiusd journal` makes and closes
    them in another process, so the server asks the database."""
    return [_row(r) for r in await db.fetchall(_LIVE_VOUCHER, (login,))]


async def issued_since(db: Backend, since: float) -> list[Issue]:
    """Phone passwords issued after `since`, oldest first (start-up: the last day's
    limits, and each number's newest code for Rules §9). Bounded by the window, not
    by history: `passwords_issued`."""
    rows = await db.fetchall(_ISSUED_SINCE, (since,))
    return [Issue(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def insert(*, id: int, login: str, kind: str, state: str, secret: bytes, language: str,
           issued_at: float, unclaimed_until: float, request_device: str | None,
           request_nas: str | None, journal_id: int | None) -> Op:
    """A new password (Rules §5)."""
    return (_INSERT, (id, login, kind, state, secret, language, issued_at, unclaimed_until,
                      request_device, request_nas, journal_id))


def save(*, id: int, state: str, claimed_at: float | None, device: str | None,
         nas: str | None, nas_address: str | None, class_token: str | None, attempts: int,
         expired_at: float | None, expire_reason: str | None) -> Op:
    """A password's state after a check, claim or expiry (Rules §7–§9)."""
    return (_SAVE, (state, claimed_at, device, nas, nas_address, class_token, attempts,
                    expired_at, expire_reason, id))


def expire_by_class(class_token: str, at: float, reason: str) -> Op:
    """Rules §8: the password named by a session's Class is dead, whatever memory says."""
    return (_EXPIRE_BY_CLASS, (at, reason, class_token))


def expire_by_id(password_id: int, at: float, reason: str) -> Op:
    """Rules §9: this password is dead (a no-op when it already is)."""
    return (_EXPIRE_BY_ID, (at, reason, password_id))


def queue_sms(*, id: int, password_id: int, recipient: str, body: bytes, at: float) -> Op:
    """Rules §6: the password's SMS, queued with it, due now."""
    return (_QUEUE_SMS, (id, password_id, recipient, body, at, at))


# Per request (Get password, login, Stop, a voucher name), per outbox give-up, and
# the start-up reads (issue 18 item 7: start stays fast whatever the history).
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("passwords.insert", _INSERT,
     (1, "+77010000000", "phone", "issued", b"x", "en", 0.0, 300.0, None, None, None)),
    ("passwords.save", _SAVE,
     ("active", 0.0, "aabbccddeeff", "nas", "10.0.0.1", "rd1.x", 0, None, None, 1)),
    ("passwords.expire_by_class", _EXPIRE_BY_CLASS, (0.0, "stop", "rd1.x")),
    ("passwords.expire_by_id", _EXPIRE_BY_ID, (0.0, "sms_failed", 1)),
    ("passwords.queue_sms", _QUEUE_SMS, (1, 1, "+77010000000", b"x", 0.0, 0.0)),
    ("passwords.live_voucher", _LIVE_VOUCHER, ("pc-7-abc",)),
    ("passwords.live", _LIVE, ()),
    ("passwords.issued_since", _ISSUED_SINCE, (0.0,)),
]


# The admin CLI's (`radiusd journal`, synchronous; not per request).
_ISSUE_VOUCHER = """
INSERT INTO passwords (id, login, kind, state, secret, language, issued_at,
    unclaimed_until, attempts, journal_id)
VALUES (?, ?, 'voucher', 'issued', ?, ?, ?, ?, 0, ?)
"""
_EXPIRE_VOUCHERS_OF_ENTRY = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = 'journal-closed'
WHERE journal_id = ? AND kind = 'voucher' AND state != 'expired'
"""
_SEALED_TABLES = ("SELECT name FROM sqlite_master WHERE type = 'table'"
                  " AND name IN ('passwords', 'sms_outbox')")
_ANY_ROW = {t: f"SELECT EXISTS (SELECT 1 FROM {t})" for t in ("passwords", "sms_outbox")}


def issue_voucher(*, id: int, login: str, secret: bytes, language: str, issued_at: float,
                  unclaimed_until: float, journal_id: int) -> Op:
    """Rules §10: the password of a journal entry's computer, issued with the entry."""
    return (_ISSUE_VOUCHER, (id, login, secret, language, issued_at, unclaimed_until,
                             journal_id))


def expire_vouchers_of_entry(journal_id: int, at: float) -> Op:
    """Rules §10: an entry closed by hand takes its voucher, still usable, with it."""
    return (_EXPIRE_VOUCHERS_OF_ENTRY, (at, journal_id))


def sealed_rows_exist(conn: sqlite3.Connection) -> bool:
    """Whether the database holds passwords or SMS (both sealed with the `[otp]` key),
    on a database of any schema version (or none)."""
    tables = {r[0] for r in conn.execute(_SEALED_TABLES)}
    return any(conn.execute(_ANY_ROW[t]).fetchone()[0] for t in sorted(tables))
