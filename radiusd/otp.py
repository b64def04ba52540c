"""The one-time password's life, Rules §5–§9: issue, check, claim, expire.

    issued --(correct password)--> active (bound to one device)
    active --(Stop / NAS restart / reaper / max lifetime / SMS failed)--> expired
    issued --(TTL, too many wrong tries, superseded)--> expired

An expired password never authenticates again (Rules §9). The book keeps the live
passwords in memory (the hot path is a dict lookup) and every change as writes
(`radiusd.store.passwords`) that the caller commits through the group-commit store
before it answers, so the database is the truth after a restart. Codes are sealed at
rest (`sealing.py`). The limits on asking and guessing are `limits.py`'s; what else
ends with a password (a voucher's journal entry) is `session_end.py`'s, handed in as
`ended`.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from radiusd import messages, phone
from radiusd.config import OtpConfig, SmsConfig
from radiusd.limits import DAY, HOUR, MINUTE, GuessLimits, Refused, SmsLimits, Window
from radiusd.sealing import Sealer
from radiusd.store import passwords as stored
from radiusd.store.sqlite import Op

__all__ = ["DAY", "HOUR", "MINUTE", "Checked", "Issued", "Password", "PasswordBook",
           "Refused", "Window"]
CLASS_PREFIX = "rd1."  # our Class values (RFC 2865 §5.25)


@dataclass(slots=True, eq=False)
class Password:
    id: int
    login: str
    kind: str  # phone | voucher
    state: str  # issued | active | expired
    code: str  # clear text, in memory only
    language: str
    issued_at: float
    unclaimed_until: float
    claimed_at: float | None = None
    device: str | None = None
    nas: str | None = None
    nas_address: str | None = None
    class_token: str | None = None
    attempts: int = 0
    request_device: str | None = None
    request_nas: str | None = None
    journal_id: int | None = None
    expired_at: float | None = None
    expire_reason: str | None = None

    def save(self) -> Op:
        return stored.save(id=self.id, state=self.state, claimed_at=self.claimed_at,
                           device=self.device, nas=self.nas, nas_address=self.nas_address,
                           class_token=self.class_token, attempts=self.attempts,
                           expired_at=self.expired_at, expire_reason=self.expire_reason)


@dataclass(slots=True)
class Issued:
    password: Password
    ops: list[Op]


@dataclass(slots=True)
class Checked:
    """Result of checking a login attempt: ``password`` set when it succeeded."""

    password: Password | None
    reason: str  # "" on success, else a messages.TEXTS key
    ops: list[Op]
    claimed: bool = False
    values: dict[str, Any] = field(default_factory=dict)  # for the reason's text


Matcher = Callable[[str], bool]
Ended = Callable[["Password", float], list[Op]]  # what else ends with a password


def _nothing_else(pw: Password, at: float) -> list[Op]:
    return []


class PasswordBook:
    def __init__(self, cfg: OtpConfig, sms: SmsConfig, sealer: Sealer,
                 ended: Ended = _nothing_else) -> None:
        self.cfg = cfg
        self.sms = sms
        self.sealer = sealer
        self.ended = ended
        self.limits = SmsLimits(cfg, phone.region)
        self.guesses = GuessLimits(cfg)
        self.issued: dict[str, Password] = {}  # login -> the one unclaimed password
        self.active: dict[str, list[Password]] = {}  # login -> bound passwords
        self.by_class: dict[str, Password] = {}
        self.by_id: dict[int, Password] = {}
        self.last_code: dict[str, str] = {}  # login -> the code sent last (Rules §9)
        self.notice: dict[str, str] = {}  # login -> why its password died, to tell once
        self.vouchers: dict[str, Password] = {}  # live journal vouchers by login
        self.live_codes: Counter[str] = Counter()  # codes of live passwords (Rules §9)

    # -- loading ---------------------------------------------------------------------

    def load(self, rows: Iterable[stored.PasswordRow],
             recent: Iterable[stored.Issue] = ()) -> None:
        """Rebuild from the database: live passwords, and the last day's issues for
        the limits and for Rules §9 across restarts (each number's newest code, so
        that the next one differs from it)."""
        for r in rows:
            pw = Password(
                id=r.id, login=r.login, kind=r.kind, state=r.state,
                code=self.sealer.open(r.secret, b"otp").decode(), language=r.language,
                issued_at=r.issued_at, unclaimed_until=r.unclaimed_until,
                claimed_at=r.claimed_at, device=r.device, nas=r.nas,
                nas_address=r.nas_address, class_token=r.class_token, attempts=r.attempts,
                request_device=r.request_device, request_nas=r.request_nas,
                journal_id=r.journal_id,
            )
            self._index(pw)
        newest: dict[str, bytes] = {}
        for issue in sorted(recent, key=lambda i: i.issued_at):
            self.limits.record(issue.login, issue.request_device, issue.request_nas,
                               issue.issued_at)
            newest[issue.login] = issue.secret
        for login, secret in newest.items():
            try:
                self.last_code[login] = self.sealer.open(secret, b"otp").decode()
            except ValueError:
                continue

    def _index(self, pw: Password) -> None:
        self.by_id[pw.id] = pw
        self.live_codes[pw.code] += 1
        if pw.kind == "voucher":
            self.vouchers[pw.login] = pw
        if pw.state == "issued":
            self.issued[pw.login] = pw
        elif pw.state == "active":
            self.active.setdefault(pw.login, []).append(pw)
            if pw.class_token:
                self.by_class[pw.class_token] = pw

    # -- Rules §5–§6: "Get password" -------------------------------------------------------

    def request(self, login: str, *, device: str | None, nas: str | None, language: str,
                now: float) -> Issued | Refused:
        refused = self.limits.check(login, device, nas, now)
        if refused is not None:
            return refused
        self.limits.record(login, device, nas, now)
        ops: list[Op] = []
        old = self.issued.get(login)
        if old is not None:
            ops += self.expire(old, now, "superseded")
        code = self._new_code(login)
        self.last_code[login] = code
        self.notice.pop(login, None)
        pw = Password(
            id=secrets.randbits(62), login=login, kind="phone", state="issued", code=code,
            language=language, issued_at=now, unclaimed_until=now + self.cfg.ttl_seconds,
            request_device=device, request_nas=nas,
        )
        self._index(pw)
        ops.append(stored.insert(
            id=pw.id, login=login, kind="phone", state="issued",
            secret=self.sealer.seal(code.encode(), b"otp"), language=language, issued_at=now,
            unclaimed_until=pw.unclaimed_until, request_device=device, request_nas=nas,
            journal_id=None))
        text = messages.sms_text(language, code, {str(k): v for k, v in self.sms.templates.items()})
        ops.append(stored.queue_sms(id=secrets.randbits(62), password_id=pw.id, recipient=login,
                                    body=self.sealer.seal(text.encode(), b"sms"), at=now))
        return Issued(pw, ops)

    def _new_code(self, login: str) -> str:
        n = self.cfg.length
        while True:
            code = "".join(secrets.choice("0123456789") for _ in range(n))
            # Rules §9: a new password each time: never this number's previous one,
            # nor one that is live for anybody.
            if code != self.last_code.get(login) and code not in self.live_codes:
                return code

    # -- Rules §7: login ----------------------------------------------------------------

    def check(self, login: str, matches: Matcher, device: str | None, nas: str | None,
              now: float) -> Checked:
        """Does this code open this login on this device (Rules §7)?

        Every failed attempt counts, whatever the packet proves (signed or not, PAP or
        CHAP, bound device or not): one wrong try against every live password of the
        number, which dies at `max_attempts` like an issued one, and one against the
        device and the NAS (`GuessLimits`), past whose caps nothing is compared.
        """
        ops: list[Op] = []
        actives: list[Password] = []
        for pw in list(self.active.get(login, ())):
            if now >= pw.issued_at + self.cfg.max_lifetime_seconds:
                ops += self.expire(pw, now, "max_lifetime")
                continue
            actives.append(pw)
            # Rules §7-§8: a bound password opens only its own device. From another
            # device the code is not even compared, so the answer tells a guesser
            # nothing.
            if pw.device == device and matches(pw.code):
                # Still connected: re-authentication (pfSense, Session-Timeout).
                return Checked(pw, "", ops)
        issued = self.issued.get(login)
        if issued is not None and (now >= issued.unclaimed_until
                                   or now >= issued.issued_at + self.cfg.max_lifetime_seconds):
            ops += self.expire(issued, now, "ttl")
            issued = None
        capped = self.guesses.check(device, nas, now)
        if capped is not None:
            # Past the guess budget: nothing more is compared. What was compared (a
            # password bound to this very device) still counts.
            ops += self._wrong([pw for pw in actives if pw.device == device], now)
            return Checked(None, capped.reason, ops, values=capped.values)
        if issued is not None and matches(issued.code):
            return Checked(issued, "", ops, claimed=True)
        live = actives + ([issued] if issued is not None else [])
        self.guesses.wrong(device, nas, now)
        burned = self._wrong(live, now)
        ops += burned
        if any(pw.state == "expired" for pw in live):
            return Checked(None, "too_many_attempts", ops)
        if live:
            # A live password and a wrong code (or another device): "wrong password",
            # not "no longer valid", which would be false.
            return Checked(None, "wrong_password", ops)
        return Checked(None, self.notice.pop(login, "password_expired"), ops)

    def _wrong(self, passwords: list[Password], now: float) -> list[Op]:
        """One wrong try against each; `max_attempts` burns it (Rules §7), a bound one
        included: its session ends with it (Disconnect-Request where the NAS allows)."""
        ops: list[Op] = []
        for pw in passwords:
            pw.attempts += 1
            if pw.attempts >= self.cfg.max_attempts:
                ops += self.expire(pw, now, "attempts")
            else:
                ops.append(pw.save())
        return ops

    def claim(self, pw: Password, *, device: str | None, nas: str, nas_address: str,
              now: float) -> list[Op]:
        """First success: bind to the device and NAS (Rules §7-§8)."""
        self.issued.pop(pw.login, None)
        pw.state = "active"
        pw.claimed_at = now
        pw.device = device
        pw.nas = nas
        pw.nas_address = nas_address
        pw.class_token = CLASS_PREFIX + secrets.token_hex(12)
        self.active.setdefault(pw.login, []).append(pw)
        self.by_class[pw.class_token] = pw
        return [pw.save()]

    # -- Rules §8-§9: expiry ------------------------------------------------------------

    def forget(self, pw: Password) -> None:
        """Drop from memory without writing: the database already says it is dead
        (a voucher whose journal entry was closed by hand)."""
        self._unindex(pw)
        pw.state = "expired"

    def _unindex(self, pw: Password) -> None:
        if self.issued.get(pw.login) is pw:
            del self.issued[pw.login]
        actives = self.active.get(pw.login)
        if actives and pw in actives:
            actives.remove(pw)
            if not actives:
                del self.active[pw.login]
        if pw.class_token:
            self.by_class.pop(pw.class_token, None)
        if self.vouchers.get(pw.login) is pw:
            del self.vouchers[pw.login]
        if self.by_id.pop(pw.id, None) is not None:
            self.live_codes[pw.code] -= 1
            if self.live_codes[pw.code] <= 0:
                del self.live_codes[pw.code]

    def expire(self, pw: Password, now: float, reason: str) -> list[Op]:
        """The one way a password ends (Rules §8-§9), with what ends with it."""
        if pw.state == "expired":
            return []
        self._unindex(pw)
        if reason == "sms_failed":
            self.notice[pw.login] = "sms_failed"
        pw.state = "expired"
        pw.expired_at = now
        pw.expire_reason = reason
        return [pw.save(), *self.ended(pw, now)]

    def expire_id(self, password_id: int, now: float, reason: str) -> list[Op]:
        pw = self.by_id.get(password_id)
        if pw is None:
            # Not live here (already expired, or never loaded): make sure it stays dead.
            return [stored.expire_by_id(password_id, now, reason)]
        return self.expire(pw, now, reason)

    def expire_class(self, class_token: str, now: float, reason: str) -> list[Op]:
        """The password our Class value names is dead (Rules §8). Not live here (dead
        in memory already): say so to the database again, so that if the write that
        expired it failed, the NAS's retransmission lands it now instead of the
        password coming back to life at the next start."""
        pw = self.by_class.get(class_token)
        if pw is None:
            return [stored.expire_by_class(class_token, now, reason)]
        return self.expire(pw, now, reason)

    def sms_gave_up(self, password_id: int, now: float) -> list[Op]:
        """Rules §6: a password whose SMS never left is never silently valid. One
        already in use proves its SMS arrived (a "delivery unknown" row), so it stays."""
        pw = self.by_id.get(password_id)
        if pw is not None and pw.state == "active":
            return []
        return self.expire_id(password_id, now, "sms_failed")

    def sweep(self, now: float) -> list[Op]:
        """Expire what time alone has killed: unclaimed TTL and max lifetime."""
        ops: list[Op] = []
        for pw in list(self.by_id.values()):
            if (pw.state == "issued" and now >= pw.unclaimed_until) or \
                    now >= pw.issued_at + self.cfg.max_lifetime_seconds:
                ops += self.expire(pw, now, "ttl" if pw.state == "issued" else "max_lifetime")
        self.limits.prune(now)
        self.guesses.prune(now)
        return ops
