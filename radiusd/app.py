"""Composition: config -> store, policies, endpoints, listeners; start and stop.

`Server` is what `radiusd serve` runs and what tests start in-process on loopback
(like aiosmtpd's Controller): same code, ephemeral ports, an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from radiusd import phone
from radiusd.accounting import AccountingPolicy, AcctRecord
from radiusd.auth import LoginContext, OtpAuth
from radiusd.clock import Clock, SystemClock
from radiusd.config import DEFAULT_SECRET, Config
from radiusd.dispatch import Dispatcher
from radiusd.health import Health
from radiusd.otp import PasswordBook
from radiusd.radius.clients import Client, ClientTable
from radiusd.radius.dedup import DuplicateCache
from radiusd.radius.dictionary import default_codec
from radiusd.radius.endpoint import Endpoint, Port
from radiusd.radius.listener import InFlight, Listener, open_socket
from radiusd.reaper import Reaper
from radiusd.reload import remove_pid_file, write_pid_file
from radiusd.sealing import Sealer
from radiusd.session_end import SessionEnd, password_ended
from radiusd.stats import Stats
from radiusd.store import clients as latches
from radiusd.store.backend import Backend, describe, for_config
from radiusd.venues import venue_summary
from radiusd.workers import PUBLISH_SECONDS, Exchange

if TYPE_CHECKING:
    from radiusd.http import HttpHandle
    from radiusd.http.metrics import Figures, RadiusTimer
    from radiusd.radius.radsec_listener import RadsecListener
    from radiusd.sms.outbox import OutboxWorker

log = logging.getLogger("radiusd")

# Bind errors that mean "this machine has no such address family/address": skip the
# address with a warning as long as another one of the same port kind is bound.
_SKIPPABLE = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


class Server:
    def __init__(self, config: Config, clock: Clock | None = None, worker: int = 0,
                 exchange: Exchange | None = None) -> None:
        self.config = config
        # Which of `[server] workers` this is (radiusd.workers): all answer RADIUS and
        # send SMS; the first also serves HTTP (adding up the others' counters from
        # `exchange` for /metrics) and runs the reaper.
        self.worker = worker
        self.exchange = exchange
        self.clock = clock or SystemClock()
        self.stats = Stats()
        self.health = Health()  # store, sms: what Status-Server and /healthz say
        self.codec = default_codec()
        self.clients = ClientTable(config.clients)
        self.dedup = DuplicateCache(config.server.duplicate_window_seconds)
        self.store: Backend = for_config(config.database, self.health, self.clock)
        self.listeners: list[Listener] = []
        self.endpoints: dict[Port, Endpoint] = {}  # UDP and RadSec share them
        self.radsec: RadsecListener | None = None  # RFC 6614, [server] radsec_listen
        self.radius_timer: RadiusTimer | None = None  # /metrics' latency (http.instrument)
        self.http: HttpHandle | None = None  # portal, API, /metrics (worker 0; start_http)
        self.in_flight = InFlight(config.server.max_in_flight)  # across all listeners
        self.background: list[asyncio.Task[Any]] = []
        self.dispatcher: Dispatcher[LoginContext, AcctRecord] | None = None
        self.sms: OutboxWorker | None = None
        self._stopped = asyncio.Event()
        self._latch_writes: set[asyncio.Task[None]] = set()

    def addresses(self, port: Port) -> list[tuple[str, int]]:
        return [ls.address for ls in self.listeners if ls.endpoint.port == port]

    async def start(self) -> None:
        cfg = self.config
        try:
            await self.store.open()
        except Exception as e:
            if cfg.database.url is not None:  # authentication, host, missing database
                from radiusd.store.postgres import reason

                raise OSError(f"database.url: cannot use {describe(cfg.database)}: "
                              f"{reason(e)}") from e
            if not isinstance(e, OSError | sqlite3.Error):
                raise
            raise OSError(f"database.path: cannot open {cfg.database.path!r}: "
                          f"{getattr(e, 'strerror', None) or e}") from e
        # The SQLite file, if that is the store: a key beside it, rows sealed in it.
        sqlite_file = cfg.database.path if cfg.database.url is None else None
        self.sealer = Sealer.from_config(cfg.otp, database=sqlite_file)
        self.book = PasswordBook(cfg.otp, cfg.sms, self.sealer, self.store,
                                 ended=password_ended)
        await self._load_book()
        self.auth = OtpAuth(cfg, self.book, self.store, self.sms_wake)
        self.sms = await self._start_sms()
        self.session_end = SessionEnd(self.book)  # Rules §8, §10: what a session's end ends
        self._start_disconnects()  # issue 13: revocations tell the NAS (RFC 5176)
        self.auth.replaced = self.session_end.replaced
        self.accounting = AccountingPolicy(self.store, self.session_end, self._login_of)
        self.dispatcher = Dispatcher(self.auth, self.accounting, self.clock, self.health)
        self.reaper = Reaper(cfg, self.book, self.session_end, self.store, self.clock)
        if self.worker == 0:
            self.background.append(asyncio.create_task(self.reaper.run(), name="reaper"))
        self.background.append(asyncio.create_task(self._flush_venue_figures(),
                                                   name="venue-figures"))
        try:
            self._bind("auth", cfg.server.auth_listen)
            self._bind("acct", cfg.server.acct_listen)
            for listener in self.listeners:
                await listener.start()
            if cfg.server.radsec_listen:
                await self._bind_radsec(cfg.server.radsec_listen)
        except BaseException:
            for listener in self.listeners:
                listener.close()
            if self.radsec is not None:
                await self.radsec.close()
            await self._stop_background()
            await self.store.close()
            raise
        self._log_startup()
        from radiusd.http import instrument, start_http

        if self.exchange is not None:  # every worker times its answers for /metrics
            instrument(self)
            if self.worker != 0:
                self.background.append(asyncio.create_task(self._publish_every(),
                                                           name="publish-figures"))

        # None when [http] listen is empty, and in every worker but the first.
        self.http = await start_http(self) if self.worker == 0 else None

    def _start_disconnects(self) -> None:
        """The Disconnect-Request sender and its queue; each answer is recorded on
        its session (docs/coa.md)."""
        from radiusd.radius.disconnect import Disconnector, DisconnectQueue, routes_from_config

        self.disconnector = Disconnector(routes_from_config(self.config.clients), self.clock)
        self.disconnects = DisconnectQueue(self.disconnector, self.session_end.recorded)
        self.session_end.kick = self.session_end.queue_to(self.disconnects)
        self.background.append(asyncio.create_task(self.disconnects.run(), name="coa"))
        if any(c.radsec for c in self.config.clients):
            # A RadSec NAS whose connection another worker or node holds (issue 16).
            from radiusd.handoff import Handoff

            self.disconnector.handoff = Handoff(self.store, self.clock,
                                                self.session_end.unique_id_of)

    def _login_of(self, name: str) -> str:
        """Accounting's User-Name as the login it was at Access-Request (E.164)."""
        otp = self.config.otp
        try:
            return phone.normalise(name, otp.default_region, otp.allowed_regions)
        except phone.NumberRefused:
            return name  # a voucher login, or whatever the NAS sends

    async def _load_book(self) -> None:
        """Nothing of the passwords and limits is loaded: the database holds them and
        every request reads it (issue 12). The "auto" Message-Authenticator latches
        are: read once, written once per client when it latches."""
        self.clients.restore(await latches.latched(self.store))
        self.clients.on_latch = self._persist_latch

    def _persist_latch(self, client: Client) -> None:
        """Write a client's latch (FreeRADIUS "auto") in the background: it is already
        in force here; the row makes it survive a restart and reach other nodes."""
        async def write() -> None:
            try:
                await self.store.write([latches.latch(client.name, self.clock.now())])
            except Exception as e:  # the store logs its own failures
                log.warning("client %s: its Message-Authenticator latch was not saved "
                            "(%s); it holds until a restart", client.name, e)

        task = asyncio.get_running_loop().create_task(write())
        self._latch_writes.add(task)
        task.add_done_callback(self._latch_writes.discard)

    async def _start_sms(self) -> OutboxWorker:
        """The SMS provider and the outbox worker (Rules §6)."""
        from radiusd.sms import build_provider
        from radiusd.sms.outbox import OutboxWorker
        from radiusd.sms.routes import SmsRoutes

        provider = build_provider(self.config.sms)
        # Each venue's provider and sender (issue 15); without venues, all by `provider`.
        self.sms_routes = SmsRoutes(provider, self.config, self.auth.venues)
        worker = OutboxWorker(self.store, provider, self.sealer, self.clock,
                              self.config.sms.max_age_seconds, self.book.sms_gave_up,
                              health=self.health, route=self.sms_routes)
        if hasattr(provider, "on_receipt"):  # SMPP transceiver: receipts go to the row
            provider.on_receipt = worker.receipt
        self.background.append(asyncio.create_task(worker.run(), name="sms-outbox"))
        return worker

    def sms_wake(self) -> None:
        if self.sms is not None:
            self.sms.wake()

    def _bind(self, port: Port, addresses: list[str]) -> None:
        endpoint = self.endpoints[port] = Endpoint(port, self.clients, self.dedup,
                                                   self.codec, self.stats)
        assert self.dispatcher is not None
        for sock in self._sockets(addresses, port, open_socket):
            self.listeners.append(
                Listener(endpoint, self.dispatcher, sock, self.in_flight,
                         self.config.server.max_queue_ms / 1000)
            )

    def _sockets(self, addresses: list[str], what: str,
                 opener: Callable[..., socket.socket]) -> list[socket.socket]:
        """One socket per address (shared with the other workers' by SO_REUSEPORT); an
        address family this host lacks is skipped with a warning, any other failure
        stops the start naming the address; none at all stops it too."""
        socks: list[socket.socket] = []
        errors: list[str] = []
        for listen in addresses:
            try:
                socks.append(opener(listen, reuse_port=self.config.server.workers > 1))
            except OSError as e:
                if e.errno in _SKIPPABLE:
                    errors.append(f"{listen}: {e.strerror}")
                    continue
                raise OSError(e.errno, f"cannot listen on {listen} ({what}): "
                                       f"{e.strerror}") from e
        for err in errors:
            log.warning("not listening on %s", err)
        if not socks:
            raise OSError(f"no {what} address could be bound: {'; '.join(errors)}")
        return socks

    async def _flush_venue_figures(self, once: bool = False) -> None:
        """Write what each venue did to its days (radiusd.venue_figures), every
        FLUSH_SECONDS (sooner when much is pending), and once more at stop."""
        from radiusd.venue_figures import FLUSH_SECONDS

        waited = 0.0
        while True:
            if not once:
                await asyncio.sleep(0.5)
                waited += 0.5
                if waited < FLUSH_SECONDS and not self.auth.figures.full:
                    continue
                waited = 0.0
            ops = self.auth.figures.drain()
            if ops:
                try:
                    await self.store.write(ops)
                except Exception as e:  # the store logs its own outage
                    log.warning("venue figures of the last %.0f s not saved: %s",
                                FLUSH_SECONDS, e)
            if once:
                return

    def reload(self, new: Config) -> list[str]:
        """Apply a valid config to the running server (radiusd.reload): a new client
        table (latches kept by name), venues, `[otp]`, SMS templates and providers,
        Disconnect routes. Everything is built first; then the references are swapped
        with no await between, so each request sees the old settings or the new.
        Returns the changed keys that need a restart (kept as they run)."""
        from radiusd.radius.disconnect import routes_from_config
        from radiusd.reload import kept_running, needs_restart
        from radiusd.venues import Venues

        later = needs_restart(self.config, new)
        applied = kept_running(self.config, new)
        table = ClientTable(applied.clients)
        table.restore(c.name for c in self.clients.clients if c.ma_latched)
        table.on_latch = self._persist_latch
        venues = Venues(applied)
        routes = routes_from_config(applied.clients)
        certified = None
        if self.radsec is not None:  # RFC 6614: its clients by certificate, from the table
            from radiusd.radius.radsec import CertificateClients

            certified = CertificateClients(applied.clients, table.clients)
        if getattr(self, "sms_routes", None) is not None:
            self.sms_routes.update(applied, venues)  # makes new providers; may refuse
        # The swap: plain assignments, nothing here awaits or fails.
        for endpoint in self.endpoints.values():  # UDP and RadSec share them
            endpoint.clients = table
        if self.radsec is not None and certified is not None:
            self.radsec.clients = certified  # new connections' certificates
            by_name = {c.name: c for c in table.clients}
            for conn in list(self.radsec.connections):  # open ones: the new entry, or shut
                if conn.client is None:
                    continue
                if conn.client.name in by_name:
                    conn.client = by_name[conn.client.name]
                else:
                    conn.close()  # its [[clients]] entry was removed
        self.clients = table
        self.auth.config = applied
        self.auth.venues = venues
        self.auth.language = applied.otp.language
        self.book.cfg = self.book.limits.cfg = self.book.guesses.cfg = applied.otp
        self.book.sms = applied.sms
        if hasattr(self, "disconnector"):
            self.disconnector.routes = routes
        self.config = applied
        return later

    def reload_file(self) -> bool:
        """SIGHUP: read the config file again and apply it (radiusd.reload); an
        invalid one changes nothing, and each problem is logged as check-config says
        it. True when the new config is in force."""
        from radiusd.config import ConfigError, load

        path = self.config.source
        if path is None:
            log.warning("reload: running with the embedded defaults, there is no file "
                        "to read again; start with -c FILE")
            return False
        try:
            new = load(path)
            later = self.reload(new)
        except ConfigError as e:
            for line in str(e).splitlines():
                log.error("reload refused, the running config stays: %s", line)
            return False
        log.info("reloaded %s: %d clients, %d venues", path, len(self.config.clients),
                 len(self.config.venues))
        for key in later:
            log.warning("reload: %s changed; it takes effect after a restart", key)
        for warning in new.warnings():
            log.warning("%s", warning)
        return True

    async def _bind_radsec(self, addresses: list[str]) -> None:
        """RADIUS over TLS (RFC 6614): the same endpoints and dispatcher as UDP."""
        from radiusd.radius.radsec import CertificateClients
        from radiusd.radius.radsec_listener import RadsecListener, open_tcp_socket, tls_context

        assert self.dispatcher is not None
        clients = CertificateClients(self.config.clients, self.clients.clients)
        if not clients:
            log.warning("server.radsec_listen is set but no [[clients]] entry has radsec = "
                        "true: every RadSec connection will be refused")
        self.radsec = RadsecListener(self.endpoints, self.dispatcher, self.in_flight,
                                     self.config.radsec, clients,
                                     tls_context(self.config.radsec))
        for sock in self._sockets(addresses, "radsec", open_tcp_socket):
            await self.radsec.listen(sock)
        if hasattr(self, "disconnector"):  # RFC 6614 §2.5: over the NAS's connection
            from radiusd.handoff import HandoffSender

            self.disconnector.radsec = self.radsec
            # ...and what other processes left for the NAS whose connection is here.
            self.handoffs = HandoffSender(self.store, self.disconnector, self.clock,
                                          self.radsec.held)
            self.background.append(asyncio.create_task(self.handoffs.run(),
                                                       name="radsec-handoffs"))

    def _log_startup(self) -> None:
        for listener in self.listeners:
            host, port = listener.address
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening for %s on %s/udp", listener.endpoint.port, shown)
        for host, port in self.radsec.addresses if self.radsec is not None else ():
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening for radsec on %s/tcp (RADIUS over TLS)", shown)
        for c in self.config.clients:
            addrs = [c.address] if isinstance(c.address, str) else c.address
            log.info("client %s: %s", c.name, ", ".join(addrs))
        if any(c.secret == DEFAULT_SECRET for c in self.config.clients):
            names = [c.name for c in self.config.clients if c.secret == DEFAULT_SECRET]
            log.warning("client %s uses FreeRADIUS's well-known default secret: fine on "
                        "loopback for a trial, never on a network", ", ".join(names))
        for v in self.config.venues:
            log.info("venue %s: %s", v.name, venue_summary(v))
        log.info("database %s", describe(self.config.database))
        sms = self.config.sms
        where = {"file": sms.file.path, "kannel": sms.kannel.url, "http": sms.http.url,
                 "smpp": f"{sms.smpp.host}:{sms.smpp.port}"}.get(sms.provider, "")
        log.info("SMS provider %s%s", sms.provider, f" ({where})" if where else "")
        for warning in self.config.warnings():
            log.warning("%s", warning)

    def own_figures(self) -> Figures:
        """This process's own counters (radiusd.workers: the first adds the others')."""
        from radiusd.http.metrics import own_figures

        figures = own_figures(self.stats.counts, self.stats.dropped,
                              self.radius_timer, self.book.limits.refused,
                              self.book.guesses.refused)
        if hasattr(self, "auth"):
            figures.venues.update(self.auth.figures.totals)
        return figures

    def _publish(self) -> None:
        if self.exchange is not None and self.worker != 0:
            try:
                self.exchange.publish(self.worker, self.own_figures().to_json())
            except OSError as e:
                log.warning("cannot publish this worker's counters: %s", e)

    async def _publish_every(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_SECONDS)
            self._publish()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading, let in-flight requests finish and reply, flush the store."""
        from radiusd.http import stop_http

        await stop_http(self.http)
        for listener in self.listeners:
            await listener.stop_reading()
        if self.radsec is not None:
            await self.radsec.stop_reading()
        await self._stop_background()
        if getattr(self, "sms_routes", None) is not None:
            await self.sms_routes.close()
        if self.in_flight:
            _, pending = await asyncio.wait(set(self.in_flight), timeout=grace)
            for task in pending:
                task.cancel()
        if hasattr(self, "auth"):
            await self._flush_venue_figures(once=True)  # the last seconds' counts
        for listener in self.listeners:
            listener.close()
        if self.radsec is not None:
            await self.radsec.close()
        if hasattr(self, "disconnector"):
            await self.disconnects.close()
            await self.disconnector.close()
        if hasattr(self, "book"):
            self._publish()  # the last counts, for a first worker still serving
            self.book.close()
        await self.store.close()
        log.info("stopped: %s", self.stats.summary())
        self._stopped.set()

    async def _stop_background(self) -> None:
        """Reaper and SMS worker: cancel, then wait (the worker records its sends)."""
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.background.clear()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(config: Config, worker: int = 0, exchange: Exchange | None = None) -> int:
    """Run until SIGTERM or SIGINT; return the exit status."""
    # Handlers first: a signal that arrives while starting is a stop once started.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    raise_open_file_limit()
    server = Server(config, worker=worker, exchange=exchange)
    started = False

    def hangup() -> None:  # radiusd.reload: read the file again (once started)
        if started:
            server.reload_file()
        else:
            log.warning("SIGHUP while starting: ignored; send it again once ready")

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await server.start()
    except OSError as e:
        log.error("%s", e)
        await server.store.close()
        return 1
    except Exception:  # e.g. ConfigError (the sealing key): the CLI says it; exit, not hang
        await server._stop_background()
        await server.store.close()
        raise
    _settle_memory(config)
    started = True
    own_pid_file = exchange is None  # with workers, the parent writes it (cli)
    if own_pid_file:
        write_pid_file(config.server.pid_file)
    log.info("radiusd ready (pid %d)", os.getpid())
    await stop.wait()
    if own_pid_file:
        remove_pid_file(config.server.pid_file)
    t0 = time.monotonic()
    log.info("shutting down: finishing %d request(s) in flight", len(server.in_flight))
    await server.stop()
    log.info("shutdown took %.2fs", time.monotonic() - t0)
    return 0


def raise_open_file_limit() -> None:
    """Raise the open-file soft limit to the hard one (systemd sets soft 1024): every
    HTTP connection, SMS provider socket and database file takes a descriptor, and
    [http] max_connections is kept below the limit (radiusd.http.guard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("open-file limit stays %d (hard %d): %s", soft, hard, e)


def _settle_memory(config: Config) -> None:
    """Keep garbage-collector pauses out of the reply latency: load the number
    metadata now, then freeze everything start-up made (dictionaries, metadata,
    config) so that collections walk only what requests create."""
    phone.warm(config.otp.default_region, config.otp.allowed_regions)
    gc.collect()
    gc.freeze()


def run(config: Config, worker: int = 0, exchange: Exchange | None = None) -> int:
    """Run `serve` on uvloop when installed. Not asyncio.run: its Runner turns SIGINT
    into KeyboardInterrupt, and SIGINT must be the same clean stop as SIGTERM."""
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(serve(config, worker, exchange))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
