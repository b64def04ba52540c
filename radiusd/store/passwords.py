"""What is kept of each one-time password and voucher (Rules §5–§9).

Writes are `Op`s that the caller commits with the rest of its request
(`Store.write`); reads are typed. `otp.PasswordBook` decides, this only keeps.
Every statement is answered from an index over live rows or a bounded time range
(issue 18): `HOT` lists them for the plan test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from radiusd.store.backend import (
    KEYED,
    PG_FORMS,
    Backend,
    Op,
    PointReads,
    per_key,
    point_reads,
)
from radiusd.store.quick import QuickReads

_COLUMNS = (
    "id, login, kind, state, secret, language, issued_at, unclaimed_until, claimed_at, "
    "device, nas, nas_address, class_token, attempts, request_device, request_nas, journal_id"
)
_LIVE_VOUCHER = (f"SELECT {_COLUMNS} FROM passwords "
                 "WHERE login = ? AND state IN ('issued', 'active') AND kind = 'voucher'")
_INSERT = """
INSERT INTO passwords (id, login, kind, state, secret, language, issued_at, unclaimed_until,
    request_device, request_nas, journal_id, code_tag)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Issue 12: the login path reads the number's live passwords from the database at
# every request (`passwords_login`), so what any node did is what this one sees.
_LIVE_OF = (f"SELECT {_COLUMNS} FROM passwords "
            "WHERE login = ? AND state IN ('issued', 'active')")
# The same for many logins at once (PostgreSQL only: an array of logins; `batched`).
_LIVE_OF_ANY = per_key(_COLUMNS, "passwords", "login", "state IN ('issued', 'active')")
# Rules §9: the number's newest password (its code must not come again), and whether
# a code is live for anybody, by its keyed tag (`passwords_code_tag`).
_NEWEST_OF = ("SELECT code_tag, secret, state, expire_reason FROM passwords "
              "WHERE login = ? ORDER BY issued_at DESC LIMIT 1")
_TAG_LIVE = "SELECT 1 FROM passwords WHERE code_tag = ? AND state != 'expired' LIMIT 1"
_BY_CLASS = (f"SELECT {_COLUMNS} FROM passwords "
             "WHERE class_token = ? AND state != 'expired'")
_BY_CLASS_ANY = per_key(_COLUMNS, "passwords", "class_token", "state != 'expired'",
                        partial=True)  # passwords_class: live passwords by Class
_ACTIVE_AT_NAS = (f"SELECT {_COLUMNS} FROM passwords WHERE state != 'expired' "
                  "AND state = 'active' AND nas = ? AND nas_address = ?")
_DYING = (f"SELECT {_COLUMNS} FROM passwords "
          "WHERE state != 'expired' AND state IN ('issued', 'active') "
          "AND ((state = 'issued' AND unclaimed_until <= ?) OR issued_at <= ?)")
# The rules as one statement each (issue 12: the database enforces them, whichever
# node asks; `Store.run` returns what they changed).
_CLAIM = """
UPDATE passwords SET state = 'active', claimed_at = ?, device = ?, nas = ?, nas_address = ?,
    class_token = ?
WHERE id = ? AND state = 'issued' AND attempts < ? AND unclaimed_until > ? AND issued_at > ?
RETURNING id
"""
_COUNT_WRONG = """
UPDATE passwords SET attempts = attempts + 1,
    state = CASE WHEN attempts + 1 >= ? THEN 'expired' ELSE state END,
    expired_at = CASE WHEN attempts + 1 >= ? THEN ? ELSE expired_at END,
    expire_reason = CASE WHEN attempts + 1 >= ? THEN 'attempts' ELSE expire_reason END
WHERE id = ? AND state != 'expired'
RETURNING state
"""
_EXPIRE_ISSUED = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ?
WHERE id = ? AND state = 'issued'
"""
_SUPERSEDE = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = 'superseded'
WHERE login = ? AND state = 'issued' AND kind = 'phone'
"""
_EXPIRE_AT_NAS = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ?
WHERE state != 'expired' AND state = 'active' AND nas = ? AND nas_address = ?
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
    next_attempt_at, venue)
VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?)
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


def _row(r: Any) -> PasswordRow:
    return PasswordRow(*(r[i] for i in range(17)))


def batched(db: Backend) -> PointReads | None:
    """PostgreSQL: the logins' reads made together (`PointReads`), one statement per
    batch instead of a round trip each. None for SQLite, whose reads are local."""
    return point_reads(db, _LIVE_OF_ANY, key_index=1)


async def live_of(db: Backend, login: str, quick: QuickReads | None = None,
                  together: PointReads | None = None) -> list[PasswordRow]:
    """The live passwords of `login` (issued and active), as the database has them
    (on the loop's thread through ``quick`` when it can, in a batch with other logins'
    through ``together`` on PostgreSQL)."""
    rows: Sequence[Any] | None = quick.fetchall(_LIVE_OF, (login,)) if quick else None
    if rows is None:
        rows = (await together.get(login) if together is not None
                else await db.fetchall(_LIVE_OF, (login,)))
    return [_row(r) for r in rows]


class Newest(NamedTuple):
    """A number's newest password: its code's tag and sealed code, and how it ended."""

    code_tag: str | None
    secret: bytes
    state: str
    expire_reason: str | None


async def newest_of(db: Backend, login: str) -> Newest | None:
    r = await db.fetchone(_NEWEST_OF, (login,))
    return None if r is None else Newest(r[0], r[1], r[2], r[3])


async def tag_live(db: Backend, code_tag: str) -> bool:
    """Is a code with this tag live for anybody (Rules §9)?"""
    return await db.fetchone(_TAG_LIVE, (code_tag,)) is not None


def batched_by_class(db: Backend) -> PointReads | None:
    """PostgreSQL: the Stops' reads by Class made together (`PointReads`)."""
    return point_reads(db, _BY_CLASS_ANY, key_index=12)


async def by_class(db: Backend, class_token: str,
                   together: PointReads | None = None) -> PasswordRow | None:
    """The live password our Class value names (Rules §8); in a batch with other
    requests' through ``together`` on PostgreSQL."""
    if together is not None:
        rows = await together.get(class_token)
        r = rows[0] if rows else None
    else:
        r = await db.fetchone(_BY_CLASS, (class_token,))
    return None if r is None else _row(r)


async def active_at_nas(db: Backend, nas: str, nas_address: str) -> list[PasswordRow]:
    """The passwords bound to a NAS (its Accounting-On/Off, RFC 2866 §5.1)."""
    return [_row(r) for r in await db.fetchall(_ACTIVE_AT_NAS, (nas, nas_address))]


async def dying(db: Backend, now: float, born_before: float) -> list[PasswordRow]:
    """Live passwords that time alone has killed: unclaimed past their TTL at `now`, or
    issued before `born_before` (max lifetime). Along `passwords_live`."""
    rows = await db.fetchall(_DYING, (now, born_before), slow=True)
    return [_row(r) for r in rows]


def claim(*, id: int, device: str | None, nas: str, nas_address: str, class_token: str,
          max_attempts: int, now: float, born_after: float) -> Op:
    """Rules §7-§8: bind an issued password to this device, once: returns its id only
    if it was still issued, unclaimed, in time and not burned (`Store.run`)."""
    return (_CLAIM, (now, device, nas, nas_address, class_token, id, max_attempts, now,
                     born_after))


def count_wrong(id: int, max_attempts: int, now: float) -> Op:
    """Rules §7: one wrong try; at `max_attempts` the password dies. Returns its state
    after it ('expired' when this try burned it), nothing when it was already dead."""
    return (_COUNT_WRONG, (max_attempts, max_attempts, now, max_attempts, id))


def expire_issued(password_id: int, at: float, reason: str) -> Op:
    """Rules §6, §9: an unclaimed password dies (superseded, its SMS failed); one in
    use is left alone."""
    return (_EXPIRE_ISSUED, (at, reason, password_id))


