"""One RadSec connection (RFC 6614) once its client is known: packets in, replies out.

The asyncio edge of one TLS connection, opened by `radsec_listener.RadsecListener`
after the handshake and the certificate check. Every decision is elsewhere: the
framing in `radsec.Framer`, what closes the connection in `radsec.closes_connection`,
the packet in the same `Endpoint` as UDP, the answer in the dispatcher, our own
Disconnect-Requests' bytes and checks in `coa`.

- Requests are answered in any order (RFC 6614 §2.4: the Identifier matches them);
  Status-Server at once, the others as tasks counted in the shared `InFlight`.
- One timer: a packet begun must be whole within `RadsecListener.FRAME_SECONDS`, and
  a packet must come every ``[radsec] idle_timeout_seconds``.
- `request` sends a Disconnect- or CoA-Request to the NAS on this connection
  (RFC 6614 §2.5) and waits for its verified answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from radiusd.radius.clients import Client
from radiusd.radius.coa import ANSWERS, Done, Forged, build_request, verify_answer
from radiusd.radius.endpoint import Endpoint, Port, Process, Resend
from radiusd.radius.message import Drop
from radiusd.radius.radsec import Framer, closes_connection, port_for
from radiusd.radius.wire import Code, Malformed

if TYPE_CHECKING:
    from radiusd.radius.radsec_listener import RadsecListener

log = logging.getLogger("radiusd.radsec")

# Answers to our Disconnect-/CoA-Requests (RFC 5176 §2), not requests to the endpoint.
_ANSWER_CODES = frozenset(code for pair in ANSWERS.values() for code in pair)


class Connection(asyncio.Protocol):
    """One TLS connection from a known client: packets are answered in any order
    (RFC 6614 §2.4: the Identifier matches them) until it closes."""

    def __init__(self, listener: RadsecListener, source: tuple[str, int]) -> None:
        self.listener = listener
        self.source = source
        self.client: Client | None = None  # set once the certificate is matched
        self.transport: asyncio.Transport | None = None
        self.framer = Framer()
        self.tasks: set[asyncio.Task[None]] = set()
        self._early = bytearray()  # read before the certificate was matched
        self._frame_started = 0.0
        self._last_packet = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Our own requests on this connection (RFC 6614 §2.5), by Identifier:
        # (the bytes sent, its secret, who waits for the answer).
        self._outgoing: dict[int, tuple[bytes, bytes, asyncio.Future[bytes]]] = {}
        self._next_identifier = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def opened(self, transport: asyncio.Transport, client: Client) -> None:
        self.transport = transport
        self.client = client
        self._last_packet = self.listener.clock()
        early, self._early = bytes(self._early), bytearray()
        if early:
            self.data_received(early)
        self._arm()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self.client is None:
            # TLS is up but `opened` has not run yet: what a pipelining NAS sent at once
            # (tens of kB: 8 kB here silently closed a connection of 60 requests).
            self._early += data
            if len(self._early) > self.listener.MAX_EARLY:
                self.listener.stats.drop("radsec.early_overflow")
                self.close()
            return
        listener = self.listener
        had_pending = self.framer.pending
        try:
            packets = self.framer.feed(data)
        except Malformed as e:
            self._malformed(e)
            self.close()
            return
        now = listener.clock()
        for packet in packets:
            if not self._handle(packet, now):
                self.close()
                return
        if packets:
            self._last_packet = now
        if self.framer.pending and (packets or not had_pending):
            self._frame_started = now  # a new packet began in this read
        self._arm()

    def eof_received(self) -> bool | None:
        return False  # close; replies still in progress have no one to go to

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for _, _, waiter in self._outgoing.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the RadSec connection closed"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.listener._closed(self)

    # -- timers -------------------------------------------------------------------------

    def _arm(self) -> None:
        """One timer: the packet begun must end (`FRAME_SECONDS`), or the connection
        must carry a packet every ``idle_timeout_seconds``."""
        if self._timer is not None:
            self._timer.cancel()
        listener = self.listener
        if self.framer.pending:
            deadline = self._frame_started + listener.FRAME_SECONDS
        else:
            deadline = self._last_packet + listener.config.idle_timeout_seconds
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, deadline - listener.clock()), self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._closed:
            return
        kind = "radsec.frame_timeout" if self.framer.pending else "radsec.idle_closed"
        self.listener.stats.count(kind)
        self.close()

    # -- packets ------------------------------------------------------------------------

    def _malformed(self, error: Malformed) -> None:
        """A Length that loses the framing: counted as the UDP drops are, then closed."""
        listener = self.listener
        listener.stats.count("auth.received")
        listener.stats.drop(f"malformed.{error.reason}")
        listener.throttle.log(log, logging.WARNING, f"malformed/{self.source[0]}",
                              listener.clock(), "radsec connection from %s closed: "
                              "malformed stream (%s)", self.source[0], error)

    def _handle(self, packet: bytes, now: float) -> bool:
        """One framed packet; False when it closes the connection (RFC 6613 §2.6.4)."""
        listener = self.listener
        if packet[0] in _ANSWER_CODES:  # to a Disconnect-/CoA-Request of ours
            self._answer(packet)
            return True
        port = port_for(packet[0])
        endpoint = listener.endpoints[port]
        try:
            action = endpoint.receive(packet, self.source, now, client=self.client)
        except Exception as e:  # never let one packet stop the server
            endpoint.internal_error(self.source, e, now)
            return False
        if isinstance(action, Drop):
            if closes_connection(action.reason):
                listener.throttle.log(log, logging.WARNING, f"closed/{self.source[0]}", now,
                                      "radsec connection from %s closed: %s", self.source[0],
                                      action.reason)
                return False
            return True
        if isinstance(action, Resend):
            return self._write(action.data)
        assert isinstance(action, Process)
        if packet[0] == Code.STATUS_SERVER:  # RFC 5997 §4, as on UDP: without a slot
            reply = endpoint.finish(action, listener.handler.status_server(port), now)
            return reply is None or self._write(reply)
        if len(self.tasks) >= listener.MAX_PENDING or listener.in_flight.full:
            endpoint.abandon(action, "overloaded")
            return True
        task = asyncio.get_running_loop().create_task(self._process(endpoint, action, port))
        listener.in_flight.add(task)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _process(self, endpoint: Endpoint, action: Process, port: Port) -> None:
        listener = self.listener
        try:
            outcome = await listener.handler(action.request, port)
        except Exception as e:
            endpoint.failed(action, e, listener.clock())
            return
        data = endpoint.finish(action, outcome, listener.clock())
        if data is not None and not self._write(data):
            self.close()

    # -- our requests to the NAS (RFC 6614 §2.5) ----------------------------------------

    async def request(self, code: int, attributes: list[tuple[int, bytes]], secret: bytes,
                      timeout: float) -> Done:
        """Send one Disconnect- or CoA-Request (RFC 5176) on this connection and wait
        for its verified answer, at most ``timeout`` s. Sent once: TCP retransmits."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        identifier = self._free_identifier()
        if identifier is None or self._closed:
            return Done(0, "queue_full" if identifier is None else "timeout", self.source)
        raw = build_request(code, identifier, attributes, secret)
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._outgoing[identifier] = (raw, secret, waiter)
        try:
            if not self._write(raw):
                return Done(0, "timeout", self.source, attempts=1)
            try:
                answer = verify_answer(await asyncio.wait_for(waiter, timeout), raw, secret)
            except (TimeoutError, ConnectionError):  # no answer, or the connection went
                return Done(0, "timeout", self.source, attempts=1,
                            elapsed=loop.time() - started)
            return Done(0, "ack" if answer.acked else "nak", self.source, answer.code,
                        answer.error_cause, 1, loop.time() - started)
        finally:
            self._outgoing.pop(identifier, None)

    def _free_identifier(self) -> int | None:
        for _ in range(256):
            identifier = self._next_identifier
            self._next_identifier = (identifier + 1) % 256
            if identifier not in self._outgoing:
                return identifier
        return None

    def _answer(self, packet: bytes) -> None:
        """An ACK or NAK: to the request waiting with its Identifier, if it verifies
        (`coa.verify_answer`); anything else is counted and ignored."""
        pending = self._outgoing.get(packet[1])
        reason = "unknown_identifier"
        if pending is not None:
            raw, secret, waiter = pending
            try:
                verify_answer(packet, raw, secret)
            except Forged as e:
                reason = e.reason
            else:
                if not waiter.done():
                    waiter.set_result(packet)
                return
        self.listener.stats.drop(f"radsec.coa_forged.{reason}")

    def _write(self, data: bytes) -> bool:
        """False when the connection is gone or its peer stopped reading."""
        transport = self.transport
        if self._closed or transport is None or transport.is_closing():
            self.listener.stats.count("send_failed")
            return False
        transport.write(data)
        if transport.get_write_buffer_size() > self.listener.MAX_UNSENT:
            self.listener.stats.count("radsec.not_reading")
            return False
        return True

    def stop_reading(self) -> None:
        if self.transport is not None and not self._closed:
            with contextlib.suppress(Exception):
                self.transport.pause_reading()

    def close(self) -> None:
        """Close after what is written has gone (TLS close_notify)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
