"""What is kept of each accounting session (RFC 2866; Rules §8).

Writes are `Op`s committed with the request before the Accounting-Response; reads
are typed. `accounting`, `session_end` and `reaper` decide, this only keeps. Every
statement finds its rows by `unique_id` or along a partial index of open sessions,
never by walking history (issue 18): `HOT` lists them for the plan test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from radiusd.store.backend import (
    KEYED,
    PG_FORMS,
    Backend,
    Op,
    PointReads,
    SyncConnection,
    apart,
    per_key,
    point_reads,
)

_RECORD = """
INSERT INTO sessions (unique_id, login, device, nas, nas_address, acct_session_id, framed_ip,
    started_at, updated_at, stopped_at, session_time, input_octets, output_octets,
    input_packets, output_packets, terminate_cause, class_token, user_name)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(unique_id) DO UPDATE SET
    login = COALESCE(excluded.login, sessions.login),
    device = COALESCE(excluded.device, sessions.device),
    framed_ip = COALESCE(excluded.framed_ip, sessions.framed_ip),
    started_at = COALESCE(sessions.started_at, excluded.started_at),
    updated_at = CASE WHEN excluded.updated_at > sessions.updated_at
        THEN excluded.updated_at ELSE sessions.updated_at END,
    stopped_at = COALESCE(sessions.stopped_at, excluded.stopped_at),
    session_time = CASE WHEN excluded.session_time > sessions.session_time
        THEN excluded.session_time ELSE sessions.session_time END,
    input_octets = CASE WHEN excluded.input_octets > sessions.input_octets
        THEN excluded.input_octets ELSE sessions.input_octets END,
    output_octets = CASE WHEN excluded.output_octets > sessions.output_octets
        THEN excluded.output_octets ELSE sessions.output_octets END,
    input_packets = CASE WHEN excluded.input_packets > sessions.input_packets
        THEN excluded.input_packets ELSE sessions.input_packets END,
    output_packets = CASE WHEN excluded.output_packets > sessions.output_packets
        THEN excluded.output_packets ELSE sessions.output_packets END,
    terminate_cause = COALESCE(sessions.terminate_cause, excluded.terminate_cause),
    class_token = COALESCE(sessions.class_token, excluded.class_token),
    user_name = COALESCE(sessions.user_name, excluded.user_name)
