"""Access-Challenge States (RFC 2865 §5.24) as rows, so that a challenge sent by one
node is answered at any other, once (issue 12). `auth` decides, this only keeps."""

from __future__ import annotations

from typing import Any

from radiusd.store.backend import Backend, Op

_REMEMBER = "INSERT INTO challenges (state, login, expires_at) VALUES (?, ?, ?)"
_ANSWER = "DELETE FROM challenges WHERE state = ? AND expires_at > ? RETURNING login"
_PRUNE = "DELETE FROM challenges WHERE expires_at <= ?"


def remember(state: str, login: str, expires_at: float) -> Op:
    """A State we send with an Access-Challenge for `login` (written with its SMS)."""
    return (_REMEMBER, (state, login, expires_at))


async def answer(db: Backend, state: str, now: float) -> str | None:
    """The login a State was sent for, if it is ours and unused; it is used up here,
    in the database, so a second answer with it (at any node) gets None."""
    (rows,) = await db.run([(_ANSWER, (state, now))])
    return str(rows[0][0]) if rows else None


def prune(now: float) -> Op:
    """Forget States that can no longer be answered (the reaper's tick)."""
    return (_PRUNE, (now,))


# Per challenged "Get password" and per answer; pruning per reaper tick.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("challenges.remember", _REMEMBER, ("rdc.x", "+77010000000", 0.0)),
    ("challenges.answer", _ANSWER, ("rdc.x", 0.0)),
    ("challenges.prune", _PRUNE, (0.0,)),
]
