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
"""

from __future__ import annotations

from radiusd import journal
from radiusd.accounting import START, AcctRecord
from radiusd.otp import CLASS_PREFIX, Password, PasswordBook
from radiusd.store import passwords
from radiusd.store.backend import Op


def password_ended(pw: Password, at: float) -> list[Op]:
    """Rules §10: a voucher that was used ends its journal entry when it dies (the
    first end counts; an entry closed by hand stays as it is)."""
    if pw.kind == "voucher" and pw.journal_id is not None and pw.claimed_at is not None:
        return journal.voucher_session_ended_ops(pw.journal_id, at)
    return []


class SessionEnd:
    def __init__(self, book: PasswordBook) -> None:
        self.book = book
        self.store = book.store

    async def password_of(self, class_token: str | None, login: str | None,
                          device: str | None) -> Password | None:
        """The live password a session runs on: the one its Class names, else the
        login's on that device (a NAS that does not echo Class, RFC 2865 §5.25)."""
        if class_token:
            row = await passwords.by_class(self.store, class_token)
            if row is not None or class_token.startswith(CLASS_PREFIX):
                # Our Class names exactly one login: if it is dead, so is this session;
                # never fall back to another live password of the same user.
                return None if row is None else self.book.password(row, open_code=False)
        if login:
            for row in await passwords.live_of(self.store, login):
                if row.state == "active" and (device is None or row.device == device):
                    return self.book.password(row, open_code=False)
        return None

    async def session_started(self, record: AcctRecord, now: float) -> list[Op]:
        """Rules §10: a voucher's first Accounting-Start is its entry's start. A phone
        login (E.164, "+...") is never a voucher: no read for it."""
        if record.status != START or (record.login or "").startswith("+"):
            return []
        pw = await self.password_of(record.class_token, record.login, record.device)
        if pw is None or pw.kind != "voucher" or pw.journal_id is None:
            return []
        return journal.voucher_session_started_ops(pw.journal_id, record.event_time)

    async def session_ended(self, record: AcctRecord, now: float, reason: str) -> list[Op]:
        """Rules §8: Accounting-Stop is the disconnect; the password dies with it, at
        the time the NAS says the session ended."""
        at = record.event_time if reason == "stop" else now
        return await self.end_session(record.class_token, record.login, record.device, at,
                                      reason)

    async def end_session(self, class_token: str | None, login: str | None,
                          device: str | None, at: float, reason: str) -> list[Op]:
        """A session is over (Stop, lost Stop, stale): its password dies."""
        pw = await self.password_of(class_token, login, device)
        if pw is not None:
            return self.book.expire(pw, at, reason)
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
        for row in await passwords.active_at_nas(self.store, nas, nas_address):
            pw = self.book.password(row, open_code=False)
            assert pw is not None
            ops += self.book.ended(pw, now)
        return ops
