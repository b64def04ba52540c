"""What is kept of each SMS on its way out (Rules §6): the `sms_outbox` rows and the
SMSC's references to them.

Writes are `Op`s that the worker commits (`Store.write`); reads are typed.
`sms.outbox.OutboxWorker` decides, this only keeps. An outbox round, a receipt and a
health check are answered from what is live, never from the sent history (issue 18):
- due and the next wake-up: partial index `sms_due` (state 'queued', by due time);
- abandoned claims and their leases: partial index `sms_sending` (state 'sending');
- the oldest queued (health, metrics): partial index `sms_waiting` (queued, by age);
- a delivery receipt: `sms_provider_ref` for a one-part text, `sms_parts_ref` for a
  part of a long one (each part's reference is a row of `sms_parts`, written with the
  'sent' state; `provider_ref` keeps the whole list, "M1,M2", as providers return it).
`HOT` lists every statement for the plan test.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from radiusd.store.backend import PG_FORMS, Backend, Op

# Queued rows due now, oldest due first, with their password's state (a password that
# died before its SMS left makes the SMS useless: `cancel`).
_DUE = """
SELECT o.id, o.password_id, o.recipient, o.body, o.created_at, o.attempts,
       p.state AS password_state, o.venue
FROM sms_outbox o LEFT JOIN passwords p ON p.id = o.password_id
WHERE o.state = 'queued' AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at LIMIT ?
"""
_ABANDONED = """
SELECT id, password_id, recipient, attempts FROM sms_outbox
WHERE state = 'sending' AND next_attempt_at <= ?
"""
# One row from each live state's index (`state IN (...)` could use neither partial
# index; ORDER BY ... LIMIT 1 keeps the planner on the index in that order).
_NEXT_DUE = """
SELECT MIN(at) FROM (
    SELECT (SELECT next_attempt_at FROM sms_outbox WHERE state = 'queued'
            ORDER BY next_attempt_at LIMIT 1) AS at
    UNION ALL
    SELECT (SELECT next_attempt_at FROM sms_outbox WHERE state = 'sending'
            ORDER BY next_attempt_at LIMIT 1) AS at
) AS live
"""
_OLDEST_QUEUED = """
SELECT created_at FROM sms_outbox WHERE state = 'queued' ORDER BY created_at LIMIT 1
"""
_CANCEL = """
UPDATE sms_outbox SET state = 'cancelled', last_error = 'password expired before sending'
WHERE id = ? AND state = 'queued'
"""
# Issue 12: claims and give-ups re-check the state in the statement and return the
# row only to the one worker (of any node) whose statement changed it; SQLite's one
# writer and PostgreSQL's row locks make that exactly once. On PostgreSQL the claim
# also skips a row another node's transaction holds (SKIP LOCKED: it is being sent
# or settled there): waiting for it inside a group commit that holds other rows
# could close a cycle with that node's batch, a deadlock PostgreSQL breaks only after
# `deadlock_timeout` (1 s) by failing a whole batch.
_CLAIM = """
UPDATE sms_outbox SET state = 'sending', attempts = attempts + 1, next_attempt_at = ?
WHERE id = ? AND state = 'queued'
RETURNING id
"""
PG_FORMS[_CLAIM] = """
UPDATE sms_outbox SET state = 'sending', attempts = attempts + 1, next_attempt_at = ?
WHERE id = (SELECT id FROM sms_outbox WHERE id = ? AND state = 'queued'
            FOR UPDATE SKIP LOCKED)
RETURNING id
"""
_FAIL_QUEUED = """
UPDATE sms_outbox SET state = 'failed', last_error = ? WHERE id = ? AND state = 'queued'
RETURNING id
"""
_FAIL_ABANDONED = """
UPDATE sms_outbox SET state = 'failed', last_error = ?
WHERE id = ? AND state = 'sending' AND next_attempt_at <= ?
RETURNING id
"""
_SENT = """
UPDATE sms_outbox SET state = 'sent', sent_at = ?, provider_ref = ?, last_error = NULL
WHERE id = ?
"""
_PART = "INSERT INTO sms_parts (sms_id, ref) VALUES (?, ?) ON CONFLICT DO NOTHING"
_RETRY = """
UPDATE sms_outbox SET state = 'queued', next_attempt_at = ?, last_error = ? WHERE id = ?
"""
_FAILED = "UPDATE sms_outbox SET state = 'failed', last_error = ? WHERE id = ?"
# A receipt names one part: the row whose whole reference it is, or the row one of
# whose parts it is. Two index searches, as a UNION of ids (PostgreSQL plans an OR
# with a subquery as a walk of the table; SQLite does either as MULTI-INDEX OR).
_RECEIPT = """
UPDATE sms_outbox SET delivery_state = ?, delivered_at = ?
WHERE id IN (SELECT id FROM sms_outbox WHERE provider_ref = ?
             UNION SELECT sms_id FROM sms_parts WHERE ref = ?)
