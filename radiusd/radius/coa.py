"""RFC 5176 Dynamic Authorization client, sans-IO: Disconnect-Request and CoA-Request.

Wire only: build and sign a request, keep its identifier and retransmissions, verify
the answer. Which session to end and why is decided elsewhere (Rules §8, session_end);
the asyncio edge that moves the datagrams is `radiusd.radius.disconnect`.

- RFC 5176 §2.3, §3.3: the Request Authenticator is MD5(Code+Identifier+Length+16 zero
  octets+Attributes+Secret), as for Accounting-Request (RFC 2866 §3).
- RFC 5176 §3.4, RFC 3579 §3.2: Message-Authenticator, first in every request we send.
- RFC 5176 §3.5: Error-Cause in a NAK (or an ACK: 201 Residual-Context-Removed).
- RFC 5080 §2.2.1: a retransmission is the same datagram (same Identifier and
  Request Authenticator), sent after a growing interval, a bounded number of times.

An answer is taken only if it comes from the address and port the request went to,
carries the Identifier of a request outstanding there, has an ACK or NAK code for it,
a valid Response Authenticator and, when present, a valid Message-Authenticator.
Anything else is dropped and counted under `radiusd_coa_forged_total` by reason.

The Message-Authenticator of an answer is not required: RFC 5176 §3.4 makes it
optional and NASes commonly leave it out; the BlastRADIUS forgery needs content the
attacker chooses in the request (Proxy-State), which our requests cannot carry since
their Request Authenticator is itself keyed with the secret. When it is there it must
be valid, over the request's Request Authenticator (RFC 5176 §3.4, pyrad) or over
16 zero octets (what FreeRADIUS 3's rad_sign does for these codes).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import ipaddress
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from radiusd.radius.clients import normalise_address
from radiusd.radius.dictionary import Codec, default_codec
from radiusd.radius.wire import (
    MAX_PACKET,
    MESSAGE_AUTHENTICATOR,
    MIN_PACKET,
    ZERO16,
    Code,
    Malformed,
    encode_attribute,
    parse,
)

ERROR_CAUSE = 101
Address = tuple[str, int]
Outcome = Literal["ack", "nak", "timeout", "queue_full"]
RECENT_MAX = 65536

ANSWERS: dict[int, tuple[int, int]] = {  # request code -> (ACK, NAK), RFC 5176 §2
    Code.DISCONNECT_REQUEST: (Code.DISCONNECT_ACK, Code.DISCONNECT_NAK),
    Code.COA_REQUEST: (Code.COA_ACK, Code.COA_NAK),
}


def error_cause_name(value: int | None) -> str | None:
    """RFC 5176 §3.5 name of an Error-Cause value (dictionaries/dictionary.rfc5176), or
    "Error-Cause-N" for one it does not name."""
    if value is None:
        return None
    return default_codec().attr("Error-Cause").names.get(value, f"Error-Cause-{value}")


@dataclass(frozen=True, slots=True)
class SessionTarget:
    """A session as the NAS knows it: what RFC 5176 §3 calls session identification.

    ``client`` is the `[[clients]]` name its NAS matched and ``nas_source`` the address
    its accounting came from; both pick where the request goes. Every other field is
    sent when known; vendors match on different ones (docs/coa.md).
    """

    client: str
    nas_source: str
    user_name: str | None = None
    acct_session_id: str | None = None
    calling_station_id: str | None = None
    framed_ip_address: str | None = None
    nas_ip_address: str | None = None
    nas_identifier: str | None = None


def session_attributes(target: SessionTarget, event_time: float,
                       codec: Codec) -> list[tuple[int, bytes]]:
    """The identifying attributes of a Disconnect-Request (RFC 5176 §3), in the order
    NASes log them, with Event-Timestamp (RFC 5176 §3.2: replay protection)."""
    wanted: list[tuple[str, str | None]] = [
        ("User-Name", target.user_name),
        ("Acct-Session-Id", target.acct_session_id),
        ("Calling-Station-Id", target.calling_station_id),
        ("Framed-IP-Address", target.framed_ip_address),
        ("NAS-IP-Address", target.nas_ip_address),
        ("NAS-Identifier", target.nas_identifier),
    ]
    out: list[tuple[int, bytes]] = []
    for name, value in wanted:
        if not value:
            continue
        try:
            attr = codec.encode(name, value)
        except Exception:  # e.g. a Framed-IP-Address that is not IPv4: not sent
            continue
        if len(attr[1]) <= 253:
            out.append(attr)
    out.append(codec.encode("Event-Timestamp", int(event_time)))
    return out


def build_request(code: int, identifier: int, attributes: list[tuple[int, bytes]],
                  secret: bytes) -> bytes:
    """A signed Disconnect-Request or CoA-Request: Message-Authenticator first, computed
    over a zero Request Authenticator (RFC 5176 §3.4), then the Request Authenticator
    over the whole packet (RFC 5176 §2.3)."""
    if code not in ANSWERS:
        raise ValueError(f"code {code} is not a Disconnect-Request or CoA-Request")
    body = bytes((MESSAGE_AUTHENTICATOR, 18)) + ZERO16
    body += b"".join(encode_attribute(t, v) for t, v in attributes)
    length = MIN_PACKET + len(body)
    if length > MAX_PACKET:
        raise ValueError(f"request of {length} octets exceeds {MAX_PACKET}")
    head = struct.pack("!BBH", code, identifier, length)
    ma = hmac.new(secret, head + ZERO16 + body, hashlib.md5).digest()
    body = body[:2] + ma + body[18:]
    authenticator = hashlib.md5(head + ZERO16 + body + secret).digest()
    return head + authenticator + body


class Forged(Exception):
    """An answer we must not believe; ``reason`` is the counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    code: int
    error_cause: int | None

    @property
    def acked(self) -> bool:
        return self.code in (Code.DISCONNECT_ACK, Code.COA_ACK)


