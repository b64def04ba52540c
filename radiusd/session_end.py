"""When a session ends, which password dies and what the journal records (Rules §8, §10).

Accounting-Stop is the disconnect: the password that opened the session dies with
it, and so do those of a NAS that says it restarted (Accounting-On/Off), of a
session whose Stop was lost and of a stale one (the reaper). A journal voucher's
session fills its entry: its first Start is the entry's start, the end of its
password (whatever ends it) the entry's end.

The password is found in the database, not in a node's memory (issue 12): a Stop
reaching any node ends the password another node issued, and every node sees it
dead at its next read. The writes are conditional (`state != 'expired'`) and the
journal's idempotent (its first end counts), so two nodes ending the same password
change nothing twice.

`SessionEnd` is `accounting.SessionHook`; `password_ended` is what
`otp.PasswordBook` is told ends with a password (its `ended`). Every password ends
through `PasswordBook.expire`.

Revocations (issue 13: the maximum lifetime, an admin's kick, a blocked number, a
closed journal entry, a newer login of the same number) end a session the NAS still
thinks is live: `revoke` closes it in the store with its cause and expires its
password, and, once that is written, each closed session is handed to `kick` (the
server's `DisconnectQueue`, or the admin command that sends and prints), which sends
the Disconnect-Request where the client has `coa = "disconnect"` (RFC 5176). Whatever
the NAS answers, the password is dead and the session closed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from radiusd import journal
from radiusd.accounting import START, AcctRecord
from radiusd.clock import Clock, SystemClock
from radiusd.otp import CLASS_PREFIX, Password, PasswordBook
from radiusd.radius.coa import SessionTarget
from radiusd.radius.disconnect import DisconnectQueue, DisconnectResult
from radiusd.store import passwords, sessions
from radiusd.store.backend import Op
from radiusd.store.sessions import LiveSession

log = logging.getLogger("radiusd.session_end")

# Why a revoked session ended: the password's expire reason -> the session's
# terminate cause (RFC 2866 §5.10 names where one fits).
CAUSES = {
    "max_lifetime": "Session-Timeout",
    "admin": "Admin-Reset",
    "blocked": "Number-Blocked",
    "journal-closed": "Journal-Closed",
    "replaced": "Replaced",
}
Kick = Callable[[SessionTarget, str], None]  # (target, the session's unique_id)


def target_of(s: LiveSession) -> SessionTarget:
    """A live session as a Disconnect-Request names it (RFC 5176 §3): User-Name as the
    NAS sent it, Acct-Session-Id, Framed-IP-Address and NAS-IP-Address."""
    return SessionTarget(client=s.nas, nas_source=s.nas_address,
                         user_name=s.user_name or s.login,
                         acct_session_id=s.acct_session_id or None,
                         framed_ip_address=s.framed_ip, nas_ip_address=s.nas_address)


def disconnect_record(unique_id: str, result: DisconnectResult, at: float) -> Op:
    """The session's last disconnect attempt: when it ended, the answer, Error-Cause."""
    return sessions.record_disconnect(unique_id, at, result.outcome, result.error_cause,
                                      result.describe())


def password_ended(pw: Password, at: float) -> list[Op]:
    """Rules §10: a voucher that was used ends its journal entry when it dies (the
    first end counts; an entry closed by hand stays as it is); one never used ends
    it at its TTL, marked unused."""
    if pw.kind != "voucher" or pw.journal_id is None:
        return []
    if pw.claimed_at is None:
        return journal.voucher_unused_ops(pw.journal_id, min(at, pw.unclaimed_until))
    return journal.voucher_session_ended_ops(pw.journal_id, at)


