"""The HTTP API: "Get password" for external portals (Rules §4-§6), health, metrics.

`POST /api/v1/otp` runs exactly what the RADIUS "Get password" runs
(`OtpAuth.request_password`: the same number rules, limits, SMS and messages), plus a
limit per client IP address, because over HTTP anybody can ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from radiusd import messages, phone
from radiusd.device import normalise_mac
from radiusd.http import metrics
from radiusd.http.keys import COUNTERS, DB_CACHE, GUARD, IP_LIMITS, METRICS_ALLOW, SERVER, TIMER
from radiusd.http.language import pick_language
from radiusd.otp import HOUR, MINUTE, Issued, Window
from radiusd.store import counts, outbox

if TYPE_CHECKING:
    from radiusd.app import Server
    from radiusd.http.metrics import HttpCounters

# Refusals that are the user's input (400) versus limits (429 + Retry-After).
BAD_INPUT = {"not_a_number", "not_mobile", "region_not_allowed", "no_login"}
CORS_METHODS = {"Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Accept-Language",
                "Access-Control-Max-Age": "600", "Vary": "Origin"}
NAS_FACTOR = 20  # a hotspot's browsers reach us through its NAT: one address, many users


def limit_key(ip: str) -> str:
    """What one client is: an IPv4 address, or an IPv6 /64 (one host can rotate through
    a whole /64, so counting full IPv6 addresses limits nothing)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class IpLimits:
    """Per client (IPv4 address or IPv6 /64): at most `per_minute` and `per_hour`
    "Get password" presses; memory bounded, pruning at most once a minute. The
    API-wide budget (`total_per_minute`) counts only presses that send an SMS
    (`reserve`, then `release` when refused), so a refusal locks nobody else out."""

    MAX_KEYS = 100_000

    def __init__(self, per_minute: int, per_hour: int, total_per_minute: int = 0) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self.total_per_minute = total_per_minute  # 0: no API-wide budget
        self.total = Window(MINUTE)
        self.minute: dict[str, Window] = {}
        self.hour: dict[str, Window] = {}
        self._pruned = 0.0

    def check(self, ip: str, now: float, factor: int = 1) -> float:
        """0 when allowed (and counted), else the seconds to wait."""
        key = limit_key(ip)
        for table, span, cap in ((self.minute, MINUTE, self.per_minute * factor),
                                 (self.hour, HOUR, self.per_hour * factor)):
            w = table.get(key)
            if w is not None and w.count(now) >= cap:
                return w.oldest() + span - now
        if len(self.hour) >= self.MAX_KEYS and now - self._pruned >= MINUTE:
            self.prune(now)
        if len(self.hour) >= self.MAX_KEYS and key not in self.hour:
            # Still full of live keys: forget the oldest tenth (insertion order).
            for table in (self.minute, self.hour):
                for old in list(table)[: self.MAX_KEYS // 10]:
                    del table[old]
        for table, span in ((self.minute, MINUTE), (self.hour, HOUR)):
            table.setdefault(key, Window(span)).events.append(now)
        return 0.0

    def total_wait(self, now: float) -> float:
        """0 while the API-wide budget lasts, else the seconds until it does again."""
        if self.total_per_minute and self.total.count(now) >= self.total_per_minute:
            return self.total.oldest() + MINUTE - now
        return 0.0

    def reserve(self, now: float) -> float:
        """Take one press from the API-wide budget (0), or the seconds to wait."""
        wait = self.total_wait(now)
        if wait <= 0:
            self.total.events.append(now)
        return wait

    def release(self, at: float) -> None:
        """Give back a press reserved at `at` that sent no SMS (Refused)."""
        with contextlib.suppress(ValueError):
            self.total.events.remove(at)

    def prune(self, now: float) -> None:
        self._pruned = now
        for table in (self.minute, self.hour):
            for key in [k for k, w in table.items() if not w.count(now)]:
                del table[key]


def cors_headers(request: web.Request, allowed: list[str]) -> dict[str, str]:
    """CORS only for the web origins the operator listed (`[http] allowed_origins`)."""
    origin = request.headers.get("Origin")
    if origin and origin in allowed:
        return {"Access-Control-Allow-Origin": origin, **CORS_METHODS}
    return {}


def origin_refused(request: web.Request, allowed: list[str],
                   public: list[str] | None = None) -> bool:
    """A browser on another site (its Origin is neither ours nor listed): refuse, so
    other websites cannot make their visitors' browsers send SMS. Ours is
    `[http] public_origins` when set; else the Host header, which a DNS-rebinding
    page also controls (so set public_origins when the portal has a name)."""
    origin = request.headers.get("Origin")
    if not origin or origin in allowed:
        return False
    if public:
        return origin not in public
    return origin != f"{request.scheme}://{request.host}"


def client_ip(request: web.Request, trusted: list[str]) -> str:
    """The caller's address; X-Forwarded-For only when the peer is a trusted proxy."""
    peer = request.remote or ""
    if peer in trusted:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        while hops:
            hop = hops.pop()
            if hop not in trusted:
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    break
    return peer


def _json(data: dict[str, Any], status: int, headers: dict[str, str] | None = None,
          ) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def otp(request: web.Request) -> web.Response:
    """POST /api/v1/otp {"phone": "...", "device": "AA:BB:..", "language": "ru"}."""
    server = request.app[SERVER]
    counters = request.app[COUNTERS]
    allowed = server.config.http.allowed_origins
    cors = cors_headers(request, allowed)
    response = await _otp(request, server, counters)
    response.headers.update(cors)
    return response


async def _otp(request: web.Request, server: Server, counters: HttpCounters) -> web.Response:
    cfg = server.config.http
    if not server.health.ok("store"):
        # As RADIUS answers nothing while the store fails (issue 12 item 5), the API
        # sends no SMS on a database it cannot trust: 503, try again later.
        counters.otp["store_failing"] += 1
        return _json({"error": "store_failing",
                      "message": "the server cannot use its database right now; "
                                 "try again later"}, 503)
    if origin_refused(request, cfg.allowed_origins, cfg.public_origins):
        counters.otp["forbidden_origin"] += 1
        return _json({"error": "forbidden_origin",
                      "message": "this origin may not call the API; the operator lists "
                                 "allowed ones in [http] allowed_origins"}, 403)
    if request.content_type != "application/json":
        # Browsers send text/plain and form bodies cross-site without asking first;
        # JSON makes them ask (a CORS preflight), which other sites then fail.
        counters.otp["bad_request"] += 1
        return _json({"error": "bad_request",
                      "message": "send Content-Type: application/json"}, 415)
    body = await _json_body(request)
    lang = pick_language(
        body.get("language") if isinstance(body, dict) else None,
        request.headers.get("Accept-Language"), server.config.otp.language)
    if not isinstance(body, dict) or not isinstance(body.get("phone", ""), str) \
            or not isinstance(body.get("device") or "", str):
        counters.otp["bad_request"] += 1
        return _json({"error": "bad_request",
                      "message": 'Send JSON: {"phone": "+77011234567"}'}, 400)
    text = body.get("phone", "").strip()
    if not text:
        counters.otp["no_login"] += 1
        return _json({"error": "no_login", "message": messages.text("no_login", lang)}, 400)
    otp_cfg = server.config.otp
    try:  # a typo is answered at once and does not use up the caller's IP budget
        phone.normalise(text, otp_cfg.default_region, otp_cfg.allowed_regions)
    except phone.NumberRefused as refused:
        counters.otp[refused.reason] += 1
        return _json({"error": refused.reason,
                      "message": messages.text(refused.reason, lang)}, 400)
    now = server.clock.now()
    ip = client_ip(request, server.config.http.trusted_proxies)
    limits = request.app[IP_LIMITS]
    busy = limits.total_wait(now)
    if busy > 0:
        counters.otp["api_busy"] += 1
        return _refused("busy", messages.text("busy", lang), busy)
    nas = server.clients.find(ip)  # a hotspot's users reach us through its NAT
    factor = NAS_FACTOR if nas is not None else 1
    wait = limits.check(ip, now, factor)
    if wait > 0:
        counters.otp["ip_limit"] += 1
        return _refused("ip_limit", messages.text("device_limit", lang), wait)
    busy = limits.reserve(now)  # again: other presses may have taken it meanwhile
    if busy > 0:
        counters.otp["api_busy"] += 1
        return _refused("busy", messages.text("busy", lang), busy)
    try:
        result = await server.auth.request_password(
            text, device=normalise_mac(body.get("device")), nas=None, now=now,
            language=lang, client=nas.name if nas is not None else None)
    except BaseException:
        limits.release(now)
        raise
    if not isinstance(result, Issued):
        limits.release(now)  # refused for a reason of its own: no SMS, no budget
    if isinstance(result, Issued):
        counters.otp["sent"] += 1
        masked = phone.mask(result.password.login)
        return _json({"status": "sent", "phone": masked,
                      "message": messages.text("sms_sent", lang, phone=masked)}, 202)
    counters.otp[result.reason] += 1
    if result.reason in BAD_INPUT:
        return _json({"error": result.reason, "message": result.message(lang)}, 400)
    if result.reason == "number_blocked":  # `radiusd numbers block`: waiting won't help
        return _json({"error": result.reason, "message": result.message(lang)}, 403)
    return _refused(result.reason, result.message(lang), result.retry_after)


async def _json_body(request: web.Request) -> Any:
    """The JSON body, or None when it is not JSON. Always UTF-8 (RFC 8259 §8.1: a
    `charset` parameter has no meaning for application/json); too deep is not JSON."""
    try:
        return json.loads((await request.read()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _refused(reason: str, message: str, wait: float) -> web.Response:
    seconds = max(1, math.ceil(wait))
    return _json({"error": reason, "message": message, "retry_after": seconds}, 429,
                 {"Retry-After": str(seconds)})


async def preflight(request: web.Request) -> web.Response:
    """CORS: an external portal on a listed origin may call the API from the browser."""
    cors = cors_headers(request, request.app[SERVER].config.http.allowed_origins)
    return web.Response(status=204 if cors else 403, headers=cors)


async def healthz(request: web.Request) -> web.Response:
    """200 when the store answers and commits, the SMS worker runs and no SMS has
    waited longer than `[http] sms_stall_seconds`; else 503 naming what is not."""
    server = request.app[SERVER]
    checks = await health_checks(server)
    ok = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ok" if ok else "unhealthy", "checks": checks},
                             status=200 if ok else 503)


async def sms_waiting(server: Server) -> float | None:
    """Seconds the oldest queued SMS has waited (0: none waits); None: unknown."""
    try:
        oldest = await asyncio.wait_for(outbox.oldest_queued(server.store), 2.0)
    except Exception:
        return None
    if oldest is None:
        return 0.0
    waited: float = max(0.0, server.clock.now() - oldest)
    return waited


async def health_checks(server: Server) -> dict[str, str]:
    """`store`, `sms`, and any other part `server.health` reports failing."""
    checks: dict[str, str] = {}
    health = server.health
    try:
        await asyncio.wait_for(counts.ping(server.store), 2.0)
        checks["store"] = "ok"
    except Exception as e:
        checks["store"] = f"error: {type(e).__name__}"
    if checks["store"] == "ok" and not health.ok("store"):
        checks["store"] = f"error: {health.reason('store')}"  # e.g. disk full on commit
    task = next((t for t in server.background if t.get_name() == "sms-outbox"), None)
    if server.sms is None or task is None:
        checks["sms"] = "not running"
    elif task.done():
        checks["sms"] = "stopped"
    else:
        checks["sms"] = "ok"
        waited = await sms_waiting(server)
        if waited is not None and waited > server.config.http.sms_stall_seconds:
            why = health.reason("sms")
            checks["sms"] = (f"degraded: an SMS has waited {waited:.0f} s"
                             + (f" ({why})" if why else ""))
    for part, trouble in sorted(health.troubles.items()):
        checks.setdefault(part, f"error: {trouble.reason}")
    return checks


def metrics_allowed(request: web.Request) -> bool:
    """`[http] metrics_allow`: the caller (X-Forwarded-For only from trusted_proxies)
    is in one of the listed networks."""
    ip = client_ip(request, request.app[SERVER].config.http.trusted_proxies)
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in request.app[METRICS_ALLOW])


async def metrics_page(request: web.Request) -> web.Response:
    if not metrics_allowed(request):
        raise web.HTTPNotFound()
    server = request.app[SERVER]
    checks = await health_checks(server)
    # Counters and live gauges cost a few index searches (issue 18): read per scrape;
    # while the store does not answer, the last figures read are shown.
    last = request.app[DB_CACHE]
    if checks["store"] == "ok":
        with contextlib.suppress(Exception):
            last["counts"] = await asyncio.wait_for(counts.snapshot(server.store), 2.0)
    figures = last.get("counts") or counts.Snapshot()
    own = server.own_figures()
    timer = request.app[TIMER]
    if server.exchange is not None:  # [server] workers: add up the others' (radiusd.workers)
        for other in server.exchange.others(server.worker):
            own.add(metrics.Figures.from_json(other))
    shown_timer = metrics.as_timer(own, timer.inner) if timer is not None else None
    text = metrics.render(own.counts, own.dropped, shown_timer, request.app[COUNTERS],
                          figures, {k: int(v == "ok") for k, v in checks.items()})
    text += metrics.render_bounds(request.app[COUNTERS], request.app[GUARD], server.health,
                                  server.sms, await sms_waiting(server))
    text += metrics.render_limits(own.sms_refused, own.guess_refused)
    text += metrics.render_venues(own.venues, [v.name for v in server.config.venues])
    text += metrics.render_disconnects(server.disconnector.samples(),
                                       server.session_end.no_accounting)
    return web.Response(text=text, content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"},
                        charset="utf-8")


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "radiusd HTTP API", "version": "1",
             "description": "Get a one-time Wi-Fi password by SMS (Rules §4-§6) for "
                            "external captive portals; health and metrics."},
    "paths": {
        "/api/v1/otp": {"post": {
            "summary": "Send a one-time password by SMS (the \"Get password\" button)",
            "description": "Same number rules, limits and messages as a RADIUS "
                           "Access-Request with an empty password. Also limited per "
                           "client IP address.",
            "parameters": [{"name": "Accept-Language", "in": "header", "required": False,
                            "schema": {"type": "string"}, "example": "kk, ru;q=0.8"}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["phone"], "properties": {
                    "phone": {"type": "string", "example": "8 701 234 56 78",
                              "description": "Mobile number as typed; normalised to E.164."},
                    "device": {"type": "string", "example": "AA:BB:CC:DD:EE:FF",
                               "description": "The device's MAC from the controller's "
                                              "redirect, for the per-device limit."},
                    "language": {"type": "string", "enum": ["kk", "ru", "en"]}}}}}},
            "responses": {
                "202": {"description": "Password issued; the SMS is queued.",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Sent"}}}},
                "400": {"description": "Not a mobile number that may get a password.",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Error"}}}},
                "403": {"description": "The number is blocked (radiusd numbers block).",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Error"}}}},
                "429": {"description": "Limited; ask again after Retry-After seconds.",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Error"}}}},
                "503": {"description": "The database is unavailable or damaged; no SMS "
                                       "was sent. Try again later.",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Error"}}}}}}},
        "/healthz": {"get": {
            "summary": "Store reachable and committing, SMS worker running and not "
                       "stalled",
            "responses": {"200": {"description": "Healthy"},
                          "503": {"description": "Unhealthy; `checks` says what"}}}},
        "/metrics": {"get": {
            "summary": "Prometheus text format (only from [http] metrics_allow)",
            "responses": {"200": {"description": "Metrics",
                                  "content": {"text/plain": {}}}}}},
    },
    "components": {"schemas": {
        "Sent": {"type": "object", "properties": {
            "status": {"const": "sent"},
            "phone": {"type": "string", "description": "Masked number"},
            "message": {"type": "string"}}},
        "Error": {"type": "object", "properties": {
            "error": {"type": "string", "enum": [
                "bad_request", "no_login", "not_a_number", "not_mobile",
                "region_not_allowed", "resend_wait", "number_limit", "device_limit", "ip_limit",
                "busy"]},
            "message": {"type": "string", "description": "For the user, in their language"},
            "retry_after": {"type": "integer"}}}}},
}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI, headers={"Access-Control-Allow-Origin": "*"})
