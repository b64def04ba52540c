"""Typed keys of what the aiohttp application carries."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from radiusd.http.metrics import HttpCounters, RadiusTimer

SERVER: web.AppKey[Any] = web.AppKey("server", object)
COUNTERS = web.AppKey("counters", HttpCounters)
TIMER: web.AppKey[RadiusTimer | None] = web.AppKey("timer", object)  # type: ignore[arg-type]
IP_LIMITS: web.AppKey[Any] = web.AppKey("ip_limits", object)
CHILLI_LIMITS: web.AppKey[Any] = web.AppKey("chilli_limits", object)
DB_CACHE: web.AppKey[dict[str, Any]] = web.AppKey("db_cache", dict)
GUARD: web.AppKey[Any] = web.AppKey("guard", object)  # radiusd.http.guard.Guard
METRICS_ALLOW: web.AppKey[list[Any]] = web.AppKey("metrics_allow", list)
