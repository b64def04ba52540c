"""Typed keys of what the aiohttp application carries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from radiusd.http.metrics import HttpCounters, RadiusTimer

if TYPE_CHECKING:
    from radiusd.app import Server
    from radiusd.http.api import IpLimits
    from radiusd.http.guard import Guard

SERVER: web.AppKey[Server] = web.AppKey("server", object)  # type: ignore[arg-type]
COUNTERS = web.AppKey("counters", HttpCounters)
TIMER: web.AppKey[RadiusTimer | None] = web.AppKey("timer", object)  # type: ignore[arg-type]
IP_LIMITS: web.AppKey[IpLimits] = web.AppKey("ip_limits", object)  # type: ignore[arg-type]
CHILLI_LIMITS: web.AppKey[IpLimits] = web.AppKey("chilli_limits", object)  # type: ignore[arg-type]
DB_CACHE: web.AppKey[dict[str, Any]] = web.AppKey("db_cache", dict)
GUARD: web.AppKey[Guard] = web.AppKey("guard", object)  # type: ignore[arg-type]
METRICS_ALLOW: web.AppKey[list[Any]] = web.AppKey("metrics_allow", list)