def supersede(login: str, at: float) -> Op:
    """Rules §9: a number's unclaimed password dies when a newer one is issued (run in
    the new one's transaction, before its insert)."""
    return (_SUPERSEDE, (at, login))


def expire_at_nas(nas: str, nas_address: str, at: float, reason: str) -> Op:
    """Accounting-On/Off (RFC 2866 §5.1): every password bound to that NAS dies."""
    return (_EXPIRE_AT_NAS, (at, reason, nas, nas_address))


async def live_voucher(db: Backend, login: str, quick: QuickReads | None = None
                       ) -> list[PasswordRow]:
    """The live voucher(s) of `login` (Rules §10): `radiusd journal` makes and closes
    them in another process, so the server asks the database (on the loop's thread
    through ``quick`` when it can: every login that is not a phone number asks)."""
    rows: Sequence[Any] | None = quick.fetchall(_LIVE_VOUCHER, (login,)) if quick else None
    if rows is None:
        rows = await db.fetchall(_LIVE_VOUCHER, (login,))
    return [_row(r) for r in rows]


def insert(*, id: int, login: str, kind: str, state: str, secret: bytes, language: str,
           issued_at: float, unclaimed_until: float, request_device: str | None,
           request_nas: str | None, journal_id: int | None, code_tag: str | None = None) -> Op:
    """A new password (Rules §5)."""
    return (_INSERT, (id, login, kind, state, secret, language, issued_at, unclaimed_until,
                      request_device, request_nas, journal_id, code_tag))


def expire_by_class(class_token: str, at: float, reason: str) -> Op:
    """Rules §8: the password named by a session's Class is dead, whatever memory says."""
    return (_EXPIRE_BY_CLASS, (at, reason, class_token))


def expire_by_id(password_id: int, at: float, reason: str) -> Op:
    """Rules §9: this password is dead (a no-op when it already is)."""
    return (_EXPIRE_BY_ID, (at, reason, password_id))


def queue_sms(*, id: int, password_id: int, recipient: str, body: bytes, at: float,
              venue: str = "") -> Op:
    """Rules §6: the password's SMS, queued with it, due now; ``venue`` names whose
    provider and sender send it ("": the top-level [sms], radiusd.venues)."""
    return (_QUEUE_SMS, (id, password_id, recipient, body, at, at, venue or None))


# Rules §8 without accounting (issue 13): accounting's first word about a password
# marks it seen; one in use and never seen within the grace is single-use.
_SEEN_BY_CLASS = """
UPDATE passwords SET acct_seen_at = ?
WHERE class_token = ? AND state != 'expired' AND acct_seen_at IS NULL
"""
_SEEN_BY_LOGIN = """
UPDATE passwords SET acct_seen_at = ?
WHERE login = ? AND state = 'active' AND device = ? AND acct_seen_at IS NULL
"""
# Both set a time, never a state (no counter moves), and only `_UNSEEN` reads it, as
# NULL or not; so any two of them in one group commit give the same outcome in either
# order but for which of two in-flight requests' times is kept, and no other keyed
# statement touches passwords: no key (`backend.rounds`). Other statements on
# passwords are not keyed: a request holding one keeps its place.
KEYED[_SEEN_BY_LOGIN] = KEYED[_SEEN_BY_CLASS] = lambda params: None
# PostgreSQL: functions of migration 14 that update only when there is a password to
# mark. Its counters are kept by statement triggers, which fire for every UPDATE of
# passwords, even one that changes nothing, and these run at every Start and
# Interim-Update. The login's rows are looked up apart (`backend.apart`): a generic
# plan made while the table was empty was seen walking `passwords_unseen` (every
# password in use and not yet seen) for each Start.
PG_FORMS[_SEEN_BY_LOGIN] = "SELECT passwords_seen_by_login(?, ?, ?)"
PG_FORMS[_SEEN_BY_CLASS] = "SELECT passwords_seen_by_class(?, ?)"
_UNSEEN = (f"SELECT {_COLUMNS} FROM passwords"
           " WHERE state = 'active' AND acct_seen_at IS NULL AND claimed_at <= ?")
