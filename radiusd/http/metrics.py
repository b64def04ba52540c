"""`GET /metrics`: the server's counters in the Prometheus text format (version 0.0.4).

What is counted where:
- RADIUS replies by client and code, and the request latency histogram: `RadiusTimer`,
  a thin wrapper around the dispatcher (the listener calls it for every request);
- drops by reason and datagrams received: `Stats` (kept by the endpoints);
- passwords issued / used / expired and SMS queued / sent / failed: the database, which
  is the truth across restarts and across nodes; counted there as the events happen
  and read per scrape without touching history (`radiusd.store.counts`, issue 18);
- HTTP requests by path and status: `HttpCounters`.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from radiusd.limits import GUESS_CAPS, SMS_CAPS
from radiusd.radius.message import Drop, Outcome, Request
from radiusd.radius.wire import Code
from radiusd.store.counts import Snapshot

if TYPE_CHECKING:
    from radiusd.health import Health
    from radiusd.http.guard import Guard
    from radiusd.radius.endpoint import Port
    from radiusd.radius.listener import Handler
    from radiusd.sms.outbox import OutboxWorker

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


class RadiusTimer:
    """Wraps the dispatcher: counts each answer by client and code, times it."""

    def __init__(self, inner: Handler) -> None:
        self.inner = inner
        self.replies: Counter[tuple[str, str, str]] = Counter()  # (port, client, code)
        self.latency: dict[str, Histogram] = {}

    async def __call__(self, request: Request, port: Port) -> Outcome:
        t0 = time.perf_counter()
        outcome = await self.inner(request, port)
        self._observe(port, request.client.name, outcome, time.perf_counter() - t0)
        return outcome

    def status_server(self, port: Port) -> Outcome:
        """RFC 5997: the listener answers Status-Server without a task; counted too."""
        t0 = time.perf_counter()
        outcome = self.inner.status_server(port)
        self._observe(port, None, outcome, time.perf_counter() - t0)
        return outcome

    def _observe(self, port: Port, client: str | None, outcome: Outcome,
                 elapsed: float) -> None:
        if isinstance(outcome, Drop):
            code = "drop"
        else:
            try:
                code = Code(outcome.code).name.lower()
            except ValueError:
                code = str(outcome.code)
        if client is not None:
            self.replies[(str(port), client, code)] += 1
        hist = self.latency.get(str(port))
        if hist is None:
            hist = self.latency[str(port)] = Histogram()
        hist.observe(elapsed)


@dataclass(slots=True)
class Figures:
    """One process's own counters (everything else on /metrics is read from the
    database): what each of `[server] workers` publishes for the first, which serves
    /metrics and adds them up (radiusd.workers)."""

    counts: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    replies: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    latency: dict[str, Histogram] = field(default_factory=dict)
    sms_refused: Counter[str] = field(default_factory=Counter)
    guess_refused: Counter[str] = field(default_factory=Counter)
    venues: Counter[str] = field(default_factory=Counter)  # "VENUE\tWHAT" (venue_figures)

    def add(self, other: Figures) -> None:
        for mine, theirs in ((self.counts, other.counts), (self.dropped, other.dropped),
                             (self.replies, other.replies),
                             (self.sms_refused, other.sms_refused),
                             (self.guess_refused, other.guess_refused),
                             (self.venues, other.venues)):
            mine.update(theirs)  # type: ignore[arg-type]
        for port, hist in other.latency.items():
            into = self.latency.setdefault(port, Histogram(hist.buckets))
            into.counts = [a + b for a, b in zip(into.counts, hist.counts, strict=True)]
            into.count += hist.count
            into.sum += hist.sum

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "dropped": self.dropped,
                "replies": [[*k, v] for k, v in self.replies.items()],
                "latency": {p: {"buckets": list(h.buckets), "counts": h.counts,
                                "count": h.count, "sum": h.sum}
                            for p, h in self.latency.items()},
                "sms_refused": self.sms_refused, "guess_refused": self.guess_refused,
                "venues": self.venues}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        latency = {}
        for port, h in data.get("latency", {}).items():
            hist = Histogram(tuple(h["buckets"]))
            hist.counts, hist.count, hist.sum = list(h["counts"]), h["count"], h["sum"]
            latency[port] = hist
        return cls(Counter(data.get("counts", {})), Counter(data.get("dropped", {})),
                   Counter({(p, c, code): v for p, c, code, v in data.get("replies", [])}),
                   latency, Counter(data.get("sms_refused", {})),
                   Counter(data.get("guess_refused", {})), Counter(data.get("venues", {})))


def own_figures(stats_counts: Counter[str], stats_dropped: Counter[str],
                timer: RadiusTimer | None, sms_refused: Counter[str],
                guess_refused: Counter[str]) -> Figures:
    """This process's counters as `Figures` (copies: the process goes on counting)."""
    f = Figures(Counter(stats_counts), Counter(stats_dropped),
                sms_refused=Counter(sms_refused), guess_refused=Counter(guess_refused))
    if timer is not None:
        f.replies.update(timer.replies)
        f.add(Figures(latency=timer.latency))
    return f


