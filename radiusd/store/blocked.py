"""Blocked numbers (issue 13): a blocked number gets no password and no SMS.

`radiusd numbers block|unblock|list` writes and reads them (another process); the
server asks per "Get password" and per login, by primary key (`HOT`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from radiusd.store.backend import (
    Backend,
    Op,
    PointReads,
    SyncConnection,
    per_key,
    point_reads,
)
from radiusd.store.quick import QuickReads

_REASON = "SELECT reason FROM blocked_numbers WHERE login = ?"
# The same for many logins at once (PostgreSQL only: an array of logins; `batched`).
_REASON_ANY = per_key("login, reason", "blocked_numbers", "login")
_BLOCK = """
INSERT INTO blocked_numbers (login, since, reason, actor) VALUES (?, ?, ?, ?)
ON CONFLICT (login) DO UPDATE SET reason = excluded.reason
"""
_UNBLOCK = "DELETE FROM blocked_numbers WHERE login = ? RETURNING login"
_LIST = "SELECT login, since, reason, actor FROM blocked_numbers ORDER BY since, login"


class Blocked(NamedTuple):
    login: str
    since: float
    reason: str
    actor: str


def batched(db: Backend) -> PointReads | None:
    """PostgreSQL: the logins' blocked checks made together (`PointReads`), one
    statement per batch instead of a round trip each. None for SQLite."""
    return point_reads(db, _REASON_ANY, key_index=0)


async def reason_of(db: Backend, login: str, quick: QuickReads | None = None,
                    together: PointReads | None = None) -> str | None:
    """Why `login` is blocked ("" when no reason was given), or None when it is not
    (on the loop's thread through ``quick`` when it can, in a batch with other
    logins' through ``together`` on PostgreSQL)."""
    rows = quick.fetchall(_REASON, (login,)) if quick else None
    if rows is not None:
        return None if not rows else str(rows[0][0])
    if together is not None:
        found = await together.get(login)
        return None if not found else str(found[0][1])
    rows = list(await db.fetchall(_REASON, (login,)))
    return None if not rows else str(rows[0][0])


def block(login: str, at: float, reason: str, actor: str) -> Op:
    """Block a number (blocking it again changes only the reason; `since` stays)."""
    return (_BLOCK, (login, at, reason, actor))


async def unblock(db: Backend, login: str) -> bool:
    """Unblock; False when it was not blocked."""
    (rows,) = await db.run([(_UNBLOCK, (login,))])
    return bool(rows)


def listed(conn: SyncConnection) -> list[Blocked]:
    return [Blocked(r[0], float(r[1]), r[2], r[3]) for r in conn.execute(_LIST).fetchall()]


# Per "Get password" and per login.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("blocked.reason_of", _REASON, ("+77010000000",)),
]
# Run on PostgreSQL only (tests/test_query_plans.py asserts them there).
PG_HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("blocked.reason_of_any", _REASON_ANY, (["+77010000000", "+77010000001"],)),
]
