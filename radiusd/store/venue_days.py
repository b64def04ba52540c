"""What each venue did, per calendar day (issue 15 item 5, `radiusd venues report`):
counters by name (`sms`, `logins`, `refused:REASON`) and the numbers that logged in,
as keyed tags (`sealing.Sealer.tag`: the number cannot be read back without the key).
`venue_figures.VenueFigures` counts and flushes; this only keeps.

The server adds to the counters in batches (every few seconds and at stop), never in
a request's transaction, so a flood of refused presses costs no write each.
`HOT` lists the statements the server runs for the plan test; the report's reads
are the admin CLI's, along the `day` indexes.
"""

from __future__ import annotations

from typing import Any

from radiusd.store.backend import Op, SyncConnection

_ADD = """
INSERT INTO venue_days (venue, day, name, value) VALUES (?, ?, ?, ?)
ON CONFLICT (venue, day, name) DO UPDATE SET value = venue_days.value + excluded.value
"""
_NUMBER = """
INSERT INTO venue_numbers (venue, day, number_tag) VALUES (?, ?, ?)
ON CONFLICT (venue, day, number_tag) DO NOTHING
"""
_COUNTS = """
SELECT venue, day, name, value FROM venue_days WHERE day >= ? AND day <= ?
ORDER BY venue, day, name
"""
_NUMBERS = """
SELECT venue, day, COUNT(*) FROM venue_numbers WHERE day >= ? AND day <= ?
GROUP BY venue, day
"""


def add(venue: str, day: str, name: str, value: int) -> Op:
    return (_ADD, (venue, day, name, value))


def number(venue: str, day: str, number_tag: str) -> Op:
    """A number (its keyed tag) that logged in at `venue` on `day` (counted once)."""
    return (_NUMBER, (venue, day, number_tag))


def report(conn: SyncConnection, first: str, last: str
           ) -> tuple[list[tuple[str, str, str, int]], dict[tuple[str, str], int]]:
    """The counters of days `first`..`last` (inclusive, "YYYY-MM-DD"), and the distinct
    numbers per (venue, day)."""
    counters = [(str(r[0]), str(r[1]), str(r[2]), int(r[3]))
                for r in conn.execute(_COUNTS, (first, last))]
    numbers = {(str(r[0]), str(r[1])): int(r[2])
               for r in conn.execute(_NUMBERS, (first, last))}
    return counters, numbers


# Per flush of a server's venue figures.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("venue_days.add", _ADD, ("cafe", "2026-12-06", "sms", 3)),
    ("venue_days.number", _NUMBER, ("cafe", "2026-12-06", "0123456789abcdef")),
]
