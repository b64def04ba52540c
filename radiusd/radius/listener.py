"""UDP listeners: move datagrams between sockets and the endpoint, promptly.

All decisions are in `endpoint.py` and the dispatcher. This file reads, queues,
starts one task per request and writes:

- **Read at once.** When the socket is readable it is drained in a tight loop
  (until it would block) into the `Backlog`, each datagram with its arrival time: the
  kernel's own receive timestamp where there is one (Linux `SO_TIMESTAMPNS`), so that
  time spent in the socket buffer while the server was busy or descheduled counts
  too; else the time it was read.
- **Fast answers or none.** Requests start from the backlog while fewer than
  `[server] max_in_flight` are being processed, a few per event-loop turn so that
  reading never waits long; one that waited more than `[server] max_queue_ms` is
  dropped ("queue_timeout"): its NAS has retransmitted or failed over by then.
- **Status-Server first** (RFC 5997 §4: the watchdog must say whether this server
  can serve): while requests wait, it is answered as it is read, ahead of them and
  without a task slot; and only while the store can commit (the dispatcher decides).
  While nothing waits, every datagram is taken in the order it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from radiusd.config import parse_listen
from radiusd.radius.backlog import Backlog, Waiting
from radiusd.radius.endpoint import Endpoint, Port, Process, Resend
from radiusd.radius.message import Outcome, Request
from radiusd.radius.wire import MAX_PACKET, Code

log = logging.getLogger("radiusd.radius")

RECV_SIZE = MAX_PACKET + 1  # one more, so that a longer datagram is seen as too long
STATUS_SERVER = bytes((Code.STATUS_SERVER,))
# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS; the socket module has no name for it): a
# struct timespec of CLOCK_REALTIME with each datagram. Its value differs on SPARC
# and PA-RISC, where arrival times fall back to the time of reading.
SO_TIMESTAMPNS = 35
KERNEL_STAMPS = sys.platform == "linux" and not platform.machine().startswith(
    ("sparc", "parisc"))
TIMESPEC = struct.Struct("@qq")


class Handler(Protocol):
    """The dispatcher, as the listener sees it."""

    async def __call__(self, request: Request, port: Port) -> Outcome: ...

    def status_server(self, port: Port) -> Outcome: ...


def open_socket(listen: str, reuse_port: bool = False) -> socket.socket:
    """Bind one UDP socket. IPv6 sockets are v6-only so "0.0.0.0" and "[::]" on the same
    port coexist, as FreeRADIUS's two `listen` sections do. ``reuse_port``: several
    workers bind the same address (`SO_REUSEPORT`, radiusd.workers); the kernel picks
    the worker by a hash of both addresses and ports, so a NAS's retransmission reaches
    the worker that has its reply cached."""
    def receive_buffer(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)

    return bound_socket(listen, socket.SOCK_DGRAM, reuse_port, receive_buffer)


def bound_socket(listen: str, kind: int, reuse_port: bool,
                 prepare: Callable[[socket.socket], None]) -> socket.socket:
    """A non-blocking socket of `kind` bound to `listen` ("host:port"), v6-only for an
    IPv6 host, `SO_REUSEPORT` when asked, `prepare` run on it before the bind; closed
    again if any of that fails. UDP's (`open_socket`) and RadSec's TCP one."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        prepare(sock)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class InFlight:
    """Requests being processed, across all listeners: at most ``limit`` at once
    (`[server] max_in_flight`). A listener whose backlog waits for a slot is called
    back when one frees."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[Callable[[], None], None] = {}  # ordered set

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(self.tasks)

    @property
    def full(self) -> bool:
        return len(self.tasks) >= self.limit

    def add(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def when_free(self, callback: Callable[[], None]) -> None:
        self._waiting[callback] = None

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self._waiting:
            waiting = list(self._waiting)
            self._waiting.clear()
            for callback in waiting:
                callback()


class Listener:
    READ_BATCH = 1024  # datagrams read per wake-up at most (then the loop turns)
    START_BATCH = 32  # requests started per event-loop turn at most
    URGENT_PER_READ = 16  # Status-Server answered out of line per wake-up at most

    def __init__(
        self,
        endpoint: Endpoint,
        handler: Handler,
        sock: socket.socket,
        in_flight: InFlight,
        max_queue: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``max_queue``: seconds a request may wait before it starts. ``clock``:
        monotonic seconds (default: the event loop's), injectable for tests."""
        self.endpoint = endpoint
        self.handler = handler
        self.sock = sock
        self.in_flight = in_flight
        self.backlog = Backlog(max_queue, in_flight.limit, endpoint.shed)
        self.kernel_stamps = KERNEL_STAMPS and _enable_stamps(sock)
        self.wall: Callable[[], float] = time.time  # the kernel stamps' clock
        self.clock: Callable[[], float] = clock or (lambda: 0.0)
        self._clock_given = clock is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._reading = False
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return name[0], name[1]

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if not self._clock_given:
            self.clock = loop.time
        loop.add_reader(self.sock.fileno(), self._readable)
        self._reading = True

    async def stop_reading(self) -> None:
        """Read no more; what waits in the backlog is dropped ("shutdown": the NAS
        retransmits to a server that is up). Requests in flight go on."""
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self._reading = False
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        self.backlog.clear("shutdown")

    def close(self) -> None:
        if self._closed:
            return
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        self._closed = True
        self.sock.close()

    # -- reading ------------------------------------------------------------------------

    def _readable(self) -> None:
        now = self.clock()
        # Kernel stamps are wall-clock: an age is (wall now - stamp), taken from `now`.
        wall = self.wall() if self.kernel_stamps else 0.0
        recvmsg = self.sock.recvmsg
        unpack = TIMESPEC.unpack_from
        # Jump the queue only when there is one; otherwise keep the order of arrival.
        urgent = self.URGENT_PER_READ if self.backlog or self.in_flight.full else 0
        read: list[Waiting] = []
        keep = read.append
        for _ in range(self.READ_BATCH):  # the cheapest loop we can: it runs at flood rate
            try:
                data, ancillary, _flags, addr = recvmsg(RECV_SIZE, 64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # an ICMP error reported on the socket; keep serving
                log.debug("socket error on %s: %s", self.address, e)
                continue
            arrived = now
            for level, kind, value in ancillary:
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(value) >= 16:
                    sec, nsec = unpack(value)
                    age = wall - sec - nsec * 1e-9
                    if age > 0:
                        arrived = now - age
            if urgent and data[:1] == STATUS_SERVER:
                urgent -= 1
                self._answer_now(data, addr, arrived)
            else:
                keep((arrived, data, addr))
        if read:
            self.backlog.push(read)
        self._pump()

    def _pump(self) -> None:
        """Start what waits (`Backlog.pop` says which); a few per turn."""
        if self._pump_handle is not None:  # called directly: one pump per turn, not two
            self._pump_handle.cancel()
            self._pump_handle = None
        backlog = self.backlog
        if not backlog:
            return
        now = self.clock()
        in_flight = self.in_flight
        for _ in range(self.START_BATCH):
            if in_flight.full:
                backlog.expire(now)
                in_flight.when_free(self._schedule_pump)
                return
            item = backlog.pop(now)
            if item is None:
                return
            arrived, data, addr = item
            self._start(data, addr, arrived)
        if backlog:
            self._schedule_pump()

    def _schedule_pump(self) -> None:
        if self._pump_handle is None and self._reading and self._loop is not None:
            self._pump_handle = self._loop.call_soon(self._pump)

    def _receive(self, data: bytes, addr: Any, arrived: float) -> Process | None:
        """The endpoint's decision; a cached reply is resent here."""
        endpoint = self.endpoint
        source: tuple[str, int] = (addr[0], addr[1])
        try:
            action = endpoint.receive(data, source, arrived)
        except Exception as e:  # never let one datagram stop the listener
            endpoint.internal_error(source, e, arrived)
            return None
        if isinstance(action, Resend):
            self._send(action.data, addr)
            return None
        return action if isinstance(action, Process) else None

    def _answer_now(self, data: bytes, addr: Any, arrived: float) -> None:
        """A Status-Server while others wait: answered at once, without a slot."""
        action = self._receive(data, addr, arrived)
        if action is not None:
            reply = self.endpoint.finish(
                action, self.handler.status_server(self.endpoint.port), arrived)
            if reply is not None:
                self._send(reply, addr)

    def _start(self, data: bytes, addr: Any, arrived: float) -> None:
        action = self._receive(data, addr, arrived)
        if action is not None:
            assert self._loop is not None
            self.in_flight.add(self._loop.create_task(self._process(action, addr)))

    async def _process(self, action: Process, addr: Any) -> None:
        try:
            outcome = await self.handler(action.request, self.endpoint.port)
        except Exception as e:
            self.endpoint.failed(action, e, self.clock())
            return
        data = self.endpoint.finish(action, outcome, self.clock())
        if data is not None:
            self._send(data, addr)

    def _send(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as e:  # buffer full or the peer unreachable: the NAS retransmits
            self.endpoint.stats.count("send_failed")
            log.debug("cannot send to %s: %s", addr, e)


def _enable_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram with its arrival (Linux)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return bool(sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS))
    except OSError:
        return False
