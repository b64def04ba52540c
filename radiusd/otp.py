"""The one-time password's life, Rules §5–§9, and the limits on asking for one.

    issued --(correct password)--> active (bound to one device)
    active --(Stop / NAS restart / reaper / max lifetime / SMS failed)--> expired
    issued --(TTL, too many wrong tries, superseded)--> expired

An expired password never authenticates again (Rules §9). The book keeps the live
passwords in memory (the hot path is a dict lookup) and every change as SQL writes
that the caller commits through the group-commit store before it answers, so the
database is the truth after a restart. Codes are sealed at rest (`sealing.py`).
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from radiusd import messages
from radiusd.accounting import AcctRecord
from radiusd.config import OtpConfig, SmsConfig
from radiusd.sealing import Sealer
from radiusd.store.sqlite import Op

HOUR, DAY, MINUTE = 3600.0, 86400.0, 60.0
CLASS_PREFIX = "rd1."  # our Class values (RFC 2865 §5.25)

_INSERT = """
INSERT INTO passwords (id, login, kind, state, secret, language, issued_at, unclaimed_until,
    request_device, request_nas, journal_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SAVE = """
UPDATE passwords SET state = ?, claimed_at = ?, device = ?, nas = ?, nas_address = ?,
    class_token = ?, attempts = ?, expired_at = ?, expire_reason = ?
WHERE id = ?
"""
_QUEUE_SMS = """
INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, attempts,
    next_attempt_at)
VALUES (?, ?, ?, ?, ?, 'queued', 0, ?)
"""
_EXPIRE_BY_CLASS = """
UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ?
WHERE class_token = ? AND state != 'expired'
"""
LIVE_COLUMNS = (
    "id, login, kind, state, secret, language, issued_at, unclaimed_until, claimed_at, "
    "device, nas, nas_address, class_token, attempts, request_device, request_nas, journal_id"
)


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
        return (_SAVE, (self.state, self.claimed_at, self.device, self.nas, self.nas_address,
                        self.class_token, self.attempts, self.expired_at, self.expire_reason,
                        self.id))


@dataclass(slots=True)
class Refused:
    reason: str  # a messages.TEXTS key
    retry_after: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)

    def message(self, language: str) -> str:
        return messages.text(self.reason, language, **self.values)


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


