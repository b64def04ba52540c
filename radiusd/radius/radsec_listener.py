"""RadSec listener (RFC 6614): TLS connections in, packets to the UDP endpoints, out.

A thin asyncio edge, like `listener.py` for UDP. Every decision is elsewhere: framing,
client certificates and connection bounds in `radsec.py`; decode, verification,
duplicates and encoding in the same `Endpoint` objects the UDP listeners use; what to
answer in the same dispatcher. Per connection:

1. The source address must be one some ``radsec = true`` client may use, and have
   fewer than ``[radsec] max_connections_per_address`` connections open; else it is
   closed before any TLS work.
2. TLS 1.2 or 1.3 with a client certificate verified against ``[radsec] ca_file``
   (RFC 6614 §2.2), finished within ``handshake_timeout_seconds``; then the
   certificate must be a client's (RFC 6614 §2.3), before any packet is read.
   Refusals are logged once a minute per source address, with the reason.
3. Then `radsec_connection.Connection` reads its packets: cut by their Length
   (RFC 6614 §2.4), one whose framing or authenticators are bad closes that
   connection only (RFC 6613 §2.6.4).
4. Disconnect-Requests to a RadSec client go over its newest open connection
   (RFC 6614 §2.5, `RadsecListener.request`); their ACK or NAK comes back on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from radiusd.config import RadsecConfig
from radiusd.radius.clients import Client, normalise_address
from radiusd.radius.coa import Done
from radiusd.radius.endpoint import Endpoint, Port
from radiusd.radius.listener import Handler, InFlight, bound_socket
from radiusd.radius.radsec import (
    CertificateClients,
    Identity,
    Refused,
    SourceLimit,
)
from radiusd.radius.radsec_connection import Connection
from radiusd.stats import Stats
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.radsec")


def tls_context(config: RadsecConfig) -> ssl.SSLContext:
    """The server side of RFC 6614 §2.2: our certificate, client certificates required
    and verified against ``ca_file``, TLS 1.2 and 1.3 only. Raises `OSError` naming
    the key whose file cannot be used."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(config.certificate, config.private_key)
    except FileNotFoundError as e:
        raise OSError(f"radsec.certificate / radsec.private_key: no such file: "
                      f"{e.filename or config.certificate}") from None
    except (ssl.SSLError, OSError) as e:
        raise OSError(f"radsec.certificate / radsec.private_key: cannot use "
                      f"{config.certificate!r} with {config.private_key!r}: "
                      f"{_ssl_reason(e)} (PEM certificate and its unencrypted key)") from None
    try:
        ctx.load_verify_locations(cafile=config.ca_file)
    except FileNotFoundError:
        raise OSError(f"radsec.ca_file: no such file: {config.ca_file}") from None
    except (ssl.SSLError, OSError) as e:
        raise OSError(f"radsec.ca_file: cannot use {config.ca_file!r}: {_ssl_reason(e)} "
                      "(PEM certificates of the CA that signs the NAS certificates)") from None
    return ctx


