"""What `/metrics` reads from the database: counters kept as events happen, and gauges
of what is live now (issue 18 item 2: a scrape costs the same on a database of any
size).

How the counters are kept, and why this way: SQLite triggers on `passwords` and
`sms_outbox` (migration 6) add to a small summary table `counters(name, label,
value)` in the transaction that makes the event, so
- every writer is counted (the server, `radiusd journal` vouchers, `radiusd purge`,
  another process or node) and no policy code has to remember to;
- the figures are the database's, durable across restarts, exact (committed with
  the event or not at all), and read with one search of a few dozen rows;
- an existing database is counted once, when the migration runs.
Counting in memory from a start-up count was the other way: it needs a count over
history at every start (issue 18 item 7) and misses what other processes write.
A trigger costs one small UPSERT per event (a password issued, used or expired; an
SMS settled), never a read of history. (On PostgreSQL, one hot row per counter would
serialise concurrent writers: there the rows get a shard column, summed on read.)

What is counted (name, label):
- `passwords_issued`, `passwords_used`, `passwords_expired` (label: the reason):
  events, never lowered, so a purge does not make a Prometheus counter go down;
- `passwords` (label: 'expired') and `sms` (label: 'sent', 'failed', 'cancelled'):
  rows kept now in the states that only grow with history (a purge lowers them).
The live states (passwords 'issued', 'active'; SMS 'queued', 'sending') are counted
straight from their partial indexes: bounded by what is live, and always exact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from radiusd.store.backend import Backend

_TOTALS = "SELECT name, label, value FROM counters"
# `state != 'expired'` makes `passwords_live` usable, the IN turns its scan into a
# search (issued and active are the only other states).
_LIVE_PASSWORDS = """
SELECT state, COUNT(*) FROM passwords
WHERE state != 'expired' AND state IN ('issued', 'active') GROUP BY state
"""
_LIVE_SMS = """
SELECT 'queued', COUNT(*) FROM sms_outbox WHERE state = 'queued'
UNION ALL
SELECT 'sending', COUNT(*) FROM sms_outbox WHERE state = 'sending'
"""
_PING = "SELECT 1"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The database's figures for one scrape."""

    passwords: dict[str, int] = field(default_factory=dict)  # rows by state
    issued: int = 0  # ever
    used: int = 0  # ever logged a device in (Rules §7)
    expired: dict[str, int] = field(default_factory=dict)  # ever, by reason (Rules §8-§9)
    sms: dict[str, int] = field(default_factory=dict)  # rows by state (Rules §6)


async def snapshot(db: Backend) -> Snapshot:
    """Counters and live gauges: three reads, none of them over history."""
    kept: Counter[tuple[str, str]] = Counter()
    for name, label, value in await db.fetchall(_TOTALS, slow=True):
        kept[(str(name), str(label))] += int(value)
    passwords = {label: n for (name, label), n in kept.items() if name == "passwords"}
    passwords |= {str(s): int(n) for s, n in await db.fetchall(_LIVE_PASSWORDS, slow=True)}
    sms = {label: n for (name, label), n in kept.items() if name == "sms"}
    sms |= {str(s): int(n) for s, n in await db.fetchall(_LIVE_SMS, slow=True)}
    return Snapshot(
        passwords=passwords,
        issued=kept[("passwords_issued", "")],
        used=kept[("passwords_used", "")],
        expired={label: n for (name, label), n in kept.items() if name == "passwords_expired"},
        sms=sms,
    )


async def ping(db: Backend) -> None:
    """The store answers a read (`GET /healthz`)."""
    await db.fetchone(_PING, slow=True)


# Per scrape and per health check.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("counts.totals", _TOTALS, ()),
    ("counts.live_passwords", _LIVE_PASSWORDS, ()),
    ("counts.live_sms", _LIVE_SMS, ()),
    ("counts.ping", _PING, ()),
]