class Window:
    """Event times in a sliding window (rate limits)."""

    __slots__ = ("events", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.events: deque[float] = deque()

    def count(self, now: float) -> int:
        ev = self.events
        while ev and ev[0] <= now - self.span:
            ev.popleft()
        return len(ev)

    def oldest(self) -> float:
        return self.events[0] if self.events else 0.0


class RateLimits:
    """Rules §6 costs money: per number (cooldown, hour, day), per device (hour),
    per NAS (minute) and a global per-minute budget."""

    def __init__(self, cfg: OtpConfig) -> None:
        self.cfg = cfg
        self.number_hour: dict[str, Window] = {}
        self.number_day: dict[str, Window] = {}
        self.last_sent: dict[str, float] = {}
        self.device_hour: dict[str, Window] = {}
        self.nas_minute: dict[str, Window] = {}
        self.global_minute = Window(MINUTE)

    @staticmethod
    def _w(table: dict[str, Window], key: str, span: float) -> Window:
        w = table.get(key)
        if w is None:
            w = table[key] = Window(span)
        return w

    def check(self, login: str, device: str | None, nas: str | None,
              now: float) -> Refused | None:
        cfg = self.cfg
        last = self.last_sent.get(login)
        if last is not None and now - last < cfg.resend_after_seconds:
            wait = cfg.resend_after_seconds - (now - last)
            return Refused("resend_wait", wait, {"seconds": max(1, round(wait))})
        # .get, not _w: a refused request must not allocate (spoofed floods).
        for table, span, cap in ((self.number_hour, HOUR, cfg.per_number_hourly),
                                 (self.number_day, DAY, cfg.per_number_daily)):
            w = table.get(login)
            if w is not None and w.count(now) >= cap:
                return Refused("number_limit", w.oldest() + span - now)
        w = self.device_hour.get(device) if device else None
        if w is not None and w.count(now) >= cfg.per_device_hourly:
            return Refused("device_limit", w.oldest() + HOUR - now)
        w = self.nas_minute.get(nas) if nas else None
        if w is not None and w.count(now) >= cfg.per_nas_minute:
            return Refused("busy", w.oldest() + MINUTE - now)
        if self.global_minute.count(now) >= cfg.global_per_minute:
            return Refused("busy", self.global_minute.oldest() + MINUTE - now)
        return None

    def record(self, login: str, device: str | None, nas: str | None, now: float) -> None:
        self.last_sent[login] = max(now, self.last_sent.get(login, 0.0))
        self._w(self.number_hour, login, HOUR).events.append(now)
        self._w(self.number_day, login, DAY).events.append(now)
        if device:
            self._w(self.device_hour, device, HOUR).events.append(now)
        if nas:
            self._w(self.nas_minute, nas, MINUTE).events.append(now)
        self.global_minute.events.append(now)

    def prune(self, now: float) -> None:
        """Forget idle keys so memory follows traffic, not history."""
        for table in (self.number_hour, self.number_day, self.device_hour, self.nas_minute):
            for key in [k for k, w in table.items() if not w.count(now)]:
                del table[key]
        for key in [k for k, t in self.last_sent.items() if now - t > DAY]:
            del self.last_sent[key]


Matcher = Callable[[str], bool]


class PasswordBook:
    def __init__(self, cfg: OtpConfig, sms: SmsConfig, sealer: Sealer) -> None:
        self.cfg = cfg
        self.sms = sms
        self.sealer = sealer
        self.limits = RateLimits(cfg)
        self.issued: dict[str, Password] = {}  # login -> the one unclaimed password
        self.active: dict[str, list[Password]] = {}  # login -> bound passwords
        self.by_class: dict[str, Password] = {}
        self.by_id: dict[int, Password] = {}
        self.last_code: dict[str, str] = {}  # login -> the code sent last (Rules §9)
        self.notice: dict[str, str] = {}  # login -> why its password died, to tell once
        self.vouchers: dict[str, Password] = {}  # live journal vouchers by login
        self.live_codes: Counter[str] = Counter()  # codes of live passwords (Rules §9)

    # -- loading ---------------------------------------------------------------------

    def remember_last_codes(self, rows: Iterable[Any]) -> None:
        """Rules §9 across restarts: (login, sealed secret) of each number's newest
        password, so the next code differs from it."""
        for r in rows:
            try:
                self.last_code[r[0]] = self.sealer.open(r[1], b"otp").decode()
            except ValueError:
                continue

    def load(self, rows: Iterable[Any], history: Iterable[Any]) -> None:
        """Rebuild from the database: live passwords (LIVE_COLUMNS) and the last day's
        issues (login, request_device, request_nas, issued_at) for the limits."""
        for r in rows:
            code = self.sealer.open(r["secret"], b"otp").decode()
            pw = Password(
                id=r["id"], login=r["login"], kind=r["kind"], state=r["state"], code=code,
                language=r["language"], issued_at=r["issued_at"],
                unclaimed_until=r["unclaimed_until"], claimed_at=r["claimed_at"],
                device=r["device"], nas=r["nas"], nas_address=r["nas_address"],
                class_token=r["class_token"], attempts=r["attempts"],
                request_device=r["request_device"], request_nas=r["request_nas"],
                journal_id=r["journal_id"],
            )
            self._index(pw)
        for login, device, nas, at in sorted(history, key=lambda h: h[3]):
            self.limits.record(login, device, nas, at)

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
        ops.append((_INSERT, (pw.id, login, "phone", "issued",
                              self.sealer.seal(code.encode(), b"otp"), language, now,
                              pw.unclaimed_until, device, nas, None)))
        text = messages.sms_text(language, code, {str(k): v for k, v in self.sms.templates.items()})
        ops.append((_QUEUE_SMS, (secrets.randbits(62), pw.id, login,
                                 self.sealer.seal(text.encode(), b"sms"), now, now)))
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

    def check(self, login: str, matches: Matcher, device: str | None, now: float, *,
              count: bool = True) -> Checked:
        """Does this code open this login on this device? ``count``: a wrong code
        counts toward `max_attempts` only from a request that proved it knows the
        shared secret, so a spoofer cannot burn somebody's password."""
        ops: list[Op] = []
        live = False
        for pw in list(self.active.get(login, ())):
            if now >= pw.issued_at + self.cfg.max_lifetime_seconds:
                ops += self.expire(pw, now, "max_lifetime")
                continue
            live = True
            # Rules §7-§8: a bound password opens only its own device. From another
            # device the code is not even compared, so the answer tells a guesser
            # nothing and there is nothing to brute-force.
            if pw.device == device and matches(pw.code):
                # Still connected: re-authentication (pfSense, Session-Timeout).
                return Checked(pw, "", ops)
        issued = self.issued.get(login)
        if issued is None:
            # A live password and a wrong code (or another device): "wrong password",
            # not "no longer valid", which would be false.
            reason = "wrong_password" if live else "password_expired"
            return Checked(None, self.notice.pop(login, reason), ops)
        pw = issued
        if now >= pw.unclaimed_until or now >= pw.issued_at + self.cfg.max_lifetime_seconds:
            ops += self.expire(pw, now, "ttl")
            return Checked(None, "password_expired", ops)
        if matches(pw.code):
            return Checked(pw, "", ops, claimed=True)
        if not count:
            return Checked(None, "wrong_password", ops)
        pw.attempts += 1
        if pw.attempts >= self.cfg.max_attempts:
            ops += self.expire(pw, now, "attempts")
            return Checked(None, "too_many_attempts", ops)
        ops.append(pw.save())
        return Checked(None, "wrong_password", ops)

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
        if pw.state == "expired":
            return []
        self._unindex(pw)
        if reason == "sms_failed":
            self.notice[pw.login] = "sms_failed"
        pw.state = "expired"
        pw.expired_at = now
        pw.expire_reason = reason
        ops = [pw.save()]
        if pw.kind == "voucher" and pw.journal_id is not None and pw.claimed_at is not None:
            from radiusd import journal

            ops += journal.voucher_session_ended_ops(pw.journal_id, now)
        return ops

    def expire_id(self, password_id: int, now: float, reason: str) -> list[Op]:
        pw = self.by_id.get(password_id)
        if pw is None:
            # Not live here (already expired, or never loaded): make sure it stays dead.
            return [("UPDATE passwords SET state = 'expired', expired_at = ?, expire_reason = ? "
                     "WHERE id = ? AND state != 'expired'", (now, reason, password_id))]
        return self.expire(pw, now, reason)

    def find_for_session(self, class_token: str | None, login: str | None,
                         device: str | None) -> Password | None:
        if class_token:
            pw = self.by_class.get(class_token)
            if pw is not None or class_token.startswith(CLASS_PREFIX):
                # Our Class names exactly one login: if it is dead, so is this session;
                # never fall back to another live password of the same user.
                return pw
        if login:
            for pw in self.active.get(login, ()):
                if device is None or pw.device == device:
                    return pw
        return None

    # -- accounting.SessionHook --------------------------------------------------------

    def session_started(self, record: AcctRecord, now: float) -> list[Op]:
        pw = self.find_for_session(record.class_token, record.login, record.device)
        if pw is None or pw.kind != "voucher" or pw.journal_id is None:
            return []
        if record.status != 1:  # Start only
            return []
        from radiusd import journal

        return journal.voucher_session_started_ops(pw.journal_id, record.event_time)

    def session_ended(self, record: AcctRecord, now: float, reason: str) -> list[Op]:
        """Rules §8: Accounting-Stop is the disconnect; the password dies with it."""
        at = record.event_time if reason == "stop" else now
        return self.end_session(record.class_token, record.login, record.device, at, reason)

    def end_session(self, class_token: str | None, login: str | None, device: str | None,
                    at: float, reason: str) -> list[Op]:
        pw = self.find_for_session(class_token, login, device)
        if pw is not None:
            return self.expire(pw, at, reason)
        if class_token and class_token.startswith(CLASS_PREFIX):
            # Dead in memory already. Say so to the database again: if the write that
            # expired it failed, the NAS retransmits this Stop and the expiry lands
            # now, instead of the password coming back to life at the next start.
            return [(_EXPIRE_BY_CLASS, (at, reason, class_token))]
        return []

    def nas_restarted(self, nas: str, nas_address: str, now: float, reason: str) -> list[Op]:
        """Accounting-On/Off: every session of that NAS is gone, so are their passwords."""
        ops: list[Op] = []
        for actives in list(self.active.values()):
            for pw in list(actives):
                if pw.nas == nas and pw.nas_address == nas_address:
                    ops += self.expire(pw, now, reason)
        return ops

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
        return ops
