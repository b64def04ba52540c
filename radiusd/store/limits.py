"""What the limits keep (Rules §6-§7), so that they hold across nodes (issue 12):
the per-number cooldown between two SMS, and the caps on SMS and wrong codes as
counters per cap, key and time bucket. `limits` decides, this only keeps.

- The cooldown is one upsert that succeeds only once the previous one has passed:
  of any number of concurrent presses for one number, on any nodes, exactly one
  gets a row back (`claim_cooldown`).
- A cap is a sum of bucket counters (`limit_counts`, a bucket is 1/60 of the cap's
  span) read before the press and added to in its transaction: two nodes that read
  at the same moment may both pass a cap that has one place left (docs/otp.md).
  Each writer adds to its own `shard` of a bucket (the column's default: 0 on
  SQLite, the writer connection's on PostgreSQL, migration 11), so nodes never wait
  on one another's counter row; a read sums whatever shards there are.

`HOT` lists every statement for the plan test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from radiusd.store.backend import Backend, Op
from radiusd.store.quick import QuickReads

_COOLDOWN = "SELECT 'cooldown', until_at, 0 FROM otp_cooldowns WHERE login = ?"
_BRANCH = ("SELECT cap, first_at, hits FROM limit_counts"
           " WHERE cap = ? AND key = ? AND bucket >= ?")
_CLAIM_COOLDOWN = """
INSERT INTO otp_cooldowns (login, until_at) VALUES (?, ?)
ON CONFLICT (login) DO UPDATE SET until_at = excluded.until_at
WHERE otp_cooldowns.until_at <= ?
RETURNING login
"""
_ADD = """
INSERT INTO limit_counts (cap, key, bucket, first_at, hits) VALUES (?, ?, ?, ?, 1)
ON CONFLICT (cap, key, bucket, shard) DO UPDATE SET hits = limit_counts.hits + 1,
    first_at = CASE WHEN excluded.first_at < limit_counts.first_at
                    THEN excluded.first_at ELSE limit_counts.first_at END
"""
_PRUNE_COUNTS = "DELETE FROM limit_counts WHERE bucket < ?"
_PRUNE_COOLDOWNS = "DELETE FROM otp_cooldowns WHERE until_at < ?"


class Count(NamedTuple):
    """One bucket of a cap's counter: the first event's time and how many."""

    cap: str
    first_at: float
    hits: int


class Ask(NamedTuple):
    """The counter of ``cap`` for ``key``, from bucket ``since`` on."""

    cap: str
    key: str
    since: int


def _counts_sql(asks: int, cooldown: bool) -> str:
    parts = ([_COOLDOWN] if cooldown else []) + [_BRANCH] * asks
    return " UNION ALL ".join(parts)


async def counts(db: Backend, asks: list[Ask], cooldown_of: str | None = None,
                 quick: QuickReads | None = None) -> list[Count]:
    """One read: the buckets asked for, and (``cooldown_of``) that number's cooldown as
    a row ``('cooldown', until, 0)``; on the loop's thread through ``quick`` when it
    can (at most 60 rows per cap)."""
    params: list[Any] = [] if cooldown_of is None else [cooldown_of]
    for a in asks:
        params += [a.cap, a.key, a.since]
    if not params:
        return []
    sql = _counts_sql(len(asks), cooldown_of is not None)
    rows: Sequence[Any] | None = quick.fetchall(sql, params) if quick is not None else None
    if rows is None:
        rows = await db.fetchall(sql, params)
    return [Count(r[0], float(r[1]), int(r[2])) for r in rows]


def claim_cooldown(login: str, until: float, now: float) -> Op:
    """Rules §6: the number's next SMS may go now; it returns the login only when the
    previous cooldown has passed (`Store.run`), so one press of many wins."""
    return (_CLAIM_COOLDOWN, (login, until, now))


def add(cap: str, key: str, bucket: int, at: float) -> Op:
    """One more event in this cap's bucket for ``key``."""
    return (_ADD, (cap, key, bucket, at))


def prune(counts_before: int, cooldowns_before: float) -> list[Op]:
    """Forget buckets and cooldowns no cap can still count (the reaper's tick)."""
    return [(_PRUNE_COUNTS, (counts_before,)), (_PRUNE_COOLDOWNS, (cooldowns_before,))]


# Per "Get password" and per login that compares a code; pruning per reaper tick.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("limits.counts", _counts_sql(2, True),
     ("+77010000000", "per_number_hourly", "+77010000000", 0, "global_daily", "", 0)),
    ("limits.guess_counts", _counts_sql(2, False),
     ("wrong_per_device_hourly", "aabbccddeeff", 0, "wrong_per_nas_hourly", "10.0.0.1", 0)),
    ("limits.claim_cooldown", _CLAIM_COOLDOWN, ("+77010000000", 60.0, 0.0)),
    ("limits.add", _ADD, ("per_number_hourly", "+77010000000", 0, 0.0)),
    ("limits.prune_counts", _PRUNE_COUNTS, (0,)),
    ("limits.prune_cooldowns", _PRUNE_COOLDOWNS, (0.0,)),
]