"""
_RETIRE = """
UPDATE sessions SET unique_id = unique_id || '/' || id
WHERE unique_id = ? AND stopped_at IS NOT NULL
"""
# A Start's, Interim's and Stop's statements touch only the rows of their session id
# (the retired row's new id has no 32 hex digits after its last ':', so no request's
# id is ever it): requests for different sessions commute (`backend.rounds`).
KEYED[_RECORD] = KEYED[_RETIRE] = lambda params: ("session", params[0])
# PostgreSQL keeps a generic plan, maybe made when every session was open, and then
# its statistics say no row has a stop time: it was seen walking `sessions_length`,
# every session, for each Start (3.4 ms at 20,000 sessions). The id alone, looked up
# apart (`backend.apart`), can only be the unique index.
PG_FORMS[_RETIRE] = (
    "UPDATE sessions SET unique_id = unique_id || '/' || id WHERE id IN (SELECT id FROM "
    f"{apart('sessions', 'unique_id', '?', 'stopped_at IS NOT NULL')})")
_CLOSE_LOST_STOP = """
UPDATE sessions SET stopped_at = updated_at, terminate_cause = 'Lost-Stop'
WHERE unique_id = ? AND stopped_at IS NULL
"""
_CLOSE_STALE = """
UPDATE sessions SET stopped_at = updated_at, terminate_cause = 'Stale'
WHERE unique_id = ? AND stopped_at IS NULL
"""
# The reaper's, in one statement: every node may run it, each stale session is
# closed by one of them, and each node acts only on the rows it closed (issue 12).
_CLOSE_ALL_STALE = """
UPDATE sessions SET stopped_at = updated_at, terminate_cause = 'Stale'
WHERE stopped_at IS NULL AND updated_at < ?
RETURNING unique_id, class_token, login, device, updated_at
"""
_CLOSE_NAS = """
UPDATE sessions SET stopped_at = ?, updated_at = ?, terminate_cause = ?
WHERE nas = ? AND nas_address = ? AND stopped_at IS NULL
"""
_OPEN = ("SELECT unique_id, class_token, login, device FROM sessions "
         "WHERE unique_id = ? AND stopped_at IS NULL")
# The same for many Starts at once (PostgreSQL only: an array of ids; `batched`).
_OPEN_ANY = per_key("unique_id, class_token, login, device", "sessions", "unique_id",
                    "stopped_at IS NULL")
# Along `sessions_stale` (open sessions by last update, migration 5).
_STALE = ("SELECT unique_id, class_token, login, device FROM sessions "
          "WHERE stopped_at IS NULL AND updated_at < ?")


class OpenSession(NamedTuple):
    """An open session as the password side needs it (Rules §8)."""

    unique_id: str
    class_token: str | None
    login: str | None
    device: str | None


class StaleSession(NamedTuple):
    """A session the reaper closed, with when it was last heard of (Rules §10)."""

    unique_id: str
    class_token: str | None
    login: str | None
    device: str | None
    updated_at: float


def record(*, unique_id: str, login: str | None, device: str | None, nas: str,
           nas_address: str, acct_session_id: str, framed_ip: str | None,
           started_at: float, updated_at: float, stopped_at: float | None,
           session_time: int, input_octets: int, output_octets: int, input_packets: int,
           output_packets: int, terminate_cause: str | None, class_token: str | None,
           user_name: str | None = None) -> Op:
    """Start, Interim-Update or Stop (RFC 2866): open or refresh the row. Counters only
    grow, a stop time once set stays, so retransmissions and reordering change nothing.
    (The larger of two values is a CASE: scalar MAX(a, b) is SQLite's only.)"""
    return (_RECORD, (unique_id, login, device, nas, nas_address, acct_session_id, framed_ip,
                      started_at, updated_at, stopped_at, session_time, input_octets,
                      output_octets, input_packets, output_packets, terminate_cause,
                      class_token, user_name))


def retire(unique_id: str) -> Op:
    """A Start for a session id that is already closed is a new session (the NAS
    reused the id after a reboot): move the old row aside so both are kept."""
    return (_RETIRE, (unique_id,))


def close_lost_stop(unique_id: str) -> Op:
    """The open session with this id lost its Stop: closed at its last update."""
    return (_CLOSE_LOST_STOP, (unique_id,))


def close_stale(unique_id: str) -> Op:
    """No update for too long (the reaper): closed at its last update."""
    return (_CLOSE_STALE, (unique_id,))


async def close_stale_sessions(db: Backend, before: float) -> list[StaleSession]:
    """Close every open session last updated before `before` (the reaper, DESIGN flow
    5) and return those this call closed: closed elsewhere meanwhile, not returned."""
    (rows,) = await db.run([(_CLOSE_ALL_STALE, (before,))])
    return [StaleSession(r[0], r[1], r[2], r[3], float(r[4])) for r in rows]


def close_nas(nas: str, nas_address: str, at: float, now: float, cause: str) -> Op:
    """Accounting-On/Off (RFC 2866 §5.1): every open session of that NAS is over."""
    return (_CLOSE_NAS, (at, now, cause, nas, nas_address))


def batched(db: Backend) -> PointReads | None:
    """PostgreSQL: the Starts' lost-Stop reads made together (`PointReads`), one
    statement per batch instead of a round trip each. None for SQLite."""
    return point_reads(db, _OPEN_ANY, key_index=0)


async def open_session(db: Backend, unique_id: str,
                       together: PointReads | None = None) -> OpenSession | None:
    """The open session with this id, if any (the lost-Stop check of a Start); in a
    batch with other Starts' through ``together`` on PostgreSQL."""
    if together is not None:
        rows = await together.get(unique_id)
        r = rows[0] if rows else None
    else:
        r = await db.fetchone(_OPEN, (unique_id,))
    return None if r is None else OpenSession(r[0], r[1], r[2], r[3])


async def stale(db: Backend, before: float) -> list[OpenSession]:
    """Open sessions last updated before `before` (the reaper, DESIGN flow 5)."""
    rows = await db.fetchall(_STALE, (before,), slow=True)
    return [OpenSession(r[0], r[1], r[2], r[3]) for r in rows]


# Revocations (issue 13): a live session is closed with its cause, once, whichever
# node or command does it (RETURNING: only the closer tells the NAS).
_LIVE_COLUMNS = ("id, unique_id, login, user_name, device, nas, nas_address, acct_session_id,"
                 " framed_ip, class_token, COALESCE(started_at, updated_at), updated_at")
_REVOKE_BY_CLASS = f"""
UPDATE sessions SET stopped_at = ?, terminate_cause = ?
WHERE class_token = ? AND stopped_at IS NULL
RETURNING {_LIVE_COLUMNS}
"""
_REVOKE_BY_LOGIN = f"""
UPDATE sessions SET stopped_at = ?, terminate_cause = ?
WHERE login = ? AND stopped_at IS NULL
RETURNING {_LIVE_COLUMNS}
"""
_REVOKE_BY_ID = f"""
UPDATE sessions SET stopped_at = ?, terminate_cause = ?
WHERE id = ? AND stopped_at IS NULL
RETURNING {_LIVE_COLUMNS}
"""
_LIVE_AT_NAS = (f"SELECT {_LIVE_COLUMNS} FROM sessions"
                " WHERE nas = ? AND stopped_at IS NULL")
_RECORD_DISCONNECT = """
UPDATE sessions SET disconnect_at = ?, disconnect_answer = ?, disconnect_error_cause = ?,
    disconnect_detail = ?
WHERE unique_id = ?
"""


class LiveSession(NamedTuple):
    """A live session as a Disconnect-Request names it (RFC 5176 §3) and the journal
    dates it (Rules §10: last heard of at `updated_at`)."""

    id: int
    unique_id: str
    login: str | None
    user_name: str | None
    device: str | None
    nas: str
    nas_address: str
    acct_session_id: str
    framed_ip: str | None
    class_token: str | None
    started_at: float
    updated_at: float


def _live(rows: list[Any]) -> list[LiveSession]:
    return [LiveSession(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                        float(r[10]), float(r[11])) for r in rows]


async def revoke_by_class(db: Backend, class_token: str, at: float,
                          cause: str) -> list[LiveSession]:
    """Close the open session our Class names (a revoked password's), with `cause`."""
    (rows,) = await db.run([(_REVOKE_BY_CLASS, (at, cause, class_token))])
    return _live(rows)


async def revoke_of_login(db: Backend, login: str, at: float,
                          cause: str) -> list[LiveSession]:
    """Close every open session of a login (a blocked number, an admin's kick)."""
    (rows,) = await db.run([(_REVOKE_BY_LOGIN, (at, cause, login))])
    return _live(rows)


async def revoke_by_id(db: Backend, session_id: int, at: float,
                       cause: str) -> list[LiveSession]:
    """Close one open session by its row id (`radiusd sessions list` shows it)."""
    (rows,) = await db.run([(_REVOKE_BY_ID, (at, cause, session_id))])
    return _live(rows)


async def live_at_nas(db: Backend, nas: str) -> list[LiveSession]:
    """The open sessions of one `[[clients]]` name (along `sessions_open`)."""
    return _live(list(await db.fetchall(_LIVE_AT_NAS, (nas,))))


class Spent(NamedTuple):
    """One session of a number: where, when, and how long (a venue's
    `daily_time_seconds`, radiusd.venues.time_left)."""

    nas: str
    started_at: float
    stopped_at: float | None
    session_time: int


# A venue's daily time (issue 15): the number's sessions that began since a moment,
# along `sessions_login` (one number's own few rows, never the table's history).
_SPENT = """
SELECT nas, started_at, stopped_at, session_time FROM sessions
WHERE login = ? AND started_at >= ?
"""


async def spent(db: Backend, login: str, since: float) -> list[Spent]:
    """The sessions of `login` that started at or after `since`."""
    return [Spent(str(r[0]), float(r[1]), None if r[2] is None else float(r[2]), int(r[3]))
            for r in await db.fetchall(_SPENT, (login, since))]


def record_disconnect(unique_id: str, at: float, answer: str, error_cause: int | None,
                      detail: str) -> Op:
    """What the NAS answered the last Disconnect-Request about this session."""
    return (_RECORD_DISCONNECT, (at, answer, error_cause, detail, unique_id))


# Per Accounting-Request (Start, Interim, Stop, On/Off) and per reaper tick.
HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("sessions.record", _RECORD,
     ("u", "+77010000000", None, "nas", "10.0.0.1", "s", None, 0.0, 0.0, None, 0, 0, 0, 0, 0,
      None, None, None)),
    ("sessions.retire", _RETIRE, ("u",)),
    ("sessions.spent", _SPENT, ("+77010000000", 0.0)),
    ("sessions.close_lost_stop", _CLOSE_LOST_STOP, ("u",)),
    ("sessions.close_stale", _CLOSE_STALE, ("u",)),
    ("sessions.close_stale_sessions", _CLOSE_ALL_STALE, (0.0,)),
    ("sessions.close_nas", _CLOSE_NAS, (0.0, 0.0, "NAS-Reboot", "nas", "10.0.0.1")),
    ("sessions.open_session", _OPEN, ("u",)),
    ("sessions.stale", _STALE, (0.0,)),
    ("sessions.revoke_by_class", _REVOKE_BY_CLASS, (0.0, "Max-Lifetime", "rd1.x")),
    ("sessions.revoke_of_login", _REVOKE_BY_LOGIN, (0.0, "Admin-Reset", "+77010000000")),
    ("sessions.revoke_by_id", _REVOKE_BY_ID, (0.0, "Admin-Reset", 1)),
    ("sessions.live_at_nas", _LIVE_AT_NAS, ("nas",)),
    ("sessions.record_disconnect", _RECORD_DISCONNECT, (0.0, "ack", None, "x", "u")),
]
# Run on PostgreSQL only (tests/test_query_plans.py asserts them there).
PG_HOT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("sessions.open_any", _OPEN_ANY, (["u", "v"],)),
]


