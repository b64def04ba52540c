"""HTTP front door in the same process: the "Get password" API for external portals,
the hosted portal page (Rules §4) and its CoovaChilli logon, `/healthz` and `/metrics`.
Off unless `[http] listen` is set.

    handle = await start_http(server)   # after the RADIUS listeners are up
    ...
    await stop_http(handle)             # before the store closes
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from radiusd.config import parse_listen
from radiusd.http import api, chilli, portal
from radiusd.http.guard import (
    RESERVED_DESCRIPTORS,
    SERVER_NAME,
    Guard,
    connection_budget,
    descriptors_open,
    open_file_limit,
)
from radiusd.http.keys import (
    CHILLI_LIMITS,
    COUNTERS,
    DB_CACHE,
    GUARD,
    IP_LIMITS,
    METRICS_ALLOW,
    SERVER,
    TIMER,
)
from radiusd.http.metrics import HttpCounters, RadiusTimer

if TYPE_CHECKING:
    from radiusd.app import Server

log = logging.getLogger("radiusd.http")

STATIC = Path(str(resources.files("radiusd.http").joinpath("static")))
# Answers that carry a number or a state: never kept by a browser or a proxy cache.
NO_STORE_PATHS = ("/api/", "/healthz", "/metrics", "/portal/")
# A request body or its input that is malformed: answered 400, never 500.
BAD_INPUT = (ValueError, LookupError, UnicodeError, RecursionError, RequestPayloadError)


@dataclass
class HttpHandle:
    runner: web.AppRunner
    app: web.Application
    guard: Guard
    addresses: list[tuple[str, int]] = field(default_factory=list)
    metrics_runner: web.AppRunner | None = None
    metrics_addresses: list[tuple[str, int]] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return _url(self.addresses[0], path)

    def metrics_url(self, path: str = "/metrics") -> str:
        return _url((self.metrics_addresses or self.addresses)[0], path)


def _url(address: tuple[str, int], path: str) -> str:
    host, port = address
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{path}"


@web.middleware
async def _count(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                 ) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "(unmatched)"
    if name.startswith("/static"):
        name = "/static"
    try:
        response = await handler(request)
    except web.HTTPException as e:
        request.app[COUNTERS].requests[(name, e.status)] += 1
        raise
    request.app[COUNTERS].requests[(name, response.status)] += 1
    return response


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


@web.middleware
async def _shield(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  ) -> web.StreamResponse:
    """The body arrives within `request_timeout_seconds` of the head (slowloris: 408
    and close); malformed input is answered 400 and logged as one throttled line;
    an unexpected error is a 500 with a traceback at most once a minute per kind."""
    guard = request.app[GUARD]
    ip = request.remote or "?"
    try:
        if request.body_exists:
            if request.content_type.startswith("multipart/"):
                return _plain(415, "send application/json or an "
                                   "application/x-www-form-urlencoded form")
            try:
                async with asyncio.timeout(guard.request_timeout):
                    await request.read()  # kept: handlers read it from memory
            except TimeoutError:
                guard.counters.closed["body_timeout"] += 1
                response = _plain(408, "request body too slow")
                response.force_close()
                return response
        return await handler(request)
    except web.HTTPException:
        raise
    except ConnectionError:
        return _plain(400, "connection lost")  # never sent: the client has gone
    except BAD_INPUT as e:
        guard.bad_request("input", ip, f"{request.method} {request.path[:64]}: "
                                       f"{type(e).__name__}: {e}")
        return _plain(400, "bad request")
    except Exception as e:
        if not request.app[SERVER].health.ok("store"):
            # The database is down or damaged: the store logged it once with its own
            # words; the caller may try again later (a portal shows its own message).
            return _plain(503, "the database is unavailable; try again later")
        if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE):
            guard.descriptors_exhausted("http", e)
        key = f"http.error.{request.path[:64]}"
        if guard.throttle.due(key, asyncio.get_running_loop().time()) is not None:
            log.exception("HTTP %s %s failed", request.method, request.path[:64])
        guard.counters.bad["server"] += 1
        return _plain(500, "internal error")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """No software versions in `Server`; nothing a cache may keep on the API."""
    response.headers["Server"] = SERVER_NAME
    if request.path.startswith(NO_STORE_PATHS):
        response.headers.setdefault("Cache-Control", "no-store")


def _base_app(server: Server, guard: Guard, counters: HttpCounters,
              timer: RadiusTimer | None) -> web.Application:
    cfg = server.config.http
    app = web.Application(middlewares=[_count, _shield], client_max_size=16 * 1024)
    app[SERVER] = server
    app[COUNTERS] = counters
    app[TIMER] = timer
    app[GUARD] = guard
    app[DB_CACHE] = {}
    app[METRICS_ALLOW] = [ipaddress.ip_network(n, strict=False) for n in cfg.metrics_allow]
    app.on_response_prepare.append(_headers)
    return app


def build_app(server: Server, timer: RadiusTimer | None = None,
              guard: Guard | None = None, counters: HttpCounters | None = None,
              ) -> web.Application:
    cfg = server.config.http
    counters = counters or HttpCounters()
    if guard is None:
        guard = Guard(server, counters, cfg.max_connections)
    app = _base_app(server, guard, counters, timer)
    app[IP_LIMITS] = api.IpLimits(cfg.per_ip_per_minute, cfg.per_ip_hourly, cfg.api_per_minute)
    app[CHILLI_LIMITS] = api.IpLimits(chilli.PER_IP_PER_MINUTE, chilli.PER_IP_HOURLY)
    app.router.add_get("/", portal.page)
    app.router.add_post(chilli.PATH, chilli.logon)
    app.router.add_post("/api/v1/otp", api.otp)
    app.router.add_route("OPTIONS", "/api/v1/otp", api.preflight)
    app.router.add_get("/api/v1/openapi.json", api.openapi)
    app.router.add_get("/healthz", api.healthz)
    if not cfg.metrics_listen:
        app.router.add_get("/metrics", api.metrics_page)
    app.router.add_static("/static", STATIC, append_version=False)
    return app


def build_metrics_app(server: Server, guard: Guard, counters: HttpCounters,
                      timer: RadiusTimer | None) -> web.Application:
    """`[http] metrics_listen`: /metrics and /healthz only."""
    app = _base_app(server, guard, counters, timer)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics_page)
    return app


def instrument(server: Server) -> RadiusTimer | None:
    """Put a `RadiusTimer` around the dispatcher the listeners call (once)."""
    if server.radius_timer is not None:
        return server.radius_timer
    if not server.listeners:
        return None
    timer = RadiusTimer(server.listeners[0].handler)
    for listener in server.listeners:
        if listener.handler is timer.inner:
            listener.handler = timer
    radsec = server.radsec  # RFC 6614: the same dispatcher over TLS
    if radsec is not None and radsec.handler is timer.inner:
        radsec.handler = timer
    server.radius_timer = timer
    return timer


async def _runner(app: web.Application, cfg: Any) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=cfg.request_timeout_seconds)
    await runner.setup()
    return runner


def _bind(guard: Guard, listen: list[str], what: str) -> list[tuple[Any, tuple[str, int]]]:
    bound = []
    for item in listen:
        host, port = parse_listen(item)
        try:
            sock = guard.listen(host, port)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {item} ({what}): {e.strerror}") from e
        name = sock.getsockname()
        bound.append((sock, (str(name[0]), int(name[1]))))
    return bound


async def start_http(server: Server) -> HttpHandle | None:
    """Serve HTTP on `[http] listen` (and `metrics_listen`); None when `listen` is
    empty. Idempotent: a server that already has `server.http` gets it back."""
    if server.http is not None:
        return server.http
    cfg = server.config.http
    if not cfg.listen:
        return None
    counters = HttpCounters()
    timer = instrument(server)
    guard = Guard(server, counters, cfg.max_connections)
    app = build_app(server, timer, guard, counters)
    runner = await _runner(app, cfg)
    metrics_runner: web.AppRunner | None = None
    try:
        main = _bind(guard, cfg.listen, "http")
        extra = _bind(guard, cfg.metrics_listen, "http metrics")
        _limit_connections(guard, cfg.max_connections)
        assert runner.server is not None
        for sock, _ in main:
            guard.serve(sock, runner.server)
        if extra:
            metrics_runner = await _runner(build_metrics_app(server, guard, counters, timer),
                                           cfg)
            assert metrics_runner.server is not None
            for sock, _ in extra:
                guard.serve(sock, metrics_runner.server)
    except BaseException:
        await guard.close()
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        raise
    handle = HttpHandle(runner, app, guard, [a for _, a in main], metrics_runner,
                        [a for _, a in extra])
    for host, port in handle.addresses:
        log.info("listening for http on %s/tcp", _shown(host, port))
    for host, port in handle.metrics_addresses:
        log.info("listening for http /metrics on %s/tcp", _shown(host, port))
    server.http = handle
    return handle


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _limit_connections(guard: Guard, configured: int) -> None:
    """Keep HTTP's descriptors below the open-file limit, with room for the rest."""
    soft, open_now = open_file_limit(), descriptors_open()
    cap = connection_budget(configured, soft, open_now)
    guard.book.total_cap = cap
    where = (f"the open-file limit is {soft}, {open_now} open now, "
             f"{RESERVED_DESCRIPTORS} kept for the store, SMS and RADIUS")
    if cap < configured:
        log.warning("http: at most %d connections, not [http] max_connections = %d: %s "
                    "(raise LimitNOFILE / ulimit -n)", cap, configured, where)
    else:
        log.info("http: at most %d connections (%d per client address; %s)", cap,
                 guard.book.per_key_cap, where)


async def stop_http(handle: HttpHandle | None) -> None:
    """Stop accepting, finish what is in flight (aiohttp's shutdown), close."""
    if handle is None:
        return
    server = handle.app[SERVER]
    await handle.guard.close()
    await handle.runner.cleanup()
    if handle.metrics_runner is not None:
        await handle.metrics_runner.cleanup()
    if server.http is handle:
        server.http = None
