"""When a session ends, which password dies and what the journal records (Rules §8, §10).

Accounting-Stop is the disconnect: the password that opened the session dies with
it, and so do those of a NAS that says it restarted (Accounting-On/Off), of a
session whose Stop was lost and of a stale one (the reaper). A journal voucher's
session fills its entry: its first Start is the entry's start, the end of its
password (whatever ends it) the entry's end.

`SessionEnd` is `accounting.SessionHook`; `password_ended` is what
`otp.PasswordBook` is told ends with a password (its `ended`). Every password ends
through `PasswordBook.expire`.
"""

from __future__ import annotations

from radiusd import journal
from radiusd.accounting import START, AcctRecord
from radiusd.otp import CLASS_PREFIX, Password, PasswordBook
from radiusd.store.sqlite import Op


def password_ended(pw: Password, at: float) -> list[Op]:
    """Rules §10: a voucher that was used ends its journal entry when it dies (the
    first end counts; an entry closed by hand stays as it is)."""
    if pw.kind == "voucher" and pw.journal_id is not None and pw.claimed_at is not None:
        return journal.voucher_session_ended_ops(pw.journal_id, at)
    return []


class SessionEnd:
    def __init__(self, book: PasswordBook) -> None:
        self.book = book

    def password_of(self, class_token: str | None, login: str | None,
                    device: str | None) -> Password | None:
        """The live password a session runs on: the one its Class names, else the
        login's on that device (a NAS that does not echo Class, RFC 2865 §5.25)."""
        book = self.book
        if class_token:
            pw = book.by_class.get(class_token)
            if pw is not None or class_token.startswith(CLASS_PREFIX):
                # Our Class names exactly one login: if it is dead, so is this session;
                # never fall back to another live password of the same user.
                return pw
        if login:
            for pw in book.active.get(login, ()):
                if device is None or pw.device == device:
                    return pw
        return None

    def session_started(self, record: AcctRecord, now: float) -> list[Op]:
        """Rules §10: a voucher's first Accounting-Start is its entry's start."""
        if record.status != START:
            return []
        pw = self.password_of(record.class_token, record.login, record.device)
        if pw is None or pw.kind != "voucher" or pw.journal_id is None:
            return []
        return journal.voucher_session_started_ops(pw.journal_id, record.event_time)

    def session_ended(self, record: AcctRecord, now: float, reason: str) -> list[Op]:
        """Rules §8: Accounting-Stop is the disconnect; the password dies with it, at
        the time the NAS says the session ended."""
        at = record.event_time if reason == "stop" else now
        return self.end_session(record.class_token, record.login, record.device, at, reason)

    def end_session(self, class_token: str | None, login: str | None, device: str | None,
                    at: float, reason: str) -> list[Op]:
        """A session is over (Stop, lost Stop, stale): its password dies."""
        pw = self.password_of(class_token, login, device)
        if pw is not None:
            return self.book.expire(pw, at, reason)
        if class_token and class_token.startswith(CLASS_PREFIX):
            return self.book.expire_class(class_token, at, reason)
        return []

    def nas_restarted(self, nas: str, nas_address: str, now: float, reason: str) -> list[Op]:
        """Accounting-On/Off (RFC 2866 §5.1): every session of that NAS is gone, so are
        their passwords."""
        ops: list[Op] = []
        for actives in list(self.book.active.values()):
            for pw in list(actives):
                if pw.nas == nas and pw.nas_address == nas_address:
                    ops += self.book.expire(pw, now, reason)
        return ops