def as_timer(figures: Figures, inner: Handler) -> RadiusTimer:
    """A `RadiusTimer` view of added-up figures, for `render`."""
    timer = RadiusTimer(inner)
    timer.replies = figures.replies
    timer.latency = figures.latency
    return timer


class HttpCounters:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.otp: Counter[str] = Counter()  # outcome: sent | <Refused.reason> | ip_limit
        self.refused: Counter[str] = Counter()  # connections: per_address | total
        self.closed: Counter[str] = Counter()  # idle_for_room | request_timeout | body_timeout
        self.bad: Counter[str] = Counter()  # malformed: parse | input; server: our errors
        self.descriptors: Counter[str] = Counter()  # EMFILE/ENFILE where: accept | http


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _number(value: float) -> str:
    """Exact: a count of millions is not rounded to six digits ("4.4488e+06")."""
    if isinstance(value, int):
        return f"{value:d}"
    if value.is_integer() and abs(value) < 2**53:
        return f"{int(value):d}"
    return repr(value)


def _samples(name: str, rows: Iterable[tuple[dict[str, object], float]]) -> list[str]:
    out = []
    for labels, value in rows:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        shown = _number(value)
        out.append(f"{name}{{{text}}} {shown}" if text else f"{name} {shown}")
    return out


def render(stats_counts: Counter[str], stats_dropped: Counter[str],
           timer: RadiusTimer | None, http: HttpCounters,
           db: Snapshot, up: dict[str, int]) -> str:
    """Everything as one exposition text. ``db`` holds the database's figures."""
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
    radsec = sorted((k.removeprefix("radsec."), v) for k, v in stats_counts.items()
                    if k.startswith("radsec."))
    if radsec:  # RFC 6614 (docs/radsec.md); refusals are in radiusd_radius_dropped_total
        lines += _family("radiusd_radsec_connections_total", "counter",
                         "RadSec connections: accepted, and why the server ended them.")
        lines += _samples("radiusd_radsec_connections_total",
                          (({"event": e}, v) for e, v in radsec))
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
    lines += _samples("radiusd_passwords", (
        ({"state": s}, db.passwords.get(s, 0))
        for s in sorted({"issued", "active", "expired", *db.passwords})))
    lines += _family("radiusd_passwords_issued_total", "counter", "Passwords ever issued.")
    lines += _samples("radiusd_passwords_issued_total", [({}, db.issued)])
    lines += _family("radiusd_passwords_used_total", "counter",
                     "Passwords that logged a device in (Rules §7).")
    lines += _samples("radiusd_passwords_used_total", [({}, db.used)])
    lines += _family("radiusd_passwords_expired_total", "counter",
                     "Passwords expired, by reason (Rules §8-§9).")
    lines += _samples("radiusd_passwords_expired_total",
                      (({"reason": r}, n) for r, n in sorted(db.expired.items())))
    lines += _family("radiusd_sms_messages", "gauge",
                     "SMS in the outbox, by state: queued, sent, failed (Rules §6).")
    lines += _samples("radiusd_sms_messages", (
        ({"state": s}, db.sms.get(s, 0))
        for s in sorted({"queued", "sent", "failed", *db.sms})))

    lines += _family("radiusd_http_requests_total", "counter",
                     "HTTP requests, by route and status.")
    lines += _samples("radiusd_http_requests_total", (
        ({"route": r, "status": s}, v) for (r, s), v in sorted(http.requests.items())))
    lines += _family("radiusd_http_otp_requests_total", "counter",
                     "POST /api/v1/otp, by outcome (sent or the refusal reason).")
    lines += _samples("radiusd_http_otp_requests_total",
                      (({"outcome": o}, v) for o, v in sorted(http.otp.items())))
    return "\n".join(lines) + "\n"


