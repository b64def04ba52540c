"""Disconnect-Requests handed between processes (issue 16 item 3, RFC 6614 §2.5): a
RadSec NAS takes them only over the TLS connection it opened, which one radiusd
process holds (one worker, one node). A process that ends a session of such a NAS
without holding its connection (an admin command, another worker or node) leaves
the request here; the process that holds the connection takes it, sends it and
records the answer on the session.

The table holds only what waits (taken rows are deleted, and what waits longer than
the handoff's time to live is deleted and recorded as not sent), so it stays a few
rows: reading all of it, oldest first, is not a read of history. `HOT` lists every
statement for the plan test.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from radiusd.store.backend import Backend, Op

_QUEUE = """
INSERT INTO disconnect_handoffs (unique_id, client, target, queued_at) VALUES (?, ?, ?, ?)
ON CONFLICT (unique_id) DO UPDATE SET client = excluded.client, target = excluded.target,
    queued_at = excluded.queued_at
"""
_WAITING = ("SELECT unique_id, client, target, queued_at FROM disconnect_handoffs"
            " ORDER BY queued_at LIMIT ?")
_TAKE = "DELETE FROM disconnect_handoffs WHERE unique_id = ? RETURNING unique_id"
_EXPIRE = ("DELETE FROM disconnect_handoffs WHERE queued_at < ?"
           " RETURNING unique_id, client, target")


class Waiting(NamedTuple):
    """One handed-over Disconnect-Request: the session, its client, the target (JSON)."""

    unique_id: str
    client: str
    target: str
    queued_at: float


def queue(unique_id: str, client: str, target: str, at: float) -> Op:
    """Leave the session's Disconnect-Request for the process holding `client`'s
    connection (a newer one for the same session replaces it)."""
    return (_QUEUE, (unique_id, client, target, at))


async def waiting(db: Backend, limit: int) -> list[Waiting]:
    """What waits, oldest first, at most `limit`."""
    rows = await db.fetchall(_WAITING, (limit,), slow=True)
    return [Waiting(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]


def take(unique_id: str) -> Op:
    """Take one to send; run with `Store.run`: only one process gets the row back."""
    return (_TAKE, (unique_id,))


def expire(before: float) -> Op:
    """Give up what has waited since before `before`; run with `Store.run`: each row
    comes back to one process only, which records it as not sent."""
    return (_EXPIRE, (before,))


# Per handoff poll (every second, in a process serving RadSec) and per handoff.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("handoffs.queue", _QUEUE, ("u", "nas1", "{}", 0.0)),
    ("handoffs.waiting", _WAITING, (256,)),
    ("handoffs.take", _TAKE, ("u",)),
    ("handoffs.expire", _EXPIRE, (0.0,)),
]
