"""What is kept per client (NAS) across restarts and nodes: the "auto"
Message-Authenticator latch (FreeRADIUS 3.2.5; issue 12). Read once at start,
written once when a client latches."""

from __future__ import annotations

from typing import Any

from radiusd.store.backend import Backend, Op

_LATCHED = "SELECT client FROM client_latches"
_LATCH = ("INSERT INTO client_latches (client, latched_at) VALUES (?, ?)"
          " ON CONFLICT (client) DO NOTHING")


async def latched(db: Backend) -> set[str]:
    """Names of the clients that have signed an Access-Request (start-up)."""
    return {str(r[0]) for r in await db.fetchall(_LATCHED)}


def latch(client: str, at: float) -> Op:
    """This client signs: require it from now on, here and after a restart."""
    return (_LATCH, (client, at))


# Start-up read (one row per client) and one write per client, ever.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("clients.latched", _LATCHED, ()),
    ("clients.latch", _LATCH, ("nas", 0.0)),
]
