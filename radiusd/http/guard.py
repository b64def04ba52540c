"""Connection bounds for the HTTP side: the portal faces the open Wi-Fi, so what one
client can hold must not starve the others, the SMS worker or the store.

aiohttp parses HTTP; this module decides which connections it gets and how long
they may take (README: "Putting the portal on an open network"):

- Its own accept loop. A connection over `max_connections_per_address` (per IPv4
  address or IPv6 /64; 20 times more for a configured NAS, whose NAT hides many
  users; trusted proxies uncapped) is closed at once. At `max_connections` the
  oldest idle keep-alive connection makes room; when none is idle the new one is
  closed. The total is kept below the open-file limit (`connection_budget`).
- EMFILE/ENFILE on accept: health part "descriptors" (logged once per episode),
  counted for /metrics; a spare descriptor is given up to accept and close what
  waits, so clients get an answer (a close) instead of hanging.
- `GuardedHandler` (aiohttp's RequestHandler): a deadline for the request head from
  its first byte (`request_timeout_seconds`, else 408 and close), aiohttp's idle
  keep-alive timeout (`idle_timeout_seconds`), one throttled log line without a
  traceback for a malformed request (never aiohttp's ERROR traceback), no software
  version in `Server`.

It relies on RequestHandler's `_waiter`, `_messages` and `_request_in_progress`
(aiohttp 3.x; tested with 3.14), read only: pyproject keeps aiohttp below 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import struct
from collections import Counter
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest

from radiusd.http.api import NAS_FACTOR, limit_key
from radiusd.throttle import LogThrottle

if TYPE_CHECKING:
    from radiusd.app import Server
    from radiusd.http.metrics import HttpCounters

log = logging.getLogger("radiusd.http")

SERVER_NAME = "radiusd"  # the `Server` header: no versions (issue 19)
RESERVED_DESCRIPTORS = 128  # store, SMS provider, RADIUS sockets, logs, imports
MIN_CONNECTIONS = 16
EVICT_SCAN = 64  # connections looked at for an idle one to close at the total cap
BACKLOG = 511
LINGER = 2.0  # seconds the rest of an unread body is read (and dropped) before closing
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nServer: " + SERVER_NAME.encode()
                    + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")


def connection_budget(configured: int, soft_limit: int, open_now: int,
                      reserved: int = RESERVED_DESCRIPTORS) -> int:
    """How many HTTP connections may be open at once: `max_connections`, lowered to
    what the open-file limit leaves after the descriptors open now and `reserved`
    for the store, SMS and RADIUS; never below MIN_CONNECTIONS."""
    if soft_limit < 0:  # RLIM_INFINITY
        return configured
    return max(MIN_CONNECTIONS, min(configured, soft_limit - open_now - reserved))


def open_file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def descriptors_open() -> int:
    """Descriptors this process has open now (Linux /proc; elsewhere a guess)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir used
    except OSError:
        return 64