def render_bounds(http: HttpCounters, guard: Guard, health: Health,
                  sms: OutboxWorker | None, sms_waiting: float | None) -> str:
    """Issue 19: connections and their bounds, descriptors running out, malformed
    requests, health episodes, and whether SMS go out."""
    book = guard.book
    lines: list[str] = []
    lines += _family("radiusd_http_connections", "gauge", "HTTP connections open.")
    lines += _samples("radiusd_http_connections", [({}, book.total)])
    lines += _family("radiusd_http_connections_limit", "gauge",
                     "Most HTTP connections open at once, in all and per client.")
    lines += _samples("radiusd_http_connections_limit", [
        ({"scope": "total"}, book.total_cap), ({"scope": "per_address"}, book.per_key_cap)])
    lines += _family("radiusd_http_connections_refused_total", "counter",
                     "HTTP connections closed at once: a client's share or the total was full.")
    lines += _samples("radiusd_http_connections_refused_total", (
        ({"reason": r}, http.refused.get(r, 0)) for r in ("per_address", "total")))
    lines += _family("radiusd_http_connections_closed_total", "counter",
                     "HTTP connections the server closed: idle ones for room, slow requests.")
    lines += _samples("radiusd_http_connections_closed_total", (
        ({"reason": r}, http.closed.get(r, 0))
        for r in ("idle_for_room", "request_timeout", "body_timeout")))
    lines += _family("radiusd_http_bad_requests_total", "counter",
                     "HTTP requests refused as malformed (parse, input) or failed (server).")
    lines += _samples("radiusd_http_bad_requests_total", (
        ({"kind": k}, http.bad.get(k, 0)) for k in ("parse", "input", "server")))
    exhausted = dict(http.descriptors)
    exhausted["sms"] = getattr(sms, "descriptor_errors", 0)
    lines += _family("radiusd_descriptors_exhausted_total", "counter",
                     "Times a descriptor could not be had (EMFILE/ENFILE), by where.")
    lines += _samples("radiusd_descriptors_exhausted_total", (
        ({"where": w}, exhausted.get(w, 0)) for w in ("accept", "http", "sms")))
    if health is not None:
        parts = sorted({"store", "sms", "descriptors", *health.episodes})
        lines += _family("radiusd_health_failing", "gauge",
                         "1 while a part of the server reports failing.")
        lines += _samples("radiusd_health_failing", (
            ({"part": p}, int(not health.ok(p))) for p in parts))
        lines += _family("radiusd_health_episodes_total", "counter",
                         "Episodes of failure per part (each logged once).")
        lines += _samples("radiusd_health_episodes_total", (
            ({"part": p}, health.episodes.get(p, 0)) for p in parts))
    counts = getattr(sms, "counts", None)
    if counts is not None:
        lines += _family("radiusd_sms_send_results_total", "counter",
                         "SMS outbox attempts and outcomes since start, by result.")
        lines += _samples("radiusd_sms_send_results_total", (
            ({"result": r}, v) for r, v in sorted(counts.items())))
    if sms_waiting is not None:
        lines += _family("radiusd_sms_oldest_queued_seconds", "gauge",
                         "How long the oldest queued SMS has waited (0: none waits).")
        lines += _samples("radiusd_sms_oldest_queued_seconds", [({}, round(sms_waiting, 3))])
    return "\n".join(lines) + "\n"


