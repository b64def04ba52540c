"""What each venue did (issue 15 item 5): logins, SMS its presses queued, and presses
refused by reason, counted per process for /metrics (`radiusd_venue_*_total`, one
label per configured venue) and per calendar day of the venue for `radiusd venues
report` (flushed to `store.venue_days` every `FLUSH_SECONDS` and at stop, so a refused
press costs no write of its own). A client in no venue is not counted here (the
server-wide figures are /metrics' others).
"""

from __future__ import annotations

from collections import Counter

from radiusd.store import venue_days
from radiusd.store.backend import Op
from radiusd.venues import Venue

FLUSH_SECONDS = 5.0
MOST_PENDING = 50_000  # numbers waiting for a flush; past it the server flushes early


class VenueFigures:
    """Counters by venue: ``totals`` for /metrics ("VENUE\\tWHAT" -> n, where WHAT is
    `logins`, `sms` or `refused:REASON`), and what the next flush writes."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self._days: Counter[tuple[str, str, str]] = Counter()
        self._numbers: set[tuple[str, str, str]] = set()

    def count(self, venue: Venue, what: str, now: float, number: str | None = None) -> None:
        """One event at `venue` (`number`: the keyed tag of the number that logged in,
        `Sealer.tag`, so that no number is kept for the report)."""
        if not venue.name:
            return
        self.totals[f"{venue.name}\t{what}"] += 1
        day = venue.day(now)
        self._days[(venue.name, day, what)] += 1
        if number is not None:
            self._numbers.add((venue.name, day, number))

    @property
    def full(self) -> bool:
        return len(self._numbers) + len(self._days) >= MOST_PENDING

    def drain(self) -> list[Op]:
        """What to write now (and forget here): counters added, numbers inserted."""
        ops = [venue_days.add(v, d, what, n) for (v, d, what), n in sorted(self._days.items())]
        ops += [venue_days.number(v, d, tag) for v, d, tag in sorted(self._numbers)]
        self._days.clear()
        self._numbers.clear()
        return ops