"""


class DueSms(NamedTuple):
    """A queued SMS whose time has come (`body` sealed, `sealing.py`)."""

    id: int
    password_id: int
    recipient: str
    body: bytes
    created_at: float
    attempts: int
    password_state: str | None  # None: its password is gone
    venue: str | None = None  # whose provider and sender (radiusd.venues); None: [sms]


class Abandoned(NamedTuple):
    """An SMS a process claimed and never recorded an answer for (its lease ran out)."""

    id: int
    password_id: int
    recipient: str
    attempts: int


async def due(db: Backend, now: float, limit: int) -> list[DueSms]:
    """Queued SMS due at `now`, soonest first, at most `limit`."""
    return [DueSms(*r) for r in await db.fetchall(_DUE, (now, limit), slow=True)]


async def abandoned(db: Backend, now: float) -> list[Abandoned]:
    """SMS left in 'sending' whose lease ended before `now` (a process died)."""
    return [Abandoned(*r) for r in await db.fetchall(_ABANDONED, (now,), slow=True)]


async def next_due(db: Backend) -> float | None:
    """When the next queued SMS is due or the next lease runs out; None: nothing live."""
    row = await db.fetchone(_NEXT_DUE, slow=True)
    return None if row is None or row[0] is None else float(row[0])


async def oldest_queued(db: Backend) -> float | None:
    """When the oldest SMS still queued was created; None: none is queued."""
    row = await db.fetchone(_OLDEST_QUEUED, slow=True)
    return None if row is None or row[0] is None else float(row[0])


def cancel(sms_id: int) -> Op:
    """Its password died before the SMS left: not sent (Rules §6, no useless SMS)."""
    return (_CANCEL, (sms_id,))


def claim(sms_id: int, lease_until: float) -> Op:
    """Committed before the provider is called: at most once per press. Run it with
    `Store.run`: a row back means this worker has it; none, another one took it."""
    return (_CLAIM, (lease_until, sms_id))


def fail_queued(sms_id: int, error: str) -> Op:
    """Given up before sending (too old): returns the row only to the one who did."""
    return (_FAIL_QUEUED, (error[:500], sms_id))


def fail_abandoned(sms_id: int, error: str, now: float) -> Op:
    """Given up after a lost send (its lease ran out): returns the row only once."""
    return (_FAIL_ABANDONED, (error[:500], sms_id, now))


def sent(sms_id: int, at: float, ref: str | None) -> list[Op]:
    """The provider took it; `ref` is its reference, "M1,M2" for a text in parts
    (each part is also kept on its own, for the receipts that name one)."""
    ops: list[Op] = [(_SENT, (at, ref, sms_id))]
    if ref and "," in ref:
        ops += [(_PART, (sms_id, p)) for p in dict.fromkeys(ref.split(",")) if p]
    return ops


def retry(sms_id: int, at: float, error: str) -> Op:
    """Back to the queue, due at `at`."""
    return (_RETRY, (at, error[:500], sms_id))


def failed(sms_id: int, error: str) -> Op:
    """Given up (its password is voided by the caller's ops in the same commit)."""
    return (_FAILED, (error[:500], sms_id))


def receipt(ref: str, state: str, at: float) -> Op:
    """A delivery receipt (SMPP deliver_sm) for the SMS, or the part of one, that the
    SMSC called `ref`."""
    return (_RECEIPT, (state[:32], at, ref, ref))


# Per outbox round (every "Get password" starts one), per receipt, per health check
# and scrape.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("outbox.due", _DUE, (0.0, 64)),
    ("outbox.abandoned", _ABANDONED, (0.0,)),
    ("outbox.next_due", _NEXT_DUE, ()),
    ("outbox.oldest_queued", _OLDEST_QUEUED, ()),
    ("outbox.cancel", _CANCEL, (1,)),
    ("outbox.claim", _CLAIM, (60.0, 1)),
    ("outbox.sent", _SENT, (0.0, "M1", 1)),
    ("outbox.sent_part", _PART, (1, "M1")),
    ("outbox.retry", _RETRY, (2.0, "HTTP 503", 1)),
    ("outbox.failed", _FAILED, ("HTTP 403", 1)),
    ("outbox.fail_queued", _FAIL_QUEUED, ("max_age", 1)),
    ("outbox.fail_abandoned", _FAIL_ABANDONED, ("lost", 1, 0.0)),
    ("outbox.receipt", _RECEIPT, ("DELIVRD", 0.0, "M1", "M1")),
]
