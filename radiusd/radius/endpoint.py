"""The protocol rules between a datagram and the policy, sans-IO.

`receive(datagram, source, now)` decides what to do with one datagram: drop it (and
why), send a cached reply again, or hand a checked `Request` to the dispatcher.
`finish(...)` turns the dispatcher's outcome into bytes and remembers them for
retransmissions. The UDP listener only moves datagrams between these and a socket.

Failures that hostile or failing traffic can repeat (a policy error, a reply that
cannot be encoded) are logged as one line per reason per minute with a count, never
a traceback per packet.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Literal

from radiusd.radius.clients import Client, ClientTable
from radiusd.radius.dedup import DedupKey, DuplicateCache
from radiusd.radius.dictionary import Codec
from radiusd.radius.message import Drop, Outcome, Request
from radiusd.radius.wire import (
    MAX_PACKET,
    MIN_PACKET,
    PROXY_STATE,
    Code,
    Malformed,
    Packet,
    accounting_authenticator_ok,
    encode_reply,
    message_authenticator_ok,
    parse,
    password_garbled,
)
from radiusd.stats import Stats
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.radius")

Port = Literal["auth", "acct"]
EAP_MESSAGE = 79

# RFC 2865 §3 / RFC 2866 §3 / RFC 5997 §3: what each port answers.
ACCEPTED_CODES: dict[Port, frozenset[int]] = {
    "auth": frozenset({Code.ACCESS_REQUEST, Code.STATUS_SERVER}),
    "acct": frozenset({Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER}),
}


_HINTS = {
    "bad_authenticator": "the Accounting-Request authenticator does not verify: "
                         "is the shared secret the same on the NAS?",
    "bad_message_authenticator": "its Message-Authenticator does not verify: is the "
                                 "shared secret the same on the NAS?",
    "missing_message_authenticator": "no Message-Authenticator, and this client must send "
                                     "one (require_message_authenticator, or Status-Server)",
    "proxy_state_without_message_authenticator": "unsigned Access-Request with Proxy-State "
                                                 "(the BlastRADIUS pattern)",
}

# The most octets our own attributes can add to a reply, besides Message-Authenticator
# and the copied Proxy-State, counted high. Access-Request: two strings of at most 255
# octets on the wire (Reply-Message and State in a challenge; Class in an accept) and
# three 6-octet integers (Acct-Interim-Interval, Session-Timeout, Idle-Timeout).
# Accounting-Response and the answer to Status-Server carry none.
REPLY_ROOM: dict[int, int] = {
    Code.ACCESS_REQUEST: 2 * 255 + 3 * 6,
    Code.ACCOUNTING_REQUEST: 0,
    Code.STATUS_SERVER: 0,
}
SIGNATURE = 18  # Message-Authenticator, on every reply to a signed request


@dataclass(slots=True)
class Resend:
    data: bytes


@dataclass(slots=True)
class Process:
    request: Request
    key: DedupKey


Action = Drop | Resend | Process


class Endpoint:
    """One per port kind; the client table and duplicate cache are shared."""

    UNKNOWN_LOG_INTERVAL = 60.0

    def __init__(
        self,
        port: Port,
        clients: ClientTable,
        dedup: DuplicateCache,
        codec: Codec,
        stats: Stats,
    ) -> None:
        self.port = port
        self.clients = clients
        self.dedup = dedup
        self.codec = codec
        self.stats = stats
        self._accepted = ACCEPTED_CODES[port]
        self._unknown_logged: dict[str, float] = {}
        self.throttle = LogThrottle(self.UNKNOWN_LOG_INTERVAL)

    def _drop(self, reason: str) -> Drop:
        self.stats.drop(reason)
        return Drop(reason)

    def shed(self, reason: str, n: int = 1) -> None:
        """Datagrams dropped before `receive` looked at them (overload, shutdown)."""
        self.stats.count(f"{self.port}.received", n)
        self.stats.dropped[reason] += n

    def receive(self, data: bytes, source: tuple[str, int], now: float,
                client: Client | None = None) -> Action:
        """Decide about one datagram. ``now`` is monotonic seconds (duplicate window).
        ``client``: already known (RadSec: by its certificate, RFC 6614 §2.3);
        otherwise found by the source address."""
        self.stats.count(f"{self.port}.received")
        try:
            packet = parse(data)
        except Malformed as e:
            return self._drop(f"malformed.{e.reason}")
        host = source[0]
        if client is None:
            client = self.clients.find(host)
        if client is None:
            self._log_unknown(host, now)
            return self._drop("unknown_client")
        if packet.code not in self._accepted:
            return self._drop("unexpected_code")
        reason = self._authenticate(packet.code, packet, client, host)
        if reason:
            self._log_rejected(reason, client, host, now)
            return self._drop(reason)
        if not self._reply_fits(packet):
            self.throttle.log(log, logging.WARNING, f"reply_too_big/{host}", now,
                              "request from %s (client %s) dropped: its Proxy-State leaves no "
                              "room for a reply within %d octets (RFC 2865 §5.33 forbids "
                              "trimming it)", host, client.name, MAX_PACKET)
            return self._drop("reply_too_big")
        key: DedupKey = (self.port, host, source[1], packet.code, packet.identifier,
                         packet.authenticator)
        cached = self.dedup.lookup(key, now)
        if cached is not None:
            if cached:
                self.stats.count("duplicate.resent")
                return Resend(cached)
            return self._drop("duplicate_in_progress")
        if packet.code == Code.ACCESS_REQUEST and not packet.has_message_authenticator \
                and password_garbled(packet, client.secret):  # issue 14: else no trace
            self.throttle.log(log, logging.WARNING, f"secret_mismatch/{client.name}", now,
                              "client %s (%s): its PAP password does not decode with the "
                              "configured secret: likely a shared secret mismatch; is the "
                              "secret the same on the NAS? (logged once a minute per "
                              "client)", client.name, host)
        return Process(Request(packet, client, source, self.codec), key)

    @staticmethod
    def _reply_fits(packet: Packet) -> bool:
        """Would our largest reply to ``packet`` fit in 4,096 octets (RFC 2865 §3)? Its
        Proxy-State must be copied unmodified (RFC 2865 §5.33) and no RFC lets a server
        leave it out, so a request that leaves no room is dropped here, before any
        policy: no SMS, no state change, no answer that cannot be sent."""
        proxy_state = sum(len(v) + 2 for t, v in packet.attributes if t == PROXY_STATE)
        if not proxy_state:
            return True
        room = REPLY_ROOM.get(packet.code, REPLY_ROOM[Code.ACCESS_REQUEST])
        return MIN_PACKET + SIGNATURE + room + proxy_state <= MAX_PACKET

    def _authenticate(self, code: int, packet: Packet, client: Client, host: str) -> str:
        """Return a drop reason, or "" when the packet is authentic."""
        secret = client.secret
        if code == Code.ACCOUNTING_REQUEST:
            if not accounting_authenticator_ok(packet, secret):
                return "bad_authenticator"
            if packet.has_message_authenticator and not message_authenticator_ok(packet, secret):
                return "bad_message_authenticator"
            return ""
        if packet.has_message_authenticator:
            if not message_authenticator_ok(packet, secret):
                return "bad_message_authenticator"
            if code == Code.ACCESS_REQUEST and not client.ma_latched:
                self.clients.latch(client)
                if client.require_message_authenticator == "auto":
                    log.info("client %s sent a Message-Authenticator (from %s): it is "
                             "required from this client from now on", client.name, host)
            return ""
        # No Message-Authenticator from here on.
        if code == Code.STATUS_SERVER:
            return "missing_message_authenticator"  # RFC 5997 §3: MUST
        if client.requires_message_authenticator():
            return "missing_message_authenticator"
        if packet.first(EAP_MESSAGE) is not None:
            return "missing_message_authenticator"  # RFC 3579 §3.2
        if packet.first(PROXY_STATE) is not None:
            # BlastRADIUS: an unsigned Access-Request with Proxy-State is the attack's
            # shape; a NAS (not a proxy) never sends one. FreeRADIUS limit_proxy_state.
            return "proxy_state_without_message_authenticator"
        return ""

    def finish(self, action: Process, outcome: Outcome, now: float) -> bytes | None:
        """Encode the policy's answer and remember it for retransmissions."""
        if isinstance(outcome, Drop):
            self.dedup.forget(action.key)
            self.stats.drop(outcome.reason)
            return None
        request = action.request
        try:
            attrs = [self.codec.encode(name, value) for name, value in outcome.attributes]
            data = encode_reply(request.packet, outcome.code, attrs, request.client.secret)
        except Exception as e:
            self.dedup.forget(action.key)
            self.stats.drop("reply_encoding")
            self.throttle.log(log, logging.ERROR, f"reply_encoding/{type(e).__name__}", now,
                              "cannot encode the reply to %s; dropped: %s",
                              request.source[0], _describe(e))
            return None
        self.dedup.answered(action.key, data, now)
        self.stats.count(f"{self.port}.sent.{Code(outcome.code).name.lower()}")
        return data

    def abandon(self, action: Process, reason: str) -> None:
        """The request could not be processed (overload, failure): no reply, and a
        retransmission may try again."""
        self.dedup.forget(action.key)
        self.stats.drop(reason)

    def failed(self, action: Process, error: Exception, now: float) -> None:
        """The policy raised: no reply (a retransmission may try again), and one line
        per kind of error a minute. A failing store is logged by `Health` once per
        episode with its real error; here it is only the count of requests it cost."""
        self.abandon(action, "policy_error")
        self.throttle.log(log, logging.ERROR, f"policy_error/{type(error).__name__}", now,
                          "no reply to a request from %s: %s", action.request.source[0],
                          _describe(error))

    def internal_error(self, source: tuple[str, int], error: Exception, now: float) -> None:
        """A bug met by one datagram in `receive`: counted, one line a minute."""
        self.stats.drop("internal_error")
        self.throttle.log(log, logging.ERROR, f"internal_error/{type(error).__name__}", now,
                          "unexpected error handling a datagram from %s: %s", source[0],
                          _describe(error))

    def _due(self, key: str, now: float) -> bool:
        """At most one log line a minute per key, in bounded memory (spoofed floods)."""
        last = self._unknown_logged.get(key)
        if last is not None and now - last < self.UNKNOWN_LOG_INTERVAL:
            return False
        if len(self._unknown_logged) > 10_000:
            self._unknown_logged.clear()
        self._unknown_logged[key] = now
        return True

    def _log_rejected(self, reason: str, client: Client, host: str, now: float) -> None:
        """The drops that mean a misconfigured NAS (the secret, above all) are worth a
        line in the log while it happens, not only in the counters."""
        hint = _HINTS.get(reason)
        if hint is None or not self._due(f"{reason}/{client.name}/{host}", now):
            return
        log.warning("request from %s (client %s) dropped: %s (logged at most once a "
                    "minute per address and reason)", host, client.name, hint)

    def _log_unknown(self, host: str, now: float) -> None:
        if not self._due(host, now):
            return
        log.warning(
            "request from %s dropped: no client matches that address "
            "(add a [[clients]] entry; logged at most once a minute per address)",
            host,
        )


def _describe(error: BaseException) -> str:
    """``Type: message (at file:line)``: enough to find a bug, in one line."""
    where = ""
    tb = traceback.extract_tb(error.__traceback__)
    if tb:
        frame = tb[-1]
        where = f" (at {frame.filename.rsplit('/', 2)[-1]}:{frame.lineno})"
    return f"{type(error).__name__}: {error}{where}"