def open_tcp_socket(listen: str, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket, bound as the UDP ones are (`listener.bound_socket`)."""
    sock = bound_socket(listen, socket.SOCK_STREAM, reuse_port, lambda s: s.setsockopt(
        socket.SOL_SOCKET, socket.SO_REUSEADDR, 1))
    try:
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


class RadsecListener:
    """All RadSec listening sockets and their connections."""

    FRAME_SECONDS = 10.0  # a packet begun must be whole within this many seconds
    MAX_PENDING = 256  # requests in progress per connection (one per Identifier)
    MAX_UNSENT = 1 << 20  # replies the peer does not read: past this, closed
    # Read after the handshake, before the certificate is matched to a client (a NAS
    # that pipelines sends its requests at once): up to MAX_PENDING packets of 4,096
    # octets; past this, closed and counted.
    MAX_EARLY = MAX_PENDING * 4096
    REFUSAL_LOG_INTERVAL = 60.0
    # Open or opening in all: descriptors for the store, SMS and UDP stay free even
    # when NAS on `0.0.0.0/0` addresses are allowed and many addresses connect.
    MAX_CONNECTIONS = 4096

    def __init__(
        self,
        endpoints: Mapping[Port, Endpoint],
        handler: Handler,
        in_flight: InFlight,
        config: RadsecConfig,
        clients: CertificateClients,
        context: ssl.SSLContext,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.handler = handler
        self.in_flight = in_flight
        self.config = config
        self.clients = clients
        self.context = context
        self.stats: Stats = endpoints["auth"].stats
        self.limit = SourceLimit(config.max_connections_per_address)
        self.throttle = LogThrottle(self.REFUSAL_LOG_INTERVAL)
        self.clock: Callable[[], float] = clock or (lambda: 0.0)
        self._clock_given = clock is not None
        self.sockets: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self.connections: set[Connection] = set()
        self._by_client: dict[str, Connection] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for sock in self.sockets:
            name = sock.getsockname()
            out.append((name[0], name[1]))
        return out

    async def listen(self, sock: socket.socket) -> None:
        """Accept on ``sock`` (a listening TCP socket) until `stop_reading`."""
        loop = self._loop = asyncio.get_running_loop()
        if not self._clock_given:
            self.clock = loop.time
        self.sockets.append(sock)
        self._acceptors.append(loop.create_task(self._accept_loop(sock),
                                                name=f"radsec-accept-{sock.fileno()}"))

    async def stop_reading(self) -> None:
        """Accept no more connections and read no more packets; requests in flight go
        on and are answered (`close` then ends the connections)."""
        for task in self._acceptors:
            task.cancel()
        for task in self._acceptors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._acceptors.clear()
        for task in self._handshakes:
            task.cancel()
        for conn in self.connections:
            conn.stop_reading()

    async def close(self) -> None:
        await self.stop_reading()
        for conn in list(self.connections):
            conn.close()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    # -- before TLS ----------------------------------------------------------------------

    async def _accept_loop(self, sock: socket.socket) -> None:
        """Our own accept loop (not `create_server`): a connection is looked at before
        any TLS work, and a failed handshake's reason reaches us to be logged."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as e:  # out of descriptors, aborted: keep accepting
                self.stats.count("radsec.accept_failed")
                self.throttle.log(log, logging.ERROR, f"accept/{e.errno}", self.clock(),
                                  "radsec: cannot accept a connection: %s", e)
                await asyncio.sleep(0.1)
                continue
            try:
                self._accepted(conn, peer)
            except Exception as e:  # a bug must not stop the listener
                conn.close()
                self.stats.drop("internal_error")
                self.throttle.log(log, logging.ERROR, f"internal/{type(e).__name__}",
                                  self.clock(), "radsec: error accepting from %s: %s",
                                  peer, e, exc_info=True)

    def _accepted(self, conn: socket.socket, peer: Any) -> None:
        """A TCP connection, not yet read from: refuse it cheaply, or start TLS."""
        host = normalise_address(str(peer[0]))
        source = (host, int(peer[1]))
        self.stats.count("radsec.connections")
        if not self.clients.knows_address(host):
            conn.close()
            self._refuse(source, Refused("radsec.unknown_address",
                                         "no radsec = true client's address includes it"))
            return
        if len(self.connections) + len(self._handshakes) >= self.MAX_CONNECTIONS:
            conn.close()
            self._refuse(source, Refused(
                "radsec.too_many_connections",
                f"{self.MAX_CONNECTIONS} RadSec connections open or opening in all"))
            return
        if not self.limit.admit(host):
            conn.close()
            self._refuse(source, Refused(
                "radsec.too_many_connections",
                f"already {self.limit.open(host)} connections open from this address "
                "(radsec.max_connections_per_address)"))
            return
        assert self._loop is not None
        task = self._loop.create_task(self._handshake(conn, source))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket, source: tuple[str, int]) -> None:
        """TLS with a verified client certificate (RFC 6614 §2.2), then which client
        it is (§2.3); packets are handled only after both."""
        assert self._loop is not None
        limit = self.config.handshake_timeout_seconds
        conn = Connection(self, source)
        sock.setblocking(False)
        try:
            tls, _ = await asyncio.wait_for(self._loop.connect_accepted_socket(
                lambda: conn, sock, ssl=self.context, ssl_handshake_timeout=limit + 1), limit)
        except BaseException as e:
            self.limit.release(source[0])
            sock.close()  # the transport has closed it already, or never had it
            if isinstance(e, TimeoutError):
                self._refuse(source, Refused("radsec.handshake_timeout",
                                             f"the TLS handshake took over {limit:g} s"))
            elif isinstance(e, ssl.SSLError):
                self._refuse(source, Refused("radsec.handshake_failed", _ssl_reason(e)))
            elif isinstance(e, OSError):
                self._refuse(source, Refused("radsec.handshake_failed",
                                             f"connection lost during the TLS handshake"
                                             f"{': ' + str(e) if str(e) else ''}"))
            else:
                raise
            return
        found = self._identify(tls, source)
        if isinstance(found, Refused):
            self._refuse(source, found)
            self.limit.release(source[0])
            tls.abort()
            return
        self.connections.add(conn)
        self._by_client[found.name] = conn  # the newest carries Disconnect-Requests
        conn.opened(tls, found)

    def _identify(self, tls: asyncio.BaseTransport, source: tuple[str, int]) -> Client | Refused:
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:  # CERT_REQUIRED makes this unreachable; refuse rather than assume
            return Refused("radsec.handshake_failed", "no client certificate")
        identity = Identity.from_certificate(ssl_object.getpeercert() or {},
                                             hashlib.sha256(der).hexdigest())
        found = self.clients.match(identity, source[0])
        if not isinstance(found, Refused):
            log.debug("radsec connection from %s:%d is client %s (%s, %s)", source[0],
                      source[1], found.name, ssl_object.version(), identity.describe())
        return found

    def _refuse(self, source: tuple[str, int], refused: Refused) -> None:
        """Counted always; logged once a minute per source address and reason (the
        throttle keeps at most 10,000 keys)."""
        self.stats.drop(refused.counter)
        key = f"{refused.counter}/{source[0]}/{refused.reason}"  # bounded by the throttle
        self.throttle.log(log, logging.WARNING, key, self.clock(),
                          "radsec connection from %s refused: %s (logged at most once a "
                          "minute per address and reason)", source[0], refused.reason)

    def _closed(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.limit.release(conn.source[0])
        if conn.client is not None and self._by_client.get(conn.client.name) is conn:
            del self._by_client[conn.client.name]
            for other in self.connections:  # an older one of the same client, if open
                if other.client is conn.client and not other.closed:
                    self._by_client[conn.client.name] = other

    def holds(self, client: str) -> bool:
        """Whether a connection of ``client`` is open here (Disconnect goes over it)."""
        conn = self._by_client.get(client)
        return conn is not None and not conn.closed

    def held(self) -> list[str]:
        """The clients with a connection open here (`radiusd.handoff`)."""
        return [name for name, conn in self._by_client.items() if not conn.closed]

    async def request(self, client: str, code: int, attributes: list[tuple[int, bytes]],
                      secret: bytes, timeout: float) -> Done:
        """A Disconnect- or CoA-Request to ``client`` over its newest open connection
        (RFC 6614 §2.5); "timeout" with no attempt when it has none open."""
        conn = self._by_client.get(client)
        if conn is None or conn.closed:
            return Done(0, "timeout", ("", 0))
        return await conn.request(code, attributes, secret, timeout)


def _ssl_reason(error: BaseException) -> str:
    """OpenSSL's words for why, e.g. "certificate verify failed: certificate has
    expired" or "unsupported protocol"."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.replace("_", " ").lower()
    return str(error) or type(error).__name__
