"""Venues: which settings a request gets, by the client (NAS) it came from (issue 15).

Sans-IO: built once from a `Config` (at start and at each reload), then asked per
request. A `[[venues]]` table names its `[[clients]]` and overrides what it wants of
the top-level settings; a client in no venue gets the top-level settings (the
`DEFAULT` venue, named ""), so a config without venues behaves as before.

What a venue decides:
- the `[otp]` limits and the language of its presses (Rules §6; `limits.SmsLimits`
  counts `global_*` per venue);
- its SMS: provider section, sender, templates (Rules §6, `sms.outbox` routes by the
  venue recorded on the outbox row);
- `sms_daily_budget`: SMS per calendar day in its `timezone`, reserved in the press's
  own transaction (`store.budgets`);
- its session profile in the Access-Accept (RFC 2865 §5.27 Session-Timeout, §5.28
  Idle-Timeout; the rate limit in the NAS vendor's attribute and units, `rate_attributes`)
  and `daily_time_seconds` per number (Session-Timeout = what is left today).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from radiusd.config import Config, OtpConfig, VenueConfig, parse_rate
from radiusd.store.sessions import Spent

# The `[otp]` keys a venue may override (config.VenueConfig).
OTP_OVERRIDES = ("resend_after_seconds", "per_number_hourly", "per_number_daily",
                 "per_device_hourly", "per_nas_minute", "per_nas_daily",
                 "global_per_minute", "global_daily", "per_prefix_daily", "foreign_daily",
                 "session_timeout_seconds", "idle_timeout_seconds")


@dataclass(frozen=True, slots=True)
class Venue:
    """The effective settings of one venue (or of the top level: name "")."""

    name: str
    otp: OtpConfig  # [otp] with the venue's overrides
    language: str
    sms_provider: str = ""  # a [sms.providers] name; "": the top-level provider
    sender: str = ""  # "": the provider's own
    templates: dict[str, str] = field(default_factory=dict)
    sms_daily_budget: int | None = None
    timezone: str = ""  # "": the server's local time
    rate_limit: tuple[int, int] | None = None  # (up, down) bit/s
    daily_time_seconds: int | None = None
    clients: frozenset[str] = frozenset()

    @property
    def limits_key(self) -> str:
        """The key the `global_*` caps count under: the server's ("") or the venue's."""
        return f"venue {self.name}" if self.name else ""

    def day(self, now: float) -> str:
        """The calendar day of `now` where the venue is, e.g. "2026-12-06"."""
        return self._local(now).date().isoformat()

    def day_start(self, now: float) -> float:
        """When the venue's calendar day of `now` began (Unix seconds)."""
        local = self._local(now)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight.timestamp()

    def _local(self, now: float) -> dt.datetime:
        if self.timezone:
            return dt.datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        return dt.datetime.fromtimestamp(now).astimezone()


def time_left(venue: Venue, sessions: list[Spent], now: float) -> int | None:
    """What is left today of the venue's `daily_time_seconds` for a number, from its
    sessions (those since `day_start` minus the longest a password lives, so that one
    begun yesterday counts with its part after midnight); None: no daily cap. A
    session counts at the venue's own clients only; a closed one for its
    Acct-Session-Time (RFC 2866 §5.7) when the NAS sent one, an open one until now."""
    if venue.daily_time_seconds is None:
        return None
    start = venue.day_start(now)
    used = 0.0
    for s in sessions:
        if venue.clients and s.nas not in venue.clients:
            continue
        if s.stopped_at is not None:
            end = s.started_at + s.session_time if s.session_time else s.stopped_at
        else:
            end = max(now, s.started_at + s.session_time)
        used += max(0.0, min(end, now) - max(s.started_at, start))
    return int(venue.daily_time_seconds - used)


