"""Sending Disconnect-Requests (RFC 5176): the thin asyncio edge over `coa.CoaClient`.

- `routes_from_config` reads the per-client keys `coa`, `coa_address`, `coa_port` and
  `coa_secret` into a `CoaRoute` per `[[clients]]` name.
- `Disconnector.disconnect(target, now)` sends one Disconnect-Request and returns how
  it ended (`DisconnectResult`): ACK, NAK with its Error-Cause, timeout, or "off".
- `DisconnectQueue` is what session-end code hands targets to without waiting: a
  worker sends them and passes each result to a `record` callback.
- For a `radsec = true` client the request goes over the NAS's open RadSec connection
  instead (RFC 6614 §2.5), through `StreamRequests` (the RadSec listener): no UDP,
  no retransmission (TCP delivers it), an answer awaited for `Backoff.duration`.

One UDP socket per address family, opened on first use from an ephemeral port. NAK
and timeout are logged at most once a minute per NAS (`LogThrottle`); ACK at debug.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from radiusd.clock import Clock
from radiusd.config import ClientConfig
from radiusd.radius.coa import (
    Address,
    Backoff,
    CoaClient,
    Done,
    SessionTarget,
    destination_key,
    error_cause_name,
    session_attributes,
)
from radiusd.radius.dictionary import Codec, default_codec
from radiusd.radius.wire import Code
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.coa")

Result = Literal["ack", "nak", "timeout", "queue_full", "off", "handed"]


@dataclass(frozen=True, slots=True)
class CoaRoute:
    """Where one client's NAS takes Disconnect-Requests, from its `[[clients]]` keys."""

    enabled: bool
    address: str | None
    port: int
    secret: bytes
    radsec: bool = False  # over the NAS's RadSec connection (RFC 6614 §2.5), not UDP

    @classmethod
    def from_config(cls, c: ClientConfig) -> CoaRoute:
        secret = c.coa_secret if c.coa_secret is not None else c.secret
        return cls(c.coa == "disconnect", c.coa_address, c.coa_port, secret.encode(),
                   c.radsec)

    def destination(self, target: SessionTarget) -> Address:
        """`coa_address`, else the session's NAS-IP-Address, else the address its
        accounting came from; port `coa_port` (3799, RFC 5176 §3)."""
        host = self.address or _usable(target.nas_ip_address) or target.nas_source
        return host, self.port