class SessionEnd:
    def __init__(self, book: PasswordBook, kick: Kick | None = None) -> None:
        self.book = book
        self.store = book.store
        self.kick = kick
        # Rules §8 without accounting: passwords made single-use, per NAS; the NAS
        # named in the log once per process.
        self.no_accounting: Counter[str] = Counter()
        self._pending: dict[SessionTarget, str] = {}  # queued target -> unique_id
        self._clock: Clock = SystemClock()  # the queue's (`queue_to`)
        self.by_class = passwords.batched_by_class(self.store)  # PostgreSQL: together

    async def password_of(self, class_token: str | None, login: str | None,
                          device: str | None) -> Password | None:
        """The live password a session runs on: the one its Class names, else the
        login's on that device (a NAS that does not echo Class, RFC 2865 §5.25)."""
        if class_token:
            row = await passwords.by_class(self.store, class_token, self.by_class)
            if row is not None or class_token.startswith(CLASS_PREFIX):
                # Our Class names exactly one login: if it is dead, so is this session;
                # never fall back to another live password of the same user.
                return None if row is None else self.book.password(row, open_code=False)
        if login:
            for row in await passwords.live_of(self.store, login, self.book.quick,
                                               self.book.together):
                if row.state == "active" and (device is None or row.device == device):
                    return self.book.password(row, open_code=False)
        return None

    async def session_started(self, record: AcctRecord, now: float) -> list[Op]:
        """Rules §8: accounting speaks of the password, so it has a session (not
        single-use). Rules §10: a voucher's first Accounting-Start is its entry's
        start. A phone login (E.164, "+...") is never a voucher: no read for it."""
        seen: list[Op] = []
        if record.class_token and record.class_token.startswith(CLASS_PREFIX):
            seen.append(passwords.seen_by_class(record.class_token, now))
        elif record.login and record.device:
            seen.append(passwords.seen_by_login(record.login, record.device, now))
        if record.status != START or (record.login or "").startswith("+"):
            return seen
        pw = await self.password_of(record.class_token, record.login, record.device)
        if pw is None or pw.kind != "voucher" or pw.journal_id is None:
            return seen
        return seen + journal.voucher_session_started_ops(pw.journal_id, record.event_time)

    async def session_ended(self, record: AcctRecord, now: float, reason: str) -> list[Op]:
        """Rules §8: Accounting-Stop is the disconnect; the password dies with it, at
        the time the NAS says the session ended."""
        at = record.event_time if reason == "stop" else now
        return await self.end_session(record.class_token, record.login, record.device, at,
                                      reason)

    async def end_session(self, class_token: str | None, login: str | None,
                          device: str | None, at: float, reason: str,
                          last_seen: float | None = None) -> list[Op]:
        """A session is over (Stop, lost Stop, stale): its password dies. A session
        that ended unseen ends its journal entry at `last_seen` (Rules §10)."""
        pw = await self.password_of(class_token, login, device)
        if pw is not None:
            return self.book.expire(pw, at, reason, last_seen=last_seen)
        if class_token and class_token.startswith(CLASS_PREFIX):
            # Dead already: say so again, so that if the write that expired it failed,
            # the NAS's retransmission lands it now.
            return self.book.expire_class(class_token, at, reason)
        return []

    async def nas_restarted(self, nas: str, nas_address: str, now: float,
                            reason: str) -> list[Op]:
        """Accounting-On/Off (RFC 2866 §5.1): every session of that NAS is gone, so are
        their passwords, in the database, whichever node issued them."""
        ops = [passwords.expire_at_nas(nas, nas_address, now, reason)]
        rows = await passwords.active_at_nas(self.store, nas, nas_address)
        # Rules §10: a voucher's entry ends when its session was last heard of.
        heard: dict[object, float] = {}
        if any(r.kind == "voucher" for r in rows):
            for s in await sessions.live_at_nas(self.store, nas):
                heard[s.class_token] = heard[(s.login, s.device)] = s.updated_at
        for row in rows:
            pw = self.book.password(row, open_code=False)
            assert pw is not None
            last = heard.get(pw.class_token, heard.get((pw.login, pw.device), now))
            ops += self.book.ended(pw, min(now, last))
        return ops

    # -- revocations (issue 13) ----------------------------------------------------------

    async def revoke(self, live: list[LiveSession], now: float, reason: str) -> list[Op]:
        """The passwords of sessions just closed with `CAUSES[reason]` die; a voucher's
        journal entry ends now, when it was ended (Rules §10)."""
        ops: list[Op] = []
        for s in live:
            pw = await self.password_of(s.class_token, s.login, s.device)
            if pw is not None:
                ops += self.book.expire(pw, now, reason)
            elif s.class_token and s.class_token.startswith(CLASS_PREFIX):
                ops += self.book.expire_class(s.class_token, now, reason)
        return ops

    def queue_to(self, queue: DisconnectQueue) -> Kick:
        """A `kick` that hands targets to the server's queue (never waits)."""
        self._clock = queue.disconnector.clock

        def kick(target: SessionTarget, unique_id: str) -> None:
            self._pending[target] = unique_id
            if not queue.put(target):
                self._pending.pop(target, None)
        return kick

    def unique_id_of(self, target: SessionTarget) -> str | None:
        """The session a queued target is about (`radiusd.handoff`)."""
        return self._pending.get(target)

    async def recorded(self, result: DisconnectResult) -> None:
        """The queue's `record`: what the NAS answered, on the session row."""
        unique_id = self._pending.pop(result.target, None)
        if unique_id is not None:
            await self.store.write([disconnect_record(unique_id, result,
                                                      self._clock.now())])

    def disconnect(self, live: list[LiveSession]) -> None:
        """Tell each NAS (after the store has the sessions closed)."""
        if self.kick is None:
            return
        for s in live:
            self.kick(target_of(s), s.unique_id)

    async def end_sessions(self, live: list[LiveSession], now: float, reason: str) -> None:
        """Revoke sessions already closed in the store, write, then tell the NAS."""
        await self.store.write(await self.revoke(live, now, reason))
        self.disconnect(live)

    async def lifetime_over(self, now: float) -> int:
        """Rules §8: a password in use past `[otp] max_lifetime_seconds` dies, and its
        session with it: the NAS is told. Returns how many passwords ended."""
        lifetime = self.book.cfg.max_lifetime_seconds
        rows = [r for r in await passwords.dying(self.store, now, now - lifetime)
                if r.state == "active"]
        ops: list[Op] = []
        closed: list[LiveSession] = []
        for row in rows:
            pw = self.book.password(row, open_code=False)
            assert pw is not None
            live = await sessions.revoke_by_class(self.store, row.class_token, now,
                                                  CAUSES["max_lifetime"]) \
                if row.class_token else []
            closed += live
            last = max((s.updated_at for s in live), default=row.issued_at + lifetime)
            ops += self.book.expire(pw, now, "max_lifetime", last_seen=last)
        await self.store.write(ops)
        self.disconnect(closed)
        return len(rows)

    async def replaced(self, login: str, keep: int, now: float) -> int:
        """`[otp] one_session_per_number`: a new login of the number ends its other
        passwords in use, and their sessions. Returns how many ended."""
        ops: list[Op] = []
        closed: list[LiveSession] = []
        n = 0
        for row in await passwords.live_of(self.store, login):
            if row.id == keep or row.state != "active":
                continue
            pw = self.book.password(row, open_code=False)
            assert pw is not None
            live = await sessions.revoke_by_class(self.store, row.class_token, now,
                                                  CAUSES["replaced"]) \
                if row.class_token else []
            closed += live
            ops += self.book.expire(pw, now, "replaced",
                                    last_seen=max((s.updated_at for s in live), default=now))
            n += 1
        await self.store.write(ops)
        self.disconnect(closed)
        return n

    async def unseen_over(self, now: float, grace: float) -> int:
        """Rules §8 without accounting: a password accepted with no Accounting-Start
        within `[accounting] start_grace_seconds` dies, so a code is good for one
        login on a NAS that sends no accounting. There is no session to name to the
        NAS: the user stays online until its Session-Timeout."""
        ops: list[Op] = []
        rows = await passwords.unseen(self.store, now - grace)
        for row in rows:
            pw = self.book.password(row, open_code=False)
            assert pw is not None
            ops += self.book.expire(pw, now, "no_accounting")
            nas = row.nas or "?"
            if not self.no_accounting[nas]:
                log.warning("no accounting from NAS %s: passwords are single-use; enable "
                            "RADIUS accounting", nas)
            self.no_accounting[nas] += 1
        await self.store.write(ops)
        return len(rows)