class ConnectionBook:
    """Open connections per client key and in all; sans-IO (the accept loop asks,
    connection_lost tells)."""

    def __init__(self, total_cap: int, per_key_cap: int) -> None:
        self.total_cap = total_cap
        self.per_key_cap = per_key_cap
        self.per_key: Counter[str] = Counter()
        self.total = 0

    def verdict(self, key: str | None, factor: int = 1) -> str:
        """"ok", "per_address" (this client holds its share) or "total" (full).
        `key` None: not capped per address (a trusted proxy)."""
        if key is not None and self.per_key[key] >= self.per_key_cap * factor:
            return "per_address"
        if self.total >= self.total_cap:
            return "total"
        return "ok"

    def opened(self, key: str | None) -> None:
        self.total += 1
        if key is not None:
            self.per_key[key] += 1

    def closed(self, key: str | None) -> None:
        self.total -= 1
        if key is not None:
            self.per_key[key] -= 1
            if self.per_key[key] <= 0:
                del self.per_key[key]


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection protocol with a head deadline and quiet error logs."""

    def __init__(self, manager: web.Server, guard: Guard, key: str | None,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.key = key
        self.head_at: float | None = None  # loop time of the first byte of a head
        self._head_timer: asyncio.TimerHandle | None = None
        self.counted = True  # holds a place in the guard's ConnectionBook

    def idle(self) -> bool:
        """Waiting for a request with no byte of it yet (may be closed for room)."""
        waiter = self._waiter
        return (waiter is not None and not waiter.done() and self.head_at is None
                and not self._messages)

    def _busy(self) -> bool:
        return bool(self._messages) or bool(getattr(self, "_request_in_progress", False))

    def data_received(self, data: bytes) -> None:
        if data and self.head_at is None and not self._busy():
            self.head_at = self._loop.time()
            if self._head_timer is None:
                self._head_timer = self._loop.call_at(
                    self.head_at + self.guard.request_timeout, self._head_late)
        super().data_received(data)
        if self._messages:
            self.head_at = None  # the head is complete (or answered 400)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.head_at is None or self.transport is None:
            return
        due = self.head_at + self.guard.request_timeout
        if self._loop.time() < due:
            self._head_timer = self._loop.call_at(due, self._head_late)
            return
        if self._busy():
            self.head_at = None
            return
        self.guard.counters.closed["request_timeout"] += 1
        self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    async def finish_response(self, request: BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self.head_at = None  # bytes seen meanwhile were this request's body
        return result

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.guard.released(self)
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse: a short answer without echoing it."""
        self.log_exception("bad request", exc_info=exc)
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("the response was already being sent")
        text = f"{status} {HTTPStatus(status).phrase}\n"
        resp = web.Response(status=status, text=text, content_type="text/plain",
                            headers={"Server": SERVER_NAME, "Cache-Control": "no-store"})
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """Instead of aiohttp's ERROR with a traceback per malformed request: one line
        per minute (LogThrottle) with what was wrong, counted for /metrics."""
        exc = kw.get("exc_info")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            self.guard.descriptors_exhausted("http", exc)
        peer = self.peername
        ip = peer[0] if isinstance(peer, tuple) else "?"
        if isinstance(exc, HttpProcessingError):
            what = f"{type(exc).__name__}: {exc.message}"
            self.guard.bad_request("parse", ip, what)
        else:
            what = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) \
                else str(args[0] if args else "error")
            self.guard.bad_request("server", ip, what)