def _usable(address: str | None) -> str | None:
    """A NAS-IP-Address we can send to: not 0.0.0.0, multicast or garbage."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return None if ip.is_unspecified or ip.is_multicast else address


def routes_from_config(clients: list[ClientConfig]) -> dict[str, CoaRoute]:
    return {c.name: CoaRoute.from_config(c) for c in clients}


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    """How one Disconnect-Request ended: what is recorded on the session."""

    target: SessionTarget
    outcome: Result
    destination: Address | None = None
    error_cause: int | None = None
    attempts: int = 0
    elapsed: float = 0.0

    @property
    def error_cause_name(self) -> str | None:
        return error_cause_name(self.error_cause)

    def describe(self) -> str:
        """One line for logs and the session record."""
        where = f"{self.destination[0]} port {self.destination[1]}" \
            if self.destination else "no NAS"
        if self.outcome == "handed":
            return (f"handed over: the radiusd holding client {self.target.client!r}'s "
                    "RadSec connection sends it and records the answer here")
        if self.outcome == "timeout" and not self.attempts:
            return (f"not sent: no RadSec connection from client {self.target.client!r} "
                    "is open")
        tries = f"{self.attempts} {'try' if self.attempts == 1 else 'tries'}"
        cause = f" Error-Cause {self.error_cause} {self.error_cause_name}" \
            if self.error_cause is not None else ""
        if self.outcome == "ack":
            return f"Disconnect-ACK from {where}{cause} after {tries}"
        if self.outcome == "nak":
            return f"Disconnect-NAK from {where}{cause or ' without Error-Cause'} " \
                   f"after {tries}"
        if self.outcome == "timeout":
            return f"no answer from {where} after {tries} in {self.elapsed:.1f}s"
        if self.outcome == "queue_full":
            return f"not sent to {where}: too many Disconnect-Requests waiting"
        return f'not sent: coa is "off" for client {self.target.client!r}'


class StreamRequests(Protocol):
    """Where requests to RadSec clients go: their open connections (RFC 6614 §2.5)."""

    def holds(self, client: str) -> bool: ...

    async def request(self, client: str, code: int, attributes: list[tuple[int, bytes]],
                      secret: bytes, timeout: float) -> Done: ...


class _Socket(asyncio.DatagramProtocol):
    """Moves datagrams between one UDP socket and one `CoaClient`."""

    def __init__(self, owner: Disconnector, client: CoaClient) -> None:
        self.owner = owner
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (the selector loop's datagram transport does not subclass DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        loop = asyncio.get_running_loop()
        self.client.receive(data, (str(addr[0]), int(addr[1])), loop.time())
        self.owner.flush(self)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable and the like: the retransmission timer goes on, ending in
        # a timeout, which is what is logged.
        log.debug("coa socket: %s", exc)


class Disconnector:
    """Sends Disconnect-Requests and CoA-Requests; one per call, many at once."""

    def __init__(self, routes: Mapping[str, CoaRoute], clock: Clock, *,
                 backoff: Backoff | None = None, codec: Codec | None = None,
                 bind_v4: str = "0.0.0.0", bind_v6: str = "::", window: int = 32,
                 rand: Callable[[], float] | None = None) -> None:
        import random

        self.routes = routes
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.window = window
        self.codec = codec or default_codec()
        self._bind = {socket.AF_INET: bind_v4, socket.AF_INET6: bind_v6}
        self._rand = rand or (lambda: random.uniform(-1.0, 1.0))
        self._sockets: dict[int, _Socket] = {}
        self._opening: dict[int, asyncio.Lock] = {}
        self._waiters: dict[tuple[int, int], asyncio.Future[Done]] = {}
        self.throttle = LogThrottle(interval=60.0)
        self.results: Counter[str] = Counter()
        self.radsec: StreamRequests | None = None  # set when RadSec is served
        # A RadSec NAS whose connection another process holds: leave it for that one
        # (`radiusd.handoff`); True when left.
        self.handoff: Callable[[SessionTarget], Awaitable[bool]] | None = None
        self._stream_counters: Counter[str] = Counter()

    async def disconnect(self, target: SessionTarget, now: float, *,
                         hand_off: bool = True) -> DisconnectResult:
        """RFC 5176 §3: end ``target`` on its NAS; ``now`` (Unix seconds) is the
        Event-Timestamp. Returns once ACKed, NAKed or timed out (bounded by
        `Backoff.duration`); never raises for what the network does. A RadSec NAS
        whose connection this process does not hold is handed over (`handoff`,
        unless ``hand_off`` is False): "handed", sent by the process that holds it."""
        route = self.routes.get(target.client)
        if route is None or not route.enabled:
            self.results["off"] += 1
            return DisconnectResult(target, "off")
        if route.radsec and hand_off and self.handoff is not None and \
                (self.radsec is None or not self.radsec.holds(target.client)) and \
                await self.handoff(target):
            self.results["handed"] += 1
            return DisconnectResult(target, "handed")
        attributes = session_attributes(target, now, self.codec)
        if route.radsec:
            done = await self._over_radsec(target.client, attributes, route.secret)
        else:
            done = await self.request(route.destination(target), Code.DISCONNECT_REQUEST,
                                      attributes, route.secret)
        where = done.destination if done.destination[0] else None
        result = DisconnectResult(target, done.outcome, where,
                                  done.error_cause, done.attempts, done.elapsed)
        self._log(result)
        return result

    async def request(self, destination: Address, code: int,
                      attributes: list[tuple[int, bytes]], secret: bytes) -> Done:
        """Send one Disconnect-Request or CoA-Request and wait for how it ended."""
        destination = destination_key(destination)  # ::ffff:a.b.c.d goes out over IPv4
        sock = await self._socket(destination[0])
        loop = asyncio.get_running_loop()
        ticket = sock.client.submit(destination, code, attributes, secret, loop.time())
        future: asyncio.Future[Done] = loop.create_future()
        key = (id(sock), ticket)
        self._waiters[key] = future
        self.flush(sock)
        try:
            return await future
        finally:
            self._waiters.pop(key, None)

    async def _over_radsec(self, client: str, attributes: list[tuple[int, bytes]],
                           secret: bytes) -> Done:
        """RFC 6614 §2.5: over the client's own TLS connection, once (TCP retransmits)."""
        if self.radsec is None:
            done = Done(0, "timeout", ("", 0))
        else:
            done = await self.radsec.request(client, Code.DISCONNECT_REQUEST, attributes,
                                             secret, self.backoff.duration)
        self.results[done.outcome] += 1
        self._stream_counters["requests"] += bool(done.attempts)
        self._stream_counters[done.outcome] += 1
        return done

    def flush(self, sock: _Socket) -> None:
        """Send what the client produced, wake the waiters of what ended, re-arm."""
        client = sock.client
        assert sock.transport is not None
        for data, address in client.datagrams_to_send():
            sock.transport.sendto(data, address)
        for done in client.completed():
            self.results[done.outcome] += 1
            future = self._waiters.get((id(sock), done.ticket))
            if future is not None and not future.done():
                future.set_result(done)
        if sock.timer is not None:
            sock.timer.cancel()
            sock.timer = None
        at = client.next_timer()
        if at is not None:
            sock.timer = asyncio.get_running_loop().call_at(at, self._on_timer, sock)

    def _on_timer(self, sock: _Socket) -> None:
        sock.timer = None
        sock.client.handle_timer(asyncio.get_running_loop().time())
        self.flush(sock)

    async def _socket(self, host: str) -> _Socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self._sockets.get(family)
        if sock is not None:
            return sock
        lock = self._opening.setdefault(family, asyncio.Lock())
        async with lock:
            sock = self._sockets.get(family)
            if sock is None:
                client = CoaClient(self.backoff, rand=self._rand, window=self.window)
                loop = asyncio.get_running_loop()
                _, sock = await loop.create_datagram_endpoint(
                    lambda: _Socket(self, client), local_addr=(self._bind[family], 0),
                    family=family)
                self._sockets[family] = sock
        return sock

    def local_addresses(self) -> list[Address]:
        """Where answers must come to (tests)."""
        out = []
        for sock in self._sockets.values():
            if sock.transport is not None:
                name = sock.transport.get_extra_info("sockname")
                out.append((str(name[0]), int(name[1])))
        return out

    def counters(self) -> dict[str, Counter[str]]:
        """Totals over both sockets: "counters" (requests, retransmissions, ack, nak,
        timeout, queue_full, late_duplicates) and "forged" by reason."""
        totals: Counter[str] = Counter()
        forged: Counter[str] = Counter()
        for sock in self._sockets.values():
            totals.update(sock.client.counters)
            forged.update(sock.client.forged)
        totals.update(self._stream_counters)
        return {"counters": totals, "forged": forged}

    def samples(self) -> list[tuple[str, dict[str, str], int]]:
        """Metric samples with stable names, for `/metrics` (name, labels, value)."""
        c = self.counters()
        out: list[tuple[str, dict[str, str], int]] = [
            ("radiusd_coa_requests_total", {}, c["counters"]["requests"]),
            ("radiusd_coa_retransmissions_total", {}, c["counters"]["retransmissions"]),
            ("radiusd_coa_answers_total", {"result": "ack"}, c["counters"]["ack"]),
            ("radiusd_coa_answers_total", {"result": "nak"}, c["counters"]["nak"]),
            ("radiusd_coa_timeouts_total", {}, c["counters"]["timeout"]),
            ("radiusd_coa_queue_full_total", {}, c["counters"]["queue_full"]),
            ("radiusd_coa_late_duplicates_total", {}, c["counters"]["late_duplicates"]),
        ]
        out += [("radiusd_coa_forged_total", {"reason": k}, v)
                for k, v in sorted(c["forged"].items())]
        return out

    def _log(self, result: DisconnectResult) -> None:
        who = result.target.user_name or result.target.acct_session_id or "?"
        if result.outcome in ("ack", "off"):
            log.debug("disconnect %s: %s", who, result.describe())
            return
        host = result.destination[0] if result.destination else "-"
        self.throttle.log(log, logging.WARNING, f"coa.{result.outcome}.{host}",
                          self.clock.now(), "disconnect %s: %s", who, result.describe())

    async def close(self) -> None:
        """Close the sockets (the counters stay readable); pending calls are cancelled."""
        for sock in self._sockets.values():
            if sock.timer is not None:
                sock.timer.cancel()
            if sock.transport is not None:
                sock.transport.close()
        for future in self._waiters.values():
            future.cancel()