_EXPIRE_LIVE_OF = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ?
WHERE login = ? AND state IN ('issued', 'active')
"""


def seen_by_class(class_token: str, at: float) -> Op:
    """Accounting spoke of the password our Class names (Rules §8: it has a session)."""
    return (_SEEN_BY_CLASS, (at, class_token))


def seen_by_login(login: str, device: str, at: float) -> Op:
    """The same for a NAS that does not echo Class (RFC 2865 §5.25)."""
    return (_SEEN_BY_LOGIN, (at, login, device))


async def unseen(db: Backend, claimed_before: float) -> list[PasswordRow]:
    """Passwords in use since before `claimed_before` that accounting never spoke of
    (along `passwords_unseen`)."""
    return [_row(r) for r in await db.fetchall(_UNSEEN, (claimed_before,), slow=True)]


def expire_live_of(login: str, at: float, reason: str) -> Op:
    """Every live password of a number dies (a blocked number)."""
    return (_EXPIRE_LIVE_OF, (at, reason, login))


# Per request (Get password, login, Stop, a voucher name), per outbox give-up, and
# the start-up reads (issue 18 item 7: start stays fast whatever the history).
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("passwords.insert", _INSERT,
     (1, "+77010000000", "phone", "issued", b"x", "en", 0.0, 300.0, None, None, None, "t")),
    ("passwords.live_of", _LIVE_OF, ("+77010000000",)),
    ("passwords.newest_of", _NEWEST_OF, ("+77010000000",)),
    ("passwords.tag_live", _TAG_LIVE, ("t",)),
    ("passwords.by_class", _BY_CLASS, ("rd1.x",)),
    ("passwords.active_at_nas", _ACTIVE_AT_NAS, ("nas", "10.0.0.1")),
    ("passwords.dying", _DYING, (0.0, 0.0)),
    ("passwords.claim", _CLAIM, (0.0, "aabbccddeeff", "nas", "10.0.0.1", "rd1.x", 1, 5, 0.0,
                                 0.0)),
    ("passwords.count_wrong", _COUNT_WRONG, (5, 5, 0.0, 5, 1)),
    ("passwords.expire_issued", _EXPIRE_ISSUED, (0.0, "superseded", 1)),
    ("passwords.supersede", _SUPERSEDE, (0.0, "+77010000000")),
    ("passwords.expire_at_nas", _EXPIRE_AT_NAS, (0.0, "nas-reboot", "nas", "10.0.0.1")),
    ("passwords.expire_by_class", _EXPIRE_BY_CLASS, (0.0, "stop", "rd1.x")),
    ("passwords.expire_by_id", _EXPIRE_BY_ID, (0.0, "sms_failed", 1)),
    ("passwords.queue_sms", _QUEUE_SMS, (1, 1, "+77010000000", b"x", 0.0, 0.0, None)),
    ("passwords.live_voucher", _LIVE_VOUCHER, ("pc-7-abc",)),
    ("passwords.seen_by_class", _SEEN_BY_CLASS, (0.0, "rd1.x")),
    ("passwords.seen_by_login", _SEEN_BY_LOGIN, (0.0, "+77010000000", "aabbccddeeff")),
    ("passwords.unseen", _UNSEEN, (0.0,)),
    ("passwords.expire_live_of", _EXPIRE_LIVE_OF, (0.0, "blocked", "+77010000000")),
]
# Run on PostgreSQL only (tests/test_query_plans.py asserts them there).
PG_HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("passwords.live_of_any", _LIVE_OF_ANY, (["+77010000000", "+77010000001"],)),
    ("passwords.by_class_any", _BY_CLASS_ANY, (["rd1.x", "rd1.y"],)),
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