def verify_answer(data: bytes, request: bytes, secret: bytes) -> Answer:
    """Check an answer to ``request`` (the bytes we sent); raise :class:`Forged`.

    RFC 5176 §2.3: Response Authenticator = MD5(Code+Identifier+Length+Request
    Authenticator+Attributes+Secret); §3.4: Message-Authenticator when present.
    """
    try:
        packet = parse(data)
    except Malformed:
        raise Forged("malformed") from None
    if packet.identifier != request[1]:
        raise Forged("unknown_identifier")
    if packet.code not in ANSWERS.get(request[0], ()):
        raise Forged("unexpected_code")
    vector = request[4:20]
    expected = hashlib.md5(data[:4] + vector + data[20:] + secret).digest()
    if not hmac.compare_digest(expected, packet.authenticator):
        raise Forged("response_authenticator")
    if packet.has_message_authenticator:
        at = packet.ma_offset
        zeroed = data[20:at] + ZERO16 + data[at + 16:]
        got = data[at:at + 16]
        if not any(
            hmac.compare_digest(got, hmac.new(secret, data[:4] + v + zeroed,
                                              hashlib.md5).digest())
            for v in (vector, ZERO16)
        ):
            raise Forged("message_authenticator")
    cause = packet.first(ERROR_CAUSE)
    return Answer(packet.code, int.from_bytes(cause) if cause and len(cause) == 4 else None)


@dataclass(frozen=True, slots=True)
class Backoff:
    """RFC 5080 §2.2.1 retransmission: the first wait ``initial`` seconds, each next
    one doubled up to ``maximum``, each jittered by ±``jitter``; at most ``attempts``
    transmissions and ``duration`` seconds from the first, then a timeout."""

    initial: float = 1.0
    maximum: float = 8.0
    attempts: int = 5
    duration: float = 20.0
    jitter: float = 0.1

    def wait(self, sent: int, rand: float) -> float:
        """Seconds to wait after transmission number ``sent`` (1-based); ``rand`` is
        uniform in [-1, 1]."""
        base = min(self.initial * 2.0 ** (sent - 1), self.maximum)
        return base * (1 + self.jitter * rand)