def render_limits(sms_refused: Counter[str], guess_refused: Counter[str]) -> str:
    """Issue 11: "Get password" presses and logins refused, by the `[otp]` cap that
    refused them (docs/otp.md "Limits" and "Guessing")."""
    lines = _family("radiusd_otp_refused_total", "counter",
                    "Get-password presses (SMS caps) and logins (wrong-code caps) refused, "
                    "by the [otp] cap that refused them.")
    refused = sms_refused + guess_refused
    lines += _samples("radiusd_otp_refused_total", (
        ({"cap": key}, refused.get(key, 0))
        for key in (*(cap.key for cap in (*SMS_CAPS, *GUESS_CAPS)),
                    "sms_daily_budget")))  # a venue's budget (issue 15)
    return "\n".join(lines) + "\n"



def render_venues(totals: Counter[str], names: list[str]) -> str:
    """Issue 15: per venue (the configured names only: a bounded label set), logins,
    SMS its presses queued, and presses refused by reason (a cap key, the daily
    budget, `daily_time_used`, `resend_wait`...)."""
    if not names:
        return ""
    lines = _family("radiusd_venue_logins_total", "counter",
                    "Logins (first use of a password) by venue.")
    lines += _samples("radiusd_venue_logins_total",
                      (({"venue": v}, totals.get(f"{v}\tlogins", 0)) for v in names))
    lines += _family("radiusd_venue_sms_total", "counter",
                     "SMS queued by Get-password presses, by venue.")
    lines += _samples("radiusd_venue_sms_total",
                      (({"venue": v}, totals.get(f"{v}\tsms", 0)) for v in names))
    lines += _family("radiusd_venue_refused_total", "counter",
                     "Get-password presses and logins refused, by venue and reason.")
    known = set(names)
    refused = sorted((k.split("\t", 1)[0], k.split("\t", 1)[1].removeprefix("refused:"), n)
                     for k, n in totals.items()
                     if "\trefused:" in k and k.split("\t", 1)[0] in known)
    lines += _samples("radiusd_venue_refused_total",
                      (({"venue": v, "reason": r}, n) for v, r, n in refused))
    return "\n".join(lines) + "\n"


def render_disconnects(samples: list[tuple[str, dict[str, str], int]],
                       no_accounting: Counter[str]) -> str:
    """Issue 13: Disconnect-Requests sent and how they ended (`Disconnector.samples`),
    and passwords made single-use because their NAS sent no accounting (Rules §8)."""
    helps = {
        "radiusd_coa_requests_total": "Disconnect-Requests sent (RFC 5176).",
        "radiusd_coa_retransmissions_total": "Disconnect-Requests sent again (no answer yet).",
        "radiusd_coa_answers_total": "Disconnect-ACK and Disconnect-NAK received, by result.",
        "radiusd_coa_timeouts_total": "Disconnect-Requests no NAS answered.",
        "radiusd_coa_queue_full_total": "Disconnect-Requests not sent: too many waiting.",
        "radiusd_coa_late_duplicates_total": "Answers to requests already ended.",
        "radiusd_coa_forged_total": "Answers refused as not the NAS's, by reason.",
    }
    lines: list[str] = []
    seen: set[str] = set()
    for name, labels, value in samples:
        if name not in seen:
            seen.add(name)
            lines += _family(name, "counter", helps.get(name, name))
        lines += _samples(name, [(dict(labels), value)])
    name = "radiusd_passwords_without_accounting_total"
    lines += _family(name, "counter", "Passwords expired because no Accounting-Start came "
                     "(the NAS sends no accounting: passwords are single-use), by NAS.")
    lines += _samples(name, (({"nas": n}, v) for n, v in sorted(no_accounting.items())))
    return "\n".join(lines) + "\n"