class Guard:
    """Accept loops and connection bounds, shared by every HTTP listener."""

    def __init__(self, server: Server, counters: HttpCounters, total_cap: int) -> None:
        cfg = server.config.http
        self.server = server
        self.counters = counters
        self.request_timeout: float = cfg.request_timeout_seconds
        self.idle_timeout: float = cfg.idle_timeout_seconds
        self.trusted = set(cfg.trusted_proxies)
        self.book = ConnectionBook(total_cap, cfg.max_connections_per_address)
        self.handlers: dict[GuardedHandler, None] = {}  # oldest first
        self.throttle = LogThrottle(60.0)
        self.tasks: list[asyncio.Task[None]] = []
        self.sockets: list[socket.socket] = []
        self._spare: int | None = None

    # -- accepting --------------------------------------------------------------------

    def listen(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sockets.append(sock)
        return sock

    def serve(self, sock: socket.socket, factory: web.Server) -> None:
        if self._spare is None:
            self._spare = _open_spare()
        task = asyncio.get_running_loop().create_task(self._accept_loop(sock, factory),
                                                      name="http-accept")
        self.tasks.append(task)

    async def accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """One `accept` (a seam: tests make it fail with EMFILE)."""
        return await asyncio.get_running_loop().sock_accept(sock)

    async def _accept_loop(self, sock: socket.socket, factory: web.Server) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await self.accept(sock)
            except OSError as e:
                if e.errno in _OUT_OF_DESCRIPTORS:
                    if not self._shed(sock, e):
                        await asyncio.sleep(0.1)
                    continue
                if self.throttle.due("http.accept", loop.time()) is not None:
                    log.warning("accepting an HTTP connection failed: %s", e.strerror or e)
                await asyncio.sleep(0.01)
                continue
            self.server.health.recovered("descriptors", self.server.clock.now())
            await self._admit(conn, peer, factory)
            await asyncio.sleep(0)  # a flood of connects must not hold up RADIUS

    def _shed(self, sock: socket.socket, e: OSError) -> bool:
        """Out of descriptors: report (once per episode), then close one waiting
        connection with the spare descriptor. False when nothing could be shed."""
        self.descriptors_exhausted("accept", e)
        if self._spare is None:
            self._spare = _open_spare()
            return False
        os.close(self._spare)
        self._spare = None
        shed = False
        try:
            conn, _ = sock.accept()
            conn.close()
            shed = True
        except OSError:
            pass
        self._spare = _open_spare()
        return shed

    async def _admit(self, conn: socket.socket, peer: Any, factory: web.Server) -> None:
        ip = str(peer[0]) if isinstance(peer, tuple) else ""
        key, factor = self.client_key(ip)
        verdict = self.book.verdict(key, factor)
        if verdict == "total" and self._make_room():
            verdict = self.book.verdict(key, factor)
        if verdict != "ok":
            self.counters.refused[verdict] += 1
            _close_now(conn)
            return
        self.book.opened(key)
        handler: GuardedHandler | None = None

        def protocol() -> GuardedHandler:
            nonlocal handler
            handler = GuardedHandler(
                factory, self, key, loop=asyncio.get_running_loop(), access_log=None,
                keepalive_timeout=self.idle_timeout, max_line_size=8190,
                max_field_size=8190, max_headers=64, lingering_time=LINGER)
            self.handlers[handler] = None
            return handler

        try:
            await asyncio.get_running_loop().connect_accepted_socket(protocol, conn)
        except (OSError, RuntimeError) as e:
            if handler is not None:
                self.released(handler)
            else:
                self.book.closed(key)
            conn.close()
            if self.throttle.due("http.connection", asyncio.get_running_loop().time()) \
                    is not None:
                log.warning("could not start an HTTP connection: %s", e)

    def client_key(self, ip: str) -> tuple[str | None, int]:
        """Whose share a connection counts against: the client's limit key (IPv6 per
        /64), None for a trusted proxy; and the NAS factor for a NAS's NAT."""
        if ip in self.trusted:
            return None, 1
        factor = NAS_FACTOR if self.server.clients.find(ip) is not None else 1
        return limit_key(ip), factor

    def _make_room(self) -> bool:
        """At the total cap: close the oldest idle keep-alive connection. Busy ones
        scanned on the way go to the back, so the next scan looks at others."""
        for handler in list(self.handlers)[:EVICT_SCAN]:
            if handler.idle():
                self.counters.closed["idle_for_room"] += 1
                handler.force_close()
                self.released(handler)  # its descriptor closes on the next loop turn
                return True
            del self.handlers[handler]
            self.handlers[handler] = None
        return False

    def released(self, handler: GuardedHandler) -> None:
        """Its place is free (called once per connection, from connection_lost or
        when closed for room)."""
        if handler.counted:
            handler.counted = False
            self.handlers.pop(handler, None)
            self.book.closed(handler.key)

    # -- reporting --------------------------------------------------------------------

    def descriptors_exhausted(self, where: str, e: OSError) -> None:
        """EMFILE/ENFILE: one "descriptors" episode (Health logs it once), counted."""
        self.counters.descriptors[where] += 1
        what = "accepting HTTP connections: shedding them" if where == "accept" \
            else "serving an HTTP request"
        self.server.health.failed(
            "descriptors", f"{os.strerror(e.errno or 0)} {what} (raise LimitNOFILE, or "
            "lower [http] max_connections)", self.server.clock.now())

    def bad_request(self, kind: str, ip: str, what: str) -> None:
        """Issue 19: a flood of malformed requests cannot fill the disk."""
        self.counters.bad[kind] += 1
        what = " ".join(what.split())[:160]
        self.throttle.log(log, logging.WARNING if kind == "server" else logging.INFO,
                          f"http.{kind}", asyncio.get_running_loop().time(),
                          "HTTP request from %s refused: %s", ip, what)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


def _close_now(conn: socket.socket) -> None:
    """Refused: close without lingering (the client sees a reset, at once)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
