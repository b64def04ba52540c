"""`GET /metrics`: the server's counters in the Prometheus text format (version 0.0.4).

What is counted where:
- RADIUS replies by client and code, and the request latency histogram: `RadiusTimer`,
  a thin wrapper around the dispatcher (the listener calls it for every request);
- drops by reason and datagrams received: `Stats` (kept by the endpoints);
- passwords issued / used / expired and SMS queued / sent / failed: the database, which
  is the truth across restarts and across nodes (read at most every few seconds);
- HTTP requests by path and status: `HttpCounters`.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from radiusd.radius.message import Drop, Outcome, Request
from radiusd.radius.wire import Code

# Seconds; RADIUS answers are expected in milliseconds, a NAS gives up after 1-5 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


Handler = Callable[[Request, Any], Awaitable[Outcome]]


class RadiusTimer:
    """Wraps the dispatcher: counts each answer by client and code, times it."""

    def __init__(self, inner: Handler) -> None:
        self.inner = inner
        self.replies: Counter[tuple[str, str, str]] = Counter()  # (port, client, code)
        self.latency: dict[str, Histogram] = {}

    async def __call__(self, request: Request, port: Any) -> Outcome:
        t0 = time.perf_counter()
        outcome = await self.inner(request, port)
        elapsed = time.perf_counter() - t0
        if isinstance(outcome, Drop):
            code = "drop"
        else:
            try:
                code = Code(outcome.code).name.lower()
            except ValueError:
                code = str(outcome.code)
        self.replies[(str(port), request.client.name, code)] += 1
        hist = self.latency.get(str(port))
        if hist is None:
            hist = self.latency[str(port)] = Histogram()
        hist.observe(elapsed)
        return outcome


class HttpCounters:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.otp: Counter[str] = Counter()  # outcome: sent | <Refused.reason> | ip_limit


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _samples(name: str, rows: Iterable[tuple[dict[str, object], float]]) -> list[str]:
    out = []
    for labels, value in rows:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")
    return out


def render(stats_counts: Counter[str], stats_dropped: Counter[str],
           timer: RadiusTimer | None, http: HttpCounters,
           db: dict[str, list[tuple[str, int]]], up: dict[str, int]) -> str:
    """Everything as one exposition text. ``db`` holds the grouped database counts."""
    lines: list[str] = []
    lines += _family("radiusd_up", "gauge", "1 when the component is healthy.")
    lines += _samples("radiusd_up", (({"component": k}, v) for k, v in sorted(up.items())))

    received = [(k.split(".", 1)[0], v) for k, v in stats_counts.items()
                if k.endswith(".received")]
    lines += _family("radiusd_radius_received_total", "counter",
                     "RADIUS datagrams received, by port.")
    lines += _samples("radiusd_radius_received_total",
                      (({"port": p}, v) for p, v in sorted(received)))
    sent = []
    for k, v in stats_counts.items():
        port, _, rest = k.partition(".sent.")
        if rest:
            sent.append((port, rest, v))
    lines += _family("radiusd_radius_sent_total", "counter", "RADIUS replies sent, by code.")
    lines += _samples("radiusd_radius_sent_total",
                      (({"port": p, "code": c}, v) for p, c, v in sorted(sent)))
    lines += _family("radiusd_radius_dropped_total", "counter",
                     "RADIUS requests dropped without a reply, by reason.")
    lines += _samples("radiusd_radius_dropped_total",
                      (({"reason": r}, v) for r, v in sorted(stats_dropped.items())))
    lines += _family("radiusd_radius_duplicates_resent_total", "counter",
                     "Retransmissions answered from the duplicate cache (RFC 5080).")
    lines += _samples("radiusd_radius_duplicates_resent_total",
                      [({}, stats_counts.get("duplicate.resent", 0))])
    if timer is not None:
        lines += _family("radiusd_radius_requests_total", "counter",
                         "RADIUS requests processed, by port, client (NAS) and answer.")
        lines += _samples("radiusd_radius_requests_total", (
            ({"port": p, "client": c, "code": code}, v)
            for (p, c, code), v in sorted(timer.replies.items())))
        name = "radiusd_radius_request_duration_seconds"
        lines += _family(name, "histogram", "Time from a decoded request to its answer.")
        for port, hist in sorted(timer.latency.items()):
            lines += hist.lines(name, f'port="{_label(port)}"')

    lines += _family("radiusd_passwords", "gauge",
                     "One-time passwords in the database, by state (Rules §5-§9).")
    lines += _samples("radiusd_passwords", (({"state": s}, n) for s, n in db["state"]))
    lines += _family("radiusd_passwords_issued_total", "counter", "Passwords ever issued.")
    lines += _samples("radiusd_passwords_issued_total",
                      [({}, sum(n for _, n in db["state"]))])
    lines += _family("radiusd_passwords_used_total", "counter",
                     "Passwords that logged a device in (Rules §7).")
    lines += _samples("radiusd_passwords_used_total", [({}, db["used"][0][1])])
    lines += _family("radiusd_passwords_expired_total", "counter",
                     "Passwords expired, by reason (Rules §8-§9).")
    lines += _samples("radiusd_passwords_expired_total",
                      (({"reason": r}, n) for r, n in db["expired"]))
    lines += _family("radiusd_sms_messages", "gauge",
                     "SMS in the outbox, by state: queued, sent, failed (Rules §6).")
    states = dict(db["sms"])
    lines += _samples("radiusd_sms_messages", (
        ({"state": s}, states.get(s, 0)) for s in sorted({"queued", "sent", "failed", *states})))

    lines += _family("radiusd_http_requests_total", "counter",
                     "HTTP requests, by route and status.")
    lines += _samples("radiusd_http_requests_total", (
        ({"route": r, "status": s}, v) for (r, s), v in sorted(http.requests.items())))
    lines += _family("radiusd_http_otp_requests_total", "counter",
                     "POST /api/v1/otp, by outcome (sent or the refusal reason).")
    lines += _samples("radiusd_http_otp_requests_total",
                      (({"outcome": o}, v) for o, v in sorted(http.otp.items())))
    return "\n".join(lines) + "\n"


DB_QUERIES = {
    "state": "SELECT state, COUNT(*) FROM passwords GROUP BY state",
    "used": "SELECT 'used', COUNT(*) FROM passwords WHERE claimed_at IS NOT NULL",
    "expired": "SELECT COALESCE(expire_reason, 'unknown'), COUNT(*) FROM passwords "
               "WHERE state = 'expired' GROUP BY expire_reason",
    "sms": "SELECT state, COUNT(*) FROM sms_outbox GROUP BY state",
}
