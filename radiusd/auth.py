"""Access-Request policy: phone number + one-time SMS password (Rules §4–§9).

- authorize: who is this (E.164 number or a journal voucher), how did they prove it
  (PAP or CHAP), and is this a "Get password" press (empty password)?
- authenticate: does the password match a live one for this login and device?
- post_auth: bind it on first use, write, and answer Access-Accept with Class,
  Acct-Interim-Interval and the timeouts, or Access-Reject with a Reply-Message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from radiusd import messages, phone
from radiusd.config import Config
from radiusd.device import looks_like_mac, normalise_mac, request_device
from radiusd.otp import Checked, Issued, Password, PasswordBook, Refused
from radiusd.radius.message import Outcome, Reply, Request
from radiusd.radius.wire import Code
from radiusd.store import challenges, passwords, sessions
from radiusd.store.backend import Backend, Op
from radiusd.venue_figures import VenueFigures
from radiusd.venues import Venue, Venues, rate_attributes, time_left

log = logging.getLogger("radiusd.auth")

STATE_PREFIX = b"rdc."  # our Access-Challenge State values (RFC 2865 §5.24)


@dataclass(slots=True)
class LoginContext:
    login: str
    device: str | None
    matches: Callable[[str], bool]
    venue: Venue
    checked: Checked | None = None


def _pap_matcher(clear: bytes) -> Callable[[str], bool]:
    return lambda code: hmac.compare_digest(code.encode(), clear)


def _chap_matcher(chap: bytes, challenge: bytes) -> Callable[[str], bool]:
    """RFC 2865 §2.2 / §5.3: MD5(CHAP Ident + password + challenge)."""
    ident, response = chap[:1], chap[1:]
    return lambda code: hmac.compare_digest(
        hashlib.md5(ident + code.encode() + challenge).digest(), response)


class OtpAuth:
    VOUCHER_MISS_SECONDS = 2.0
    def __init__(self, config: Config, book: PasswordBook, store: Backend,
                 sms_queued: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.book = book
        self.store = store
        self.sms_queued = sms_queued
        self.language = config.otp.language
        # Settings by client (issue 15); a reload swaps the whole object (`Server.reload`).
        self.venues = Venues(config)
        self.figures = VenueFigures()  # per venue: /metrics and `radiusd venues report`
        self._voucher_misses: OrderedDict[str, float] = OrderedDict()
        # `[otp] one_session_per_number`: ends the number's other sessions after a new
        # login (session_end.SessionEnd.replaced, set by the server).
        self.replaced: Callable[[str, int, float], Awaitable[int]] | None = None

    @staticmethod
    def _reject(key: str, language: str, **values: object) -> Reply:
        return Reply.reject(messages.text(key, language, **values))

    async def authorize(self, request: Request, now: float) -> LoginContext | Outcome:
        # One read of the settings: a reload meanwhile (radiusd.reload) swaps
        # `self.venues`, and this request goes on with what it began with.
        venues = self.venues
        otp = venues.config.otp
        venue = venues.of_client(request.client.name)
        lang = venue.language
        name = (request.get("User-Name") or "").strip()
        if not name:
            return self._reject("no_login", lang)
        chap = request.raw("CHAP-Password")
        clear = request.user_password() if chap is None else None
        if chap is not None:
            if len(chap) != 17:
                return self._reject("unsupported_method", lang)
            challenge = request.raw("CHAP-Challenge") or request.packet.authenticator
            matches = _chap_matcher(chap, challenge)
        elif clear is not None:
            matches = _pap_matcher(clear)
        elif request.has("User-Password") or request.has("EAP-Message"):
            return self._reject("unsupported_method", lang)  # unusable PAP value, or EAP
        else:
            # No password at all: what radclient and some portals send for an empty
            # one. It can only mean "Get password".
            matches = _pap_matcher(b"")
        # Does the sender know the shared secret? A valid Message-Authenticator says
        # so; so does a PAP value that decrypts to all zeros (its ciphertext is
        # MD5(secret + Request Authenticator)). CHAP and "no password" prove nothing,
        # so unsigned they could come from anyone who can spoof the NAS's address.
        # A wrong code counts whatever the packet proves (otp.PasswordBook.check): an
        # unsigned CHAP login must not be a free oracle.
        proven = (request.packet.has_message_authenticator
                  or request.client.trusted_unsigned or clear == b"")
        device = request_device(request)
        # A 12-digit User-Name may be a phone number typed without "+": it is a MAC
        # login only when written as a MAC or equal to the device's own address.
        if looks_like_mac(name) and (not name.isdigit() or normalise_mac(name) == device):
            # MAC authentication (MikroTik login-by=mac): never an SMS for it.
            return self._reject("mac_login", lang)
        try:
            login = phone.normalise(name, otp.default_region, otp.allowed_regions)
        except phone.NumberRefused as refused:
            voucher = await self._voucher(name, now)
            if voucher is None:
                return self._reject(refused.reason, lang)
            login = voucher
        else:
            voucher = None
        state = request.raw("State")
        # The answer to our Access-Challenge (RFC 2865 §5.24) must carry a State we
        # sent, for this login; it is good once, at whichever node (a row, issue 12).
        if state is not None and state.startswith(STATE_PREFIX) \
                and await challenges.answer(self.store, state.hex(), now) != login:
            return self._reject("password_expired", lang)
        if matches(""):
            if voucher is not None:
                return self._reject("enter_code", lang)
            if not proven:
                # Rules §6 costs money: never on the word of an unauthenticated packet.
                return self._reject("unsigned_request", lang)
            return await self.get_password(request, login, device, now, venue)
        return LoginContext(login, device, matches, venue)

    async def request_password(self, text: str, *, device: str | None, nas: str | None,
                               now: float, language: str | None = None,
                               client: str | None = None) -> Issued | Refused:
        """Rules §5-§6 for any front door (RADIUS, the HTTP API): normalise the number,
        apply the limits, issue and queue the SMS in one transaction. ``client``: the
        `[[clients]]` entry whose network the caller is in (a hotspot's users reach the
        portal through its NAT): its venue's limits, SMS and budget apply."""
        venues = self.venues
        otp = venues.config.otp
        venue = venues.of_client(client)
        lang = language or venue.language
        try:
            login = phone.normalise(text, otp.default_region, otp.allowed_regions)
        except phone.NumberRefused as refused:
            return Refused(refused.reason)
        left = await self._time_left(venue, login, now)
        if left is not None and left <= 0:
            self.figures.count(venue, "refused:daily_time_used", now)
            return Refused("daily_time_used")
        result = await self.book.request(login, device=device, nas=nas, language=lang,
                                         now=now, venue=venue if venue.name else None)
        if isinstance(result, Issued):
            self.figures.count(venue, "sms", now)
            self.sms_queued()
        else:
            self.figures.count(venue, f"refused:{result.cap or result.reason}", now)
        return result

    async def get_password(self, request: Request, login: str, device: str | None,
                           now: float, venue: Venue | None = None) -> Outcome:
        """Rules §5-§6 through the controller's own login page, with the settings of
        the client's venue (radiusd.venues)."""
        venue = venue or self.venues.of_client(request.client.name)
        lang = venue.language
        left = await self._time_left(venue, login, now)
        if left is not None and left <= 0:
            self.figures.count(venue, "refused:daily_time_used", now)
            return self._reject("daily_time_used", lang)  # no SMS for a login refused
        state = None
        extra: list[Op] = []
        if request.client.otp_request == "challenge":
            state = STATE_PREFIX + secrets.token_hex(12).encode()
            extra.append(challenges.remember(state.hex(), login,
                                             now + venue.otp.ttl_seconds))
        result = await self.book.request(login, device=device, nas=request.client.name,
                                         language=lang, now=now, extra=extra, venue=venue)
        if isinstance(result, Refused):
            self.figures.count(venue, f"refused:{result.cap or result.reason}", now)
            return Reply.reject(result.message(lang))
        self.figures.count(venue, "sms", now)
        self.sms_queued()
        sent = messages.text("sms_sent", lang, phone=phone.mask(login))
        if state is not None:
            return Reply(Code.ACCESS_CHALLENGE).add("Reply-Message", sent).add("State", state)
        return Reply.reject(sent)

    async def _voucher(self, login: str, now: float) -> str | None:
        """Rules §10 vouchers are made and closed by `radiusd journal` in another
        process, so the database decides (the login path reads the voucher's password
        from it anyway); a miss is remembered briefly so that a flood of unknown names
        costs no query each. A miss can only refuse, never let a password in."""
        until = self._voucher_misses.get(login)
        if until is not None and until > now:
            return None
        rows = await passwords.live_voucher(self.store, login, self.book.quick)
        if not rows:
            self._voucher_misses[login] = now + self.VOUCHER_MISS_SECONDS
            while len(self._voucher_misses) > 10_000:
                self._voucher_misses.popitem(last=False)
            return None
        self._voucher_misses.pop(login, None)
        return rows[0].login

    async def authenticate(self, request: Request, context: LoginContext, now: float) -> bool:
        # The guess budget is per NAS as the network sees it: the address it sends from.
        context.checked = await self.book.check(context.login, context.matches,
                                                context.device, request.source[0], now)
        return context.checked.password is not None

    async def post_auth(self, request: Request, context: LoginContext, ok: bool,
                        now: float) -> Outcome:
        assert context.checked is not None  # `authenticate` set it
        checked = context.checked
        pw = checked.password
        lang = context.venue.language
        if pw is None:
            return self._reject(checked.reason, lang, **checked.values)
        left = await self._time_left(context.venue, context.login, now)
        if left is not None and left <= 0:
            self.figures.count(context.venue, "refused:daily_time_used", now)
            return self._reject("daily_time_used", lang)
        if checked.claimed:
            # Bind to the NAS as accounting names it (NAS-IP-Address first), so that
            # its Accounting-On/Off finds this password (Rules §8).
            nas_address = str(request.get("NAS-IP-Address") or request.get("NAS-IPv6-Address")
                              or request.nas_address)
            if not await self.book.claim(pw, device=context.device, nas=request.client.name,
                                         nas_address=nas_address, now=now,
                                         cfg=context.venue.otp):
                # Claimed, burned or ended meanwhile (here or at another node): Rules §8.
                return self._reject("password_expired", lang)
            if context.venue.name:  # the report's distinct numbers, as keyed tags
                self.figures.count(context.venue, "logins", now, number=self.book.sealer.tag(
                    b"venue-number:" + context.login.encode()))
            if context.venue.otp.one_session_per_number and self.replaced is not None:
                await self.replaced(context.login, pw.id, now)
        return self._accept(pw, now, context.venue, request.client.vendor, left)

    async def _time_left(self, venue: Venue, login: str, now: float) -> int | None:
        """Seconds left today of the venue's `daily_time_seconds` for this number
        (radiusd.venues.time_left); None when the venue has no such cap."""
        if venue.daily_time_seconds is None:
            return None
        since = venue.day_start(now) - venue.otp.max_lifetime_seconds
        return time_left(venue, await sessions.spent(self.store, login, since), now)

    def _accept(self, pw: Password, now: float, venue: Venue, vendor: str,
                left: int | None = None) -> Reply:
        """Access-Accept with the venue's session profile: Session-Timeout (RFC 2865
        §5.27), Idle-Timeout (§5.28) and its rate limit in the NAS vendor's attribute."""
        cfg = self.config
        otp = venue.otp
        reply = Reply(Code.ACCESS_ACCEPT)
        assert pw.class_token is not None
        reply.add("Class", pw.class_token.encode())
        reply.add("Acct-Interim-Interval", cfg.accounting.interim_interval_seconds)
        # The NAS disconnects at the password's max lifetime at the latest (Rules §8).
        remaining = int(pw.issued_at + otp.max_lifetime_seconds - now)
        timeout = min(t for t in (otp.session_timeout_seconds or remaining, remaining,
                                  remaining if left is None else left))
        reply.add("Session-Timeout", max(1, timeout))
        if otp.idle_timeout_seconds:
            reply.add("Idle-Timeout", otp.idle_timeout_seconds)
        for name, value in rate_attributes(vendor, venue.rate_limit):
            reply.add(name, value)
        return reply