class DisconnectQueue:
    """Targets handed over by session-end code, sent by one worker task.

    `put` never waits: past ``max_pending`` targets it refuses (False), counts and
    logs; the session is still closed, only the NAS is not told. ``record`` gets each
    result (e.g. to store it on the session); its errors are logged, not raised.
    """

    def __init__(self, disconnector: Disconnector,
                 record: Callable[[DisconnectResult], Awaitable[None]] | None = None, *,
                 max_pending: int = 65536, concurrency: int = 4096) -> None:
        self.disconnector = disconnector
        self.record = record
        self.refused = 0
        self._queue: asyncio.Queue[SessionTarget] = asyncio.Queue(max_pending)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def put(self, target: SessionTarget) -> bool:
        try:
            self._queue.put_nowait(target)
        except asyncio.QueueFull:
            self.refused += 1
            self.disconnector.throttle.log(
                log, logging.WARNING, "coa.queue_full", self.disconnector.clock.now(),
                "disconnect %s not sent: %d Disconnect-Requests already waiting",
                target.user_name or target.acct_session_id or "?", self._queue.maxsize)
            return False
        return True

    async def run(self) -> None:
        """The worker: runs until cancelled."""
        try:
            while True:
                target = await self._queue.get()
                await self._slots.acquire()
                task = asyncio.create_task(self._one(target))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def join(self) -> None:
        """Until every target put so far has ended and been recorded."""
        await self._queue.join()

    async def _one(self, target: SessionTarget) -> None:
        try:
            try:
                result = await self.disconnector.disconnect(target,
                                                            self.disconnector.clock.now())
            except Exception:  # our bug: say so, and keep the worker going
                log.exception("disconnect %s failed",
                              target.user_name or target.acct_session_id)
                return
            if self.record is not None:
                try:
                    await self.record(result)
                except Exception:
                    log.exception("recording the disconnect of %s failed",
                                  target.user_name or target.acct_session_id)
        finally:
            self._slots.release()
            self._queue.task_done()

    async def close(self) -> None:
        """Cancel the sends in progress (the worker is cancelled by its owner)."""
        for task in list(self._tasks):
            task.cancel()
