"""What a venue's `sms_daily_budget` keeps (issue 15, Rules §6: every SMS costs money):
one row per venue and calendar day, `sent` so far. `radiusd.venues` decides the day,
`otp.PasswordBook.request` spends it; this only keeps.

The budget is exact, on any number of nodes: `reserve` is one conditional UPSERT
that adds one only while `sent` is below the budget and returns the row only then.
It runs as the guard of the press's own transaction (`Backend.run(..., guard=True)`):
the password, its SMS and the limits' counters are written only when it returned a
row, so N concurrent presses against B left send exactly min(N, B) SMS. SQLite has
one writer; on PostgreSQL the UPSERT takes the row's lock and re-checks `sent`
against the committed value (READ COMMITTED re-evaluates the WHERE of ON CONFLICT DO
UPDATE on the newest row version), so two nodes never both take the last one.

`HOT` lists every statement for the plan test.
"""

from __future__ import annotations

from typing import Any

from radiusd.store.backend import Backend, Op

_RESERVE = """
INSERT INTO sms_budget (venue, day, sent) VALUES (?, ?, 1)
ON CONFLICT (venue, day) DO UPDATE SET sent = sms_budget.sent + 1
WHERE sms_budget.sent < ?
RETURNING sent
"""
_SENT = "SELECT sent FROM sms_budget WHERE venue = ? AND day = ?"
_PRUNE = "DELETE FROM sms_budget WHERE day < ?"


def reserve(venue: str, day: str, budget: int) -> Op:
    """One SMS of `venue`'s budget for `day`: returns a row only when one was left
    (run it with `Backend.run`, first, with ``guard=True``)."""
    return (_RESERVE, (venue, day, budget))


async def sent(db: Backend, venue: str, day: str) -> int:
    """SMS of `venue`'s budget spent on `day` (a read: a press that finds it spent is
    refused without a write; the guard decides the rest)."""
    row = await db.fetchone(_SENT, (venue, day))
    return 0 if row is None else int(row[0])


def prune(before_day: str) -> Op:
    """Forget days before `before_day` (the reaper's tick)."""
    return (_PRUNE, (before_day,))


# Per "Get password" at a venue with a budget; pruning per reaper tick.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("budgets.reserve", _RESERVE, ("cafe", "2026-12-06", 100)),
    ("budgets.sent", _SENT, ("cafe", "2026-12-06")),
    ("budgets.prune", _PRUNE, ("2026-12-01",)),
]
