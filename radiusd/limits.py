"""How much one number, device, NAS, number range or the whole server may ask for, and
how many wrong codes may be tried, sans-IO (Rules §6: every SMS costs money; Rules §7:
the code is the only proof, so guessing it must stay hopeless).

Two budgets, each a set of windows counted in the database (`radiusd.store.limits`),
so that they hold across nodes (issue 12):

- `SmsLimits`, "Get password" presses that lead to an SMS: per number (resend wait,
  hour, day), per device (hour), per NAS (minute, day), per block of 10,000 numbers
  (day), to other countries (day) and for the whole server (minute, day). A press
  refused for any reason counts nowhere, so a refused abuser uses up nobody's budget.
  The caps are checked from the narrowest to the widest, so the one that bites is the
  abuser's wherever the abuser can be told apart (their number, device or range).
- `GuessLimits`, wrong codes: per device and per NAS (hour). Past them a login is
  refused without comparing the code, so they bound what a guesser learns.

The numbers and the odds they give are in docs/otp.md ("Limits", "Guessing"). Every
refusal that protects cost is logged once per episode (its cap and key) and counted
by cap for /metrics (`refused`).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from radiusd import messages
from radiusd.config import OtpConfig
from radiusd.store import limits as kept
from radiusd.store.backend import Op

log = logging.getLogger("radiusd.otp")

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
PREFIX_FREE_DIGITS = 4  # a "range" is a block of 10,000 numbers


@dataclass(slots=True)
class Refused:
    reason: str  # a messages.TEXTS key
    retry_after: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)
    cap: str = ""  # the config key of the limit that refused, "" for the resend wait

    def message(self, language: str) -> str:
        return messages.text(self.reason, language, **self.values)


class Window:
    """Event times in a sliding window, in this process's memory: the HTTP API's
    per-address limits (a node's own front door; the Rules' caps are `_Budget`'s)."""

    __slots__ = ("events", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.events: deque[float] = deque()

    def count(self, now: float) -> int:
        ev = self.events
        while ev and ev[0] <= now - self.span:
            ev.popleft()
        return len(ev)

    def oldest(self) -> float:
        return self.events[0] if self.events else 0.0


@dataclass(frozen=True, slots=True)
class Cap:
    """One limit: ``key`` (a config name) on ``what`` over ``span`` seconds."""

    key: str
    what: str  # number | device | nas | prefix | foreign | global
    span: float
    reason: str  # the messages.TEXTS key the user is told
    costly: bool  # protects the operator's money: logged once per episode


# Narrowest first: the first cap that is full refuses the press.
SMS_CAPS = (
    Cap("per_number_hourly", "number", HOUR, "number_limit", False),
    Cap("per_number_daily", "number", DAY, "number_limit", False),
    Cap("per_device_hourly", "device", HOUR, "device_limit", False),
    Cap("per_prefix_daily", "prefix", DAY, "number_limit", True),
    Cap("foreign_daily", "foreign", DAY, "number_limit", True),
    Cap("per_nas_minute", "nas", MINUTE, "busy", False),
    Cap("per_nas_daily", "nas", DAY, "sms_unavailable", True),
    Cap("global_per_minute", "global", MINUTE, "busy", False),
    Cap("global_daily", "global", DAY, "sms_unavailable", True),
)

GUESS_CAPS = (
    Cap("wrong_per_device_hourly", "device", HOUR, "device_guess_limit", False),
    Cap("wrong_per_nas_hourly", "nas", HOUR, "nas_guess_limit", True),
)


BUCKETS = 60  # a cap's counter is kept in buckets of 1/60 of its span


def bucket_width(cap: Cap) -> int:
    return max(1, int(cap.span // BUCKETS))


def bucket_of(at: float, width: int) -> int:
    """The start, in whole seconds, of the bucket `at` falls in."""
    return int(at // width) * width


class _Budget:
    """Caps kept as bucketed counters in the database (`store.limits`), so every node
    counts every node's events; this decides from what is read. Refusals are
    counted by cap (this node's, for /metrics) and logged once per episode.

    A bucket counts while its first event is within the span: it is released with
    its first event, so a cap frees up at most one bucket (1/60 of the span) early
    and never late (docs/otp.md, "Limits")."""

    def __init__(self, cfg: OtpConfig, caps: tuple[Cap, ...], what: str) -> None:
        self.cfg = cfg
        self.caps = caps
        self.what = what  # "SMS" | "wrong codes", for the log
        self.refused: Counter[str] = Counter()  # cap key -> refusals, for /metrics
        self._episodes: set[tuple[str, str]] = set()  # (cap, key) full and logged

    def limit(self, cap: Cap, cfg: OtpConfig | None = None) -> int:
        """The cap's value in ``cfg`` (a venue's `[otp]` with its overrides,
        radiusd.venues), else in the top-level `[otp]`."""
        return int(getattr(cfg or self.cfg, cap.key))

    def asks(self, keys: dict[str, str | None], now: float) -> list[kept.Ask]:
        """The counters to read for these keys."""
        out = []
        for cap in self.caps:
            key = keys.get(cap.what)
            if key is not None:
                out.append(kept.Ask(cap.key, key,
                                    bucket_of(now - cap.span, bucket_width(cap))))
        return out

    def full(self, keys: dict[str, str | None], counts: list[kept.Count],
             now: float, cfg: OtpConfig | None = None) -> Refused | None:
        """The first cap that is full for these keys (from `counts`, as read for
        `asks`), counted and logged, or None; the caps' values from ``cfg`` (a venue's)
        or the top-level `[otp]`."""
        by_cap: dict[str, list[float]] = {}
        total: Counter[str] = Counter()
        for c in counts:
            span = self._span(c.cap)
            if span is None or c.first_at <= now - span:
                continue
            total[c.cap] += c.hits
            by_cap.setdefault(c.cap, []).append(c.first_at)
        for cap in self.caps:
            key = keys.get(cap.what)
            if key is None:
                continue
            if total[cap.key] < self.limit(cap, cfg):
                self._episodes.discard((cap.key, key))
                continue
            wait = min(by_cap[cap.key]) + cap.span - now
            self.refused[cap.key] += 1
            if cap.costly and (cap.key, key) not in self._episodes:
                if len(self._episodes) > 10_000:
                    self._episodes.clear()
                self._episodes.add((cap.key, key))
                shown = (f" for {key}" if key else "") if cap.what == "global" \
                    else f" for {cap.what} {key}"
                log.warning("[otp] %s reached%s (%d %s in %s): refusing until %.0f s "
                            "from now (logged once until it frees up)", cap.key, shown,
                            self.limit(cap, cfg), self.what, _span(cap.span), wait)
            return Refused(cap.reason, wait, {"minutes": max(1, round(wait / 60))}, cap.key)
        return None

    def _span(self, cap_key: str) -> float | None:
        for cap in self.caps:
            if cap.key == cap_key:
                return cap.span
        return None

    def add(self, keys: dict[str, str | None], now: float) -> list[Op]:
        """One more event in every cap these keys have (written with the event)."""
        ops = []
        for cap in self.caps:
            key = keys.get(cap.what)
            if key is not None:
                ops.append(kept.add(cap.key, key, bucket_of(now, bucket_width(cap)), now))
        return ops


def prune(now: float) -> list[Op]:
    """Forget counters no cap can count any more, and cooldowns long past."""
    return kept.prune(int(now - DAY) - bucket_width(SMS_CAPS[1]), now - DAY)


def _span(seconds: float) -> str:
    return {MINUTE: "a minute", HOUR: "an hour", DAY: "24 h"}.get(seconds, f"{seconds:.0f} s")


class SmsLimits(_Budget):
    """Rules §6 costs money: what a "Get password" press may trigger. The resend wait
    is the number's cooldown row, claimed atomically (`store.limits.claim_cooldown`)."""

    def __init__(self, cfg: OtpConfig, region_of: Callable[[str], str]) -> None:
        super().__init__(cfg, SMS_CAPS, "SMS")
        self.region_of = region_of

    def keys(self, login: str, device: str | None, nas: str | None,
             whole: str = "") -> dict[str, str | None]:
        """The keys a press counts under; ``whole`` is what the `global_*` caps count
        ("": the server; a venue's `limits_key`: that venue, radiusd.venues)."""
        region = self.region_of(login)
        foreign = region != self.cfg.default_region and login.startswith("+")
        return {
            "number": login,
            "device": device or None,
            "nas": nas or None,
            "prefix": login[:-PREFIX_FREE_DIGITS] if login.startswith("+") else None,
            "foreign": region if foreign else None,
            "global": whole,
        }

    def check(self, keys: dict[str, str | None], counts: list[kept.Count],
              now: float, cfg: OtpConfig | None = None) -> Refused | None:
        """The resend wait (from the cooldown row read with the counters), then the
        caps, narrowest first (values from ``cfg``, a venue's, else `[otp]`)."""
        for c in counts:
            if c.cap == "cooldown" and c.first_at > now:
                return self.resend_wait(c.first_at - now)
        return self.full(keys, [c for c in counts if c.cap != "cooldown"], now, cfg)

    @staticmethod
    def resend_wait(wait: float) -> Refused:
        return Refused("resend_wait", wait, {"seconds": max(1, round(wait))})


class GuessLimits(_Budget):
    """Rules §7: wrong codes per device and per NAS. A wrong code also counts against
    every live password of the number it named (`max_attempts`, in `otp`)."""

    def __init__(self, cfg: OtpConfig) -> None:
        super().__init__(cfg, GUESS_CAPS, "wrong codes")

    @staticmethod
    def keys(device: str | None, nas: str | None) -> dict[str, str | None]:
        return {"device": device or None, "nas": nas or None}
