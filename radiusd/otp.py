"""The one-time password's life, Rules §5–§9: issue, check, claim, expire.

    issued --(correct password)--> active (bound to one device)
    active --(Stop / NAS restart / reaper / max lifetime / SMS failed)--> expired
    issued --(TTL, too many wrong tries, superseded)--> expired

An expired password never authenticates again (Rules §9). The database is the truth
and the enforcer, whichever node a request reaches (issue 12; DESIGN "Policy decides,
the store enforces"): each login reads the number's live passwords from it (one
indexed read), compares the code here (PAP or CHAP; codes are sealed at rest,
`sealing.py`), and asks the store to claim or count atomically (`store.passwords`
`claim`, `count_wrong`): the rows the store returns decide the answer. Nothing of a
password is kept in this process between requests, so no node can let a dead
password in. The limits on asking and guessing are `limits.py`'s (their counters
are in the database too); what else ends with a password (a voucher's journal
entry) is `session_end.py`'s, handed in as `ended`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from radiusd import messages, phone
from radiusd.config import OtpConfig, SmsConfig
from radiusd.limits import DAY, HOUR, MINUTE, GuessLimits, Refused, SmsLimits, Window
from radiusd.limits import prune as prune_limits
from radiusd.sealing import Sealer
from radiusd.store import blocked, budgets, challenges
from radiusd.store import limits as counted
from radiusd.store import passwords as stored
from radiusd.store.backend import Backend, Op
from radiusd.store.quick import QuickReads
from radiusd.venues import Venue

__all__ = ["DAY", "HOUR", "MINUTE", "PRUNES", "Checked", "Issued", "Password",
           "PasswordBook", "Refused", "Window"]
log = logging.getLogger("radiusd.otp")
CLASS_PREFIX = "rd1."  # our Class values (RFC 2865 §5.25)
PRUNES = 4  # the forgetting writes at the end of every `sweep`
BUDGET_DAYS_KEPT = 3  # a venue's daily SMS budget rows are forgotten after this


@dataclass(slots=True, eq=False)
class Password:
    """A live password as one request saw it in the database."""

    id: int
    login: str
    kind: str  # phone | voucher
    state: str  # issued | active | expired
    code: str  # clear text, in memory for this request only
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


@dataclass(slots=True)
class Issued:
    password: Password
    ops: list[Op]  # what was committed with it


@dataclass(slots=True)
class Checked:
    """Result of checking a login attempt: ``password`` set when it succeeded."""

    password: Password | None
    reason: str  # "" on success, else a messages.TEXTS key
    ops: list[Op] = field(default_factory=list)  # committed already
    claimed: bool = False  # the code is an issued password's: `claim` it
    values: dict[str, Any] = field(default_factory=dict)  # for the reason's text


Matcher = Callable[[str], bool]
Ended = Callable[["Password", float], list[Op]]  # what else ends with a password


def _nothing_else(pw: Password, at: float) -> list[Op]:
    return []


class PasswordBook:
    def __init__(self, cfg: OtpConfig, sms: SmsConfig, sealer: Sealer, store: Backend,
                 ended: Ended = _nothing_else) -> None:
        self.cfg = cfg
        self.sms = sms
        self.sealer = sealer
        self.store = store
        self.ended = ended
        self.limits = SmsLimits(cfg, phone.region)
        self.guesses = GuessLimits(cfg)
        self.quick = QuickReads(store)  # the login's reads, without a thread hop
        self.together = stored.batched(store)  # ...or many in one statement (PostgreSQL)
        self._spent: set[tuple[str, str]] = set()  # (venue, day) budgets logged as spent
        self.blocked_reads = blocked.batched(store)

    def close(self) -> None:
        """Close the loop-thread read connection (server stop)."""
        self.quick.close()

    async def blocked(self, login: str) -> str | None:
        """Why the number is blocked (issue 13), or None: per press and per login."""
        return await blocked.reason_of(self.store, login, self.quick, self.blocked_reads)

    def password(self, r: stored.PasswordRow, *, open_code: bool = True) -> Password | None:
        """A row as a `Password`; None when its code does not open with our key."""
        code = ""
        if open_code:
            try:
                code = self.sealer.open(r.secret, b"otp").decode()
            except ValueError:
                return None
        return Password(
            id=r.id, login=r.login, kind=r.kind, state=r.state, code=code,
            language=r.language, issued_at=r.issued_at, unclaimed_until=r.unclaimed_until,
            claimed_at=r.claimed_at, device=r.device, nas=r.nas, nas_address=r.nas_address,
            class_token=r.class_token, attempts=r.attempts, request_device=r.request_device,
            request_nas=r.request_nas, journal_id=r.journal_id)

    async def live(self, login: str) -> list[Password]:
        """The live passwords of `login`, as the database has them now."""
        out = []
        for r in await stored.live_of(self.store, login, self.quick, self.together):
            pw = self.password(r)
            if pw is not None:
                out.append(pw)
        return out

    # -- Rules §5–§6: "Get password" -------------------------------------------------------

    async def request(self, login: str, *, device: str | None, nas: str | None,
                      language: str, now: float, extra: list[Op] | None = None,
                      venue: Venue | None = None) -> Issued | Refused:
        """Apply the limits, then issue and queue the SMS in one transaction (with
        ``extra``, e.g. the Access-Challenge State). The resend wait is claimed in the
        database first: of concurrent presses for one number, on any nodes, one wins.
        ``venue`` (radiusd.venues): its limits, SMS text and route, and its daily SMS
        budget, reserved as the guard of that same transaction (`store.budgets`)."""
        if await self.blocked(login) is not None:
            return Refused("number_blocked")  # issue 13: no password, no SMS
        cfg = venue.otp if venue is not None else self.cfg
        keys = self.limits.keys(login, device, nas, venue.limits_key if venue else "")
        counts = await counted.counts(self.store, self.limits.asks(keys, now),
                                      cooldown_of=login, quick=self.quick)
        refused = self.limits.check(keys, counts, now, cfg)
        if refused is not None:
            return refused
        budget = venue if venue is not None and venue.sms_daily_budget else None
        day = budget.day(now) if budget is not None else ""
        if budget is not None and budget.sms_daily_budget is not None and \
                await budgets.sent(self.store, budget.name, day) >= budget.sms_daily_budget:
            return self._budget_spent(budget, day)
        wait = cfg.resend_after_seconds
        (won,) = await self.store.run([counted.claim_cooldown(login, now + wait, now)])
        if not won:
            return self.limits.resend_wait(wait)
        ops: list[Op] = [stored.supersede(login, now)]
        code, tag = await self._new_code(login, cfg.length)
        pw = Password(
            id=secrets.randbits(62), login=login, kind="phone", state="issued", code=code,
            language=language, issued_at=now, unclaimed_until=now + cfg.ttl_seconds,
            request_device=device, request_nas=nas,
        )
        ops.append(stored.insert(
            id=pw.id, login=login, kind="phone", state="issued",
            secret=self.sealer.seal(code.encode(), b"otp"), language=language, issued_at=now,
            unclaimed_until=pw.unclaimed_until, request_device=device, request_nas=nas,
            journal_id=None, code_tag=tag))
        templates = venue.templates if venue is not None else \
            {str(k): v for k, v in self.sms.templates.items()}
        text = messages.sms_text(language, code, templates)
        ops.append(stored.queue_sms(id=secrets.randbits(62), password_id=pw.id, recipient=login,
                                    body=self.sealer.seal(text.encode(), b"sms"), at=now,
                                    venue=venue.name if venue is not None else ""))
        ops += self.limits.add(keys, now)
        ops += extra or []
        if budget is None or budget.sms_daily_budget is None:
            await self.store.write(ops)
            return Issued(pw, ops)
        (reserved, *_) = await self.store.run(
            [budgets.reserve(budget.name, day, budget.sms_daily_budget), *ops], guard=True)
        if not reserved:
            return self._budget_spent(budget, day)
        return Issued(pw, ops)

    def _budget_spent(self, venue: Venue, day: str) -> Refused:
        """Past the venue's `sms_daily_budget`: refused, counted for /metrics, logged
        once per venue and day (issue 15)."""
        self.limits.refused["sms_daily_budget"] += 1
        if (venue.name, day) not in self._spent:
            if len(self._spent) > 10_000:
                self._spent.clear()
            self._spent.add((venue.name, day))
            log.warning("venue %s: sms_daily_budget of %d SMS spent for %s; SMS login is "
                        "refused there until the next day (logged once)", venue.name,
                        venue.sms_daily_budget, day)
        return Refused("sms_unavailable", cap="sms_daily_budget")

    async def _new_code(self, login: str, n: int) -> tuple[str, str]:
        """Rules §9: a new password each time: never this number's previous one, nor one
        that is live for anybody (by its keyed tag, whichever node issued it)."""
        newest = await stored.newest_of(self.store, login)
        last_tag = newest.code_tag if newest is not None else None
        last_code = None
        if newest is not None and last_tag is None:  # issued before the tags
            with contextlib.suppress(ValueError):
                last_code = self.sealer.open(newest.secret, b"otp").decode()
        while True:
            code = "".join(secrets.choice("0123456789") for _ in range(n))
            tag = self.sealer.tag(code.encode())
            if tag == last_tag or code == last_code:
                continue
            if not await stored.tag_live(self.store, tag):
                return code, tag

    # -- Rules §7: login ----------------------------------------------------------------

    async def check(self, login: str, matches: Matcher, device: str | None, nas: str | None,
                    now: float) -> Checked:
        """Does this code open this login on this device (Rules §7)?

        Every failed attempt counts, whatever the packet proves (signed or not, PAP or
        CHAP, bound device or not): one wrong try against every live password of the
        number, which dies at `max_attempts` like an issued one, and one against the
        device and the NAS (`GuessLimits`), past whose caps nothing is compared. The
        counts are the database's (`count_wrong`), so guesses through every node add up.
        """
        ops: list[Op] = []
        actives: list[Password] = []
        issued: list[Password] = []
        cfg = self.cfg  # one config for the whole check, whatever a reload does meanwhile
        lifetime = cfg.max_lifetime_seconds
        live = await self.live(login)
        if live and await self.blocked(login) is not None:
            # Blocked while a password was live (`numbers block` expires them; this
            # covers the moment between): no login (issue 13).
            return Checked(None, "number_blocked")
        for pw in live:
            dead = now >= pw.issued_at + lifetime
            if pw.state == "active":
                if dead:
                    ops += self.expire(pw, now, "max_lifetime")
                    continue
                actives.append(pw)
            elif dead or now >= pw.unclaimed_until:
                ops += self.expire(pw, now, "ttl")
            else:
                issued.append(pw)
        if len(issued) > 1:
            # Issued concurrently (nodes that each superseded what they saw): only the
            # newest is the number's password (Rules §9), whatever the order of commits.
            issued.sort(key=lambda pw: (pw.issued_at, pw.id))
            for old in issued[:-1]:
                ops += self.expire(old, now, "superseded")
            issued = issued[-1:]
        for pw in actives:
            # Rules §7-§8: a bound password opens only its own device. From another
            # device the code is not even compared, so the answer tells a guesser
            # nothing.
            if pw.device == device and matches(pw.code):
                # Still connected: re-authentication (pfSense, Session-Timeout).
                await self.store.write(ops)
                return Checked(pw, "", ops)
        guess_keys = self.guesses.keys(device, nas)
        counts = await counted.counts(self.store, self.guesses.asks(guess_keys, now),
                                      quick=self.quick)
        capped = self.guesses.full(guess_keys, counts, now)
        if capped is not None:
            # Past the guess budget: nothing more is compared. What was compared (a
            # password bound to this very device) still counts.
            await self._wrong([pw for pw in actives if pw.device == device], now, ops,
                              cfg.max_attempts)
            return Checked(None, capped.reason, ops, values=capped.values)
        for pw in issued:
            if matches(pw.code):
                await self.store.write(ops)
                return Checked(pw, "", ops, claimed=True)
        live = actives + issued
        ops += self.guesses.add(guess_keys, now)
        if await self._wrong(live, now, ops, cfg.max_attempts):
            return Checked(None, "too_many_attempts", ops)
        if live:
            # A live password and a wrong code (or another device): "wrong password",
            # not "no longer valid", which would be false.
            return Checked(None, "wrong_password", ops)
        newest = await stored.newest_of(self.store, login)
        if newest is not None and newest.expire_reason == "sms_failed":
            return Checked(None, "sms_failed", ops)  # Rules §6: say why, not "expired"
        if newest is not None and newest.expire_reason == "blocked":
            return Checked(None, "number_blocked", ops)
        return Checked(None, "password_expired", ops)

    async def _wrong(self, passwords: list[Password], now: float, ops: list[Op],
                     max_attempts: int) -> bool:
        """One wrong try against each, committed with ``ops``; `max_attempts` burns it
        (Rules §7), a bound one included: its session ends with it. True when this
        try burned one."""
        counts = [stored.count_wrong(pw.id, max_attempts, now) for pw in passwords]
        if not counts:
            await self.store.write(ops)
            return False
        results = await self.store.run(ops + counts)
        burned = [pw for pw, rows in zip(passwords, results[len(ops):], strict=True)
                  if rows and rows[0][0] == "expired"]
        after: list[Op] = []
        for pw in burned:
            pw.state = "expired"
            after += self.ended(pw, now)
        await self.store.write(after)
        return bool(burned)

    async def claim(self, pw: Password, *, device: str | None, nas: str, nas_address: str,
                    now: float, cfg: OtpConfig | None = None) -> bool:
        """First success: bind to the device and NAS (Rules §7-§8), once, in the
        database: False when another request (any node) claimed, burned or ended it
        first."""
        token = CLASS_PREFIX + secrets.token_hex(12)
        (rows,) = await self.store.run([stored.claim(
            id=pw.id, device=device, nas=nas, nas_address=nas_address, class_token=token,
            max_attempts=(cfg or self.cfg).max_attempts, now=now,
            born_after=now - (cfg or self.cfg).max_lifetime_seconds)])
        if not rows:
            return False
        pw.state = "active"
        pw.claimed_at = now
        pw.device = device
        pw.nas = nas
        pw.nas_address = nas_address
        pw.class_token = token
        return True

    # -- Rules §8-§9: expiry ------------------------------------------------------------

    def expire(self, pw: Password, now: float, reason: str,
               last_seen: float | None = None) -> list[Op]:
        """The one way a password ends (Rules §8-§9), with what ends with it. The write
        changes nothing when it is dead already (another node ended it first).
        ``last_seen``: when its session was last heard of, if it ended unseen (the
        reaper, a NAS reboot, the maximum lifetime): what the journal records (§10)."""
        pw.state = "expired"
        at = now if last_seen is None else min(now, last_seen)
        return [stored.expire_by_id(pw.id, now, reason), *self.ended(pw, at)]

    def expire_class(self, class_token: str, now: float, reason: str) -> list[Op]:
        """The password our Class value names is dead (Rules §8), whatever was read."""
        return [stored.expire_by_class(class_token, now, reason)]

    def sms_gave_up(self, password_id: int, now: float) -> list[Op]:
        """Rules §6: a password whose SMS never left is never silently valid. One
        already in use proves its SMS arrived (a "delivery unknown" row), so it stays."""
        return [stored.expire_issued(password_id, now, "sms_failed")]

    async def sweep(self, now: float) -> list[Op]:
        """Expire what time alone has killed (unclaimed TTL, max lifetime), and forget
        counters, cooldowns and States that can no longer count."""
        ops: list[Op] = []
        for r in await stored.dying(self.store, now, now - self.cfg.max_lifetime_seconds):
            pw = self.password(r, open_code=False)
            assert pw is not None
            ops += self.expire(pw, now, "ttl" if r.state == "issued" else "max_lifetime")
        old = dt.datetime.fromtimestamp(now - BUDGET_DAYS_KEPT * DAY, dt.UTC).date()
        return ops + prune_limits(now) + [challenges.prune(now),
                                          budgets.prune(old.isoformat())]