def _venue(cfg: VenueConfig, top: Config) -> Venue:
    overrides: dict[str, Any] = {k: getattr(cfg, k) for k in OTP_OVERRIDES
                                 if getattr(cfg, k, None) is not None}
    otp = top.otp.model_copy(update=overrides) if overrides else top.otp
    rate = None
    if cfg.rate_limit:
        up, _, down = cfg.rate_limit.partition("/")
        rate = (parse_rate(up.strip()), parse_rate(down.strip()))
    return Venue(
        name=cfg.name, otp=otp, language=cfg.language or top.otp.language,
        sms_provider=cfg.sms.provider, sender=cfg.sms.sender,
        templates={str(k): v for k, v in (cfg.sms.templates or top.sms.templates).items()},
        sms_daily_budget=cfg.sms_daily_budget, timezone=cfg.timezone,
        rate_limit=rate, daily_time_seconds=cfg.daily_time_seconds,
        clients=frozenset(cfg.clients))


class Venues:
    """Client name -> `Venue`, computed once per config (a reload builds a new one)."""

    def __init__(self, config: Config) -> None:
        self.config = config  # what a request reads, whole, for its whole life
        self.default = Venue(name="", otp=config.otp, language=config.otp.language,
                             templates={str(k): v for k, v in config.sms.templates.items()})
        self.by_name: dict[str, Venue] = {}
        self._of_client: dict[str, Venue] = {}
        for v in config.venues:
            venue = _venue(v, config)
            self.by_name[venue.name] = venue
            for client in v.clients:
                self._of_client[client] = venue

    def of_client(self, name: str | None) -> Venue:
        """The venue of a client (by its `[[clients]]` name); the top level for a
        client in none, and for requests that came through no client (the HTTP API)."""
        if name is None:
            return self.default
        return self._of_client.get(name, self.default)

    def named(self, name: str | None) -> Venue:
        """A venue by name (as recorded on an outbox row); the top level when it is
        "" or no longer configured."""
        return self.by_name.get(name or "", self.default)


def venue_summary(v: VenueConfig) -> str:
    """One line on what a venue is and changes (check-config, the start-up log)."""
    parts = [f"clients {', '.join(v.clients) or '(none)'}"]
    if v.sms.provider or v.sms.sender:
        parts.append(f"sms via {v.sms.provider or '[sms]'}"
                     + (f" from {v.sms.sender}" if v.sms.sender else ""))
    if v.sms_daily_budget is not None:
        parts.append(f"{v.sms_daily_budget} SMS a day ({v.timezone or 'local time'})")
    if v.rate_limit:
        parts.append(f"rate {v.rate_limit}")
    return "; ".join(parts)


def _compact(bits: int) -> str:
    """2_000_000 -> "2M", 512_000 -> "512k": MikroTik's rate syntax."""
    for suffix, scale in (("G", 1_000_000_000), ("M", 1_000_000), ("k", 1_000)):
        if bits % scale == 0:
            return f"{bits // scale}{suffix}"
    return str(bits)


def rate_attributes(vendor: str, rate: tuple[int, int] | None) -> list[tuple[str, Any]]:
    """The rate limit (up, down in bit/s) as the NAS's vendor reads it:
    - mikrotik: Mikrotik-Rate-Limit "rx/tx" from the router's side, which for a
      hotspot user is upload/download ("2M/8M");
    - wispr: WISPr-Bandwidth-Max-Up / -Down in bit/s (WISPr 1.0 appendix D);
    - coovachilli: ChilliSpot-Bandwidth-Max-Up / -Down in kbit/s;
    - none: nothing."""
    if rate is None or vendor == "none":
        return []
    up, down = rate
    if vendor == "mikrotik":
        return [("Mikrotik-Rate-Limit", f"{_compact(up)}/{_compact(down)}")]
    if vendor == "wispr":
        return [("WISPr-Bandwidth-Max-Up", up), ("WISPr-Bandwidth-Max-Down", down)]
    if vendor == "coovachilli":
        return [("ChilliSpot-Bandwidth-Max-Up", max(1, up // 1000)),
                ("ChilliSpot-Bandwidth-Max-Down", max(1, down // 1000))]
    return []