# The admin CLI's `radiusd sessions export` (synchronous, not per request): along
# `sessions_begin`, the open ones along `sessions_open`, `chunk` rows per query so
# memory stays flat and each read is short (the WAL can be checkpointed meanwhile).
_BEGIN = "COALESCE(started_at, updated_at)"
_EXPORTED = (
    "SELECT id, login, device, nas, nas_address, framed_ip,"
    f" {_BEGIN} AS started_at, stopped_at, session_time,"
    " input_octets, output_octets, terminate_cause FROM sessions{hint}"
)
_LONGEST = f"SELECT MAX(stopped_at - {_BEGIN}) FROM sessions WHERE stopped_at IS NOT NULL"


class ExportedSession(NamedTuple):
    """A session as `radiusd sessions export` reads it (its begin: started_at, or the
    first update when the Start was lost)."""

    id: int
    login: str | None
    device: str | None
    nas: str
    nas_address: str
    framed_ip: str | None
    started_at: float
    stopped_at: float | None
    session_time: int
    input_octets: int
    output_octets: int
    terminate_cause: str | None


def exported(conn: SyncConnection, since: float | None, until: float | None,
             chunk: int) -> Iterator[ExportedSession]:
    """Sessions online at some moment of [since, until), oldest first. A session that
    stopped at or after `since` began at most the longest closed session before it
    (`sessions_length`), or it is still open (`sessions_open`)."""
    where: list[str] = []
    params: list[Any] = []
    lower = None
    if since is not None:
        longest = conn.execute(_LONGEST).fetchone()[0]
        lower = since - max(0.0, longest or 0.0)
        # Still open and begun before that: few (the live sessions), from their index.
        early = (f" WHERE stopped_at IS NULL AND {_BEGIN} < ?"
                 + (f" AND {_BEGIN} < ?" if until is not None else "")
                 + f" ORDER BY {_BEGIN}, id")
        yield from map(ExportedSession._make, conn.execute(
            _EXPORTED.format(hint=" INDEXED BY sessions_open") + early,
            (lower, until) if until is not None else (lower,)).fetchall())
        where.append("(stopped_at IS NULL OR stopped_at >= ?)")
        params.append(since)
    if until is not None:
        where.append(f"{_BEGIN} < ?")
        params.append(until)
    after: tuple[float, int] | None = None
    while True:
        w, p = list(where), list(params)
        if after is not None:
            w.append(f"{_BEGIN} >= ? AND NOT ({_BEGIN} = ? AND id <= ?)")
            p += [after[0], after[0], after[1]]
        elif lower is not None:
            w.append(f"{_BEGIN} >= ?")
            p.append(lower)
        sql = (_EXPORTED.format(hint="") + (" WHERE " + " AND ".join(w) if w else "")
               + f" ORDER BY {_BEGIN}, id LIMIT {int(chunk)}")
        rows = conn.execute(sql, p).fetchall()
        yield from map(ExportedSession._make, rows)
        if len(rows) < chunk:
            return
        after = (rows[-1][6], rows[-1][0])


