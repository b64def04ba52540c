"""UDP listeners (asyncio-dgram): move datagrams between sockets and the endpoint.

All decisions are in `endpoint.py` and the dispatcher; this file only reads, spawns
one task per request to process, and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncio_dgram

from radiusd.config import parse_listen
from radiusd.radius.endpoint import Endpoint, Port, Process, Resend
from radiusd.radius.message import Drop, Outcome, Request

log = logging.getLogger("radiusd.radius")

Handler = Callable[[Request, Port], Awaitable[Outcome]]


def open_socket(listen: str) -> socket.socket:
    """Bind one UDP socket. IPv6 sockets are v6-only so "0.0.0.0" and "[::]" on the same
    port coexist, as FreeRADIUS's two `listen` sections do."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    def __init__(
        self,
        endpoint: Endpoint,
        handler: Handler,
        sock: socket.socket,
        in_flight: set[asyncio.Task[None]],
        max_in_flight: int,
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.sock = sock
        self.in_flight = in_flight
        self.max_in_flight = max_in_flight
        self.stream: Any = None  # asyncio_dgram DatagramServer
        self._reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return name[0], name[1]

    async def start(self) -> None:
        self.stream = await asyncio_dgram.from_socket(self.sock)
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.address}")

    async def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    async def _read(self) -> None:
        stream = self.stream
        assert stream is not None
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        while True:
            try:
                data, addr = await stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError as e:  # an ICMP error reported on the socket; keep serving
                log.debug("socket error on %s: %s", self.address, e)
                continue
            source: tuple[str, int] = (addr[0], addr[1])
            try:
                action = endpoint.receive(data, source, loop.time())
            except Exception:  # never let one datagram stop the listener
                log.exception("unexpected error handling a datagram from %s", source)
                endpoint.stats.drop("internal_error")
                continue
            if isinstance(action, Drop):
                continue
            if isinstance(action, Resend):
                await self._send(action.data, addr)
                continue
            if len(self.in_flight) >= self.max_in_flight:
                endpoint.abandon(action, "overloaded")
                continue
            task = loop.create_task(self._process(action, addr))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _process(self, action: Process, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcome = await self.handler(action.request, self.endpoint.port)
        except Exception:
            log.exception("policy failed on a request from %s; no reply", addr)
            self.endpoint.abandon(action, "policy_error")
            return
        data = self.endpoint.finish(action, outcome, loop.time())
        if data is not None:
            await self._send(data, addr)

    async def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        stream = self.stream
        if stream is None:
            return
        try:
            await stream.send(data, addr)
        except (OSError, asyncio_dgram.TransportClosed) as e:
            log.debug("cannot send to %s: %s", addr, e)
