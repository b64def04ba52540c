"""HTTP front door in the same process: the "Get password" API for external portals,
the hosted portal page (Rules §4) and its CoovaChilli logon, `/healthz` and `/metrics`.
Off unless `[http] listen` is set.

    handle = await start_http(server)   # after the RADIUS listeners are up
    ...
    await stop_http(handle)             # before the store closes
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from radiusd.config import parse_listen
from radiusd.http import api, chilli, portal
from radiusd.http.keys import CHILLI_LIMITS, COUNTERS, DB_CACHE, IP_LIMITS, SERVER, TIMER
from radiusd.http.metrics import HttpCounters, RadiusTimer

log = logging.getLogger("radiusd.http")

STATIC = Path(str(resources.files("radiusd.http").joinpath("static")))


@dataclass
class HttpHandle:
    runner: web.AppRunner
    app: web.Application
    addresses: list[tuple[str, int]] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        host, port = self.addresses[0]
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


def build_app(server: Any, timer: RadiusTimer | None = None) -> web.Application:
    cfg = server.config.http
    app = web.Application(middlewares=[_count], client_max_size=16 * 1024)
    app[SERVER] = server
    app[COUNTERS] = HttpCounters()
    app[TIMER] = timer
    app[IP_LIMITS] = api.IpLimits(cfg.per_ip_per_minute, cfg.per_ip_hourly, cfg.api_per_minute)
    app[CHILLI_LIMITS] = api.IpLimits(chilli.PER_IP_PER_MINUTE, chilli.PER_IP_HOURLY)
    app[DB_CACHE] = {}
    app.router.add_get("/", portal.page)
    app.router.add_post(chilli.PATH, chilli.logon)
    app.router.add_post("/api/v1/otp", api.otp)
    app.router.add_route("OPTIONS", "/api/v1/otp", api.preflight)
    app.router.add_get("/api/v1/openapi.json", api.openapi)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics_page)
    app.router.add_static("/static", STATIC, append_version=False)
    return app


def instrument(server: Any) -> RadiusTimer | None:
    """Put a `RadiusTimer` around the dispatcher the listeners call (once)."""
    timer = getattr(server, "radius_timer", None)
    if timer is not None:
        return timer  # type: ignore[no-any-return]
    if not server.listeners:
        return None
    timer = RadiusTimer(server.listeners[0].handler)
    for listener in server.listeners:
        if listener.handler is timer.inner:
            listener.handler = timer
    server.radius_timer = timer
    return timer


async def start_http(server: Any) -> HttpHandle | None:
    """Serve HTTP on `[http] listen`; None when that is empty. Idempotent: a server
    that already has `server.http` gets it back."""
    existing = getattr(server, "http", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    listen = server.config.http.listen
    if not listen:
        return None
    app = build_app(server, instrument(server))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    handle = HttpHandle(runner, app)
    try:
        for item in listen:
            host, port = parse_listen(item)
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(e.errno, f"cannot listen on {item} (http): {e.strerror}") from e
    handle.addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]
    for host, port in handle.addresses:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("listening for http on %s/tcp", shown)
    server.http = handle
    return handle


async def stop_http(handle: HttpHandle | None) -> None:
    """Stop accepting, finish what is in flight (aiohttp's shutdown), close."""
    if handle is None:
        return
    server = handle.app[SERVER]
    await handle.runner.cleanup()
    if getattr(server, "http", None) is handle:
        server.http = None