# `radiusd sessions list` (synchronous, not per request): the live ones along
# `sessions_open` / `sessions_login_open`, otherwise the newest along `sessions_begin`.
_LISTED = (
    "SELECT id, login, device, nas, nas_address, acct_session_id, framed_ip,"
    f" {_BEGIN} AS started_at, updated_at, stopped_at, terminate_cause,"
    " disconnect_at, disconnect_answer, disconnect_error_cause, disconnect_detail"
    " FROM sessions"
)


class ListedSession(NamedTuple):
    """A session as `radiusd sessions list` shows it."""

    id: int
    login: str | None
    device: str | None
    nas: str
    nas_address: str
    acct_session_id: str
    framed_ip: str | None
    started_at: float
    updated_at: float
    stopped_at: float | None
    terminate_cause: str | None
    disconnect_at: float | None
    disconnect_answer: str | None
    disconnect_error_cause: int | None
    disconnect_detail: str | None


def listed(conn: SyncConnection, *, live: bool, login: str | None, nas: str | None,
           limit: int) -> list[ListedSession]:
    """Sessions newest first: the live ones only with `live`; of one login or NAS."""
    where: list[str] = []
    params: list[Any] = []
    if live:
        where.append("stopped_at IS NULL")
    if login is not None:
        where.append("login = ?")
        params.append(login)
    if nas is not None:
        where.append("nas = ?")
        params.append(nas)
    sql = (_LISTED + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY {_BEGIN} DESC, id DESC LIMIT {int(limit)}")
    return [ListedSession._make(r) for r in conn.execute(sql, params).fetchall()]