@dataclass(frozen=True, slots=True)
class Done:
    """How one request ended. ``elapsed`` runs from submission to the answer."""

    ticket: int
    outcome: Outcome
    destination: Address
    code: int | None = None
    error_cause: int | None = None
    attempts: int = 0
    elapsed: float = 0.0


@dataclass(slots=True)
class _Exchange:
    ticket: int
    destination: Address
    code: int
    attributes: list[tuple[int, bytes]]
    secret: bytes
    submitted: float
    identifier: int = -1
    raw: bytes = b""
    attempts: int = 0
    first_sent: float = 0.0
    next_at: float = 0.0


def destination_key(address: Address) -> Address:
    """One spelling per NAS address, so an answer from it finds its request."""
    host = normalise_address(address[0])
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return host, address[1]


class CoaClient:
    """Outstanding requests of one UDP socket, sans-IO (time comes in as ``now``).

    Identifiers are per destination (RFC 2865 §3), so at most 256 requests can be
    outstanding to one NAS address and port; we keep at most ``window`` (default 32)
    so that a burst does not overflow the NAS's receive buffer (bursts of 256 to one
    loopback receiver often lost some: BENCHMARKS.md, "Issue 13"). More wait in a
    FIFO, up to ``max_waiting`` over all destinations, past which a request ends at
    once as "queue_full".
    Identifiers go round in order, so one is reused as late as possible.

    Feed it with `submit`, `receive` and `handle_timer`; take what it produced from
    `datagrams_to_send` and `completed`; wake it at `next_timer`.
    """

    def __init__(self, backoff: Backoff | None = None, *,
                 rand: Callable[[], float] = lambda: 0.0, window: int = 32,
                 max_waiting: int = 65536) -> None:
        if not 1 <= window <= 256:
            raise ValueError("window must be 1..256: the Identifier is one octet")
        self.backoff = backoff or Backoff()
        self.window = window
        self.max_waiting = max_waiting
        self._rand = rand
        self._tickets = 0
        self._live: dict[Address, dict[int, _Exchange]] = {}
        self._next_id: dict[Address, int] = {}
        self._waiting: dict[Address, deque[_Exchange]] = {}
        self._n_waiting = 0
        self._timers: list[tuple[float, int, _Exchange]] = []
        # Finished requests, kept `backoff.duration` seconds to tell a late duplicate
        # answer from a forged one: (destination, identifier) -> (request, secret, until).
        self._recent: dict[tuple[Address, int], tuple[bytes, bytes, float]] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._done: list[Done] = []
        self.counters: Counter[str] = Counter()
        self.forged: Counter[str] = Counter()

    # -- input ---------------------------------------------------------------------

    def submit(self, destination: Address, code: int, attributes: list[tuple[int, bytes]],
               secret: bytes, now: float) -> int:
        """Queue one request; returns its ticket (the key of its `Done`)."""
        if code not in ANSWERS:
            raise ValueError(f"code {code} is not a Disconnect-Request or CoA-Request")
        self._tickets += 1
        dest = destination_key(destination)
        ex = _Exchange(self._tickets, dest, code, attributes, secret, now)
        if len(self._live.get(dest, ())) < self.window:
            self._start(ex, self._live.setdefault(dest, {}), now)
        elif self._n_waiting >= self.max_waiting:
            self.counters["queue_full"] += 1
            self._done.append(Done(ex.ticket, "queue_full", dest))
        else:
            self._waiting.setdefault(dest, deque()).append(ex)
            self._n_waiting += 1
        return ex.ticket

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """One datagram from the socket: an answer, or something to count and drop."""
        if len(data) < MIN_PACKET:
            self.forged["malformed"] += 1
            return
        src = destination_key(source)
        self._expire_recent(now)
        ex = self._live.get(src, {}).get(data[1])
        if ex is None:
            self._late_or_forged(data, src)
            return
        try:
            answer = verify_answer(data, ex.raw, ex.secret)
        except Forged as e:
            self.forged[e.reason] += 1
            return
        outcome: Outcome = "ack" if answer.acked else "nak"
        self.counters[outcome] += 1
        self._finish(ex, Done(ex.ticket, outcome, ex.destination, answer.code,
                              answer.error_cause, ex.attempts, now - ex.submitted), now)

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due and time out what has had its last chance."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, ex = heapq.heappop(timers)
            live = self._live.get(ex.destination)
            if live is None or live.get(ex.identifier) is not ex or ex.next_at != at:
                continue  # answered meanwhile: a stale timer
            if ex.attempts >= self.backoff.attempts or \
                    now >= ex.first_sent + self.backoff.duration:
                self.counters["timeout"] += 1
                self._finish(ex, Done(ex.ticket, "timeout", ex.destination,
                                      attempts=ex.attempts, elapsed=now - ex.submitted), now)
                continue
            self.counters["retransmissions"] += 1
            self._send(ex, now)

    # -- output --------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def completed(self) -> list[Done]:
        out, self._done = self._done, []
        return out

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered or timed out, plus those waiting."""
        return sum(len(v) for v in self._live.values()) + self._n_waiting

    # -- inside --------------------------------------------------------------------

    def _start(self, ex: _Exchange, live: dict[int, _Exchange], now: float) -> None:
        ident = self._next_id.get(ex.destination, 0)
        while ident in live:
            ident = (ident + 1) % 256
        self._next_id[ex.destination] = (ident + 1) % 256
        ex.identifier = ident
        ex.raw = build_request(ex.code, ident, ex.attributes, ex.secret)
        ex.first_sent = now
        live[ident] = ex
        self.counters["requests"] += 1
        self._send(ex, now)

    def _send(self, ex: _Exchange, now: float) -> None:
        ex.attempts += 1
        wait = self.backoff.wait(ex.attempts, self._rand())
        ex.next_at = min(now + wait, ex.first_sent + self.backoff.duration)
        heapq.heappush(self._timers, (ex.next_at, ex.ticket, ex))
        self._out.append((ex.raw, ex.destination))

    def _late_or_forged(self, data: bytes, src: Address) -> None:
        """An answer to nothing outstanding: a valid late duplicate (the NAS answered
        a retransmission too) is counted apart; anything else is forged."""
        recent = self._recent.get((src, data[1]))
        if recent is not None:
            try:
                verify_answer(data, recent[0], recent[1])
            except Forged:
                pass
            else:
                self.counters["late_duplicates"] += 1
                return
        known = src in self._next_id
        self.forged["unknown_identifier" if known else "wrong_source"] += 1

    def _expire_recent(self, now: float) -> None:
        recent = self._recent
        while recent:
            key, (_, _, until) = next(iter(recent.items()))
            if until > now and len(recent) <= RECENT_MAX:
                break
            del recent[key]

    def _finish(self, ex: _Exchange, done: Done, now: float) -> None:
        live = self._live[ex.destination]
        del live[ex.identifier]
        self._done.append(done)
        key = (ex.destination, ex.identifier)
        self._recent.pop(key, None)
        self._recent[key] = (ex.raw, ex.secret, now + self.backoff.duration)
        self._expire_recent(now)
        waiting = self._waiting.get(ex.destination)
        if waiting:
            self._n_waiting -= 1
            self._start(waiting.popleft(), live, now)
            if not waiting:
                del self._waiting[ex.destination]
        elif not live:
            del self._live[ex.destination]
            if len(self._next_id) > RECENT_MAX:  # bounded: one entry per NAS address
                self._next_id = {k: v for k, v in self._next_id.items() if k in self._live}
