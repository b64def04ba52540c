"""How much one number, device, NAS, number range or the whole server may ask for, and
how many wrong codes may be tried, sans-IO (Rules §6: every SMS costs money; Rules §7:
the code is the only proof, so guessing it must stay hopeless).

Two budgets, each a set of sliding windows:

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
    """Event times in a sliding window (rate limits)."""

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


class _Budget:
    """Sliding windows per (cap, key); refusals counted by cap, logged once per
    episode. Memory follows recent traffic: `prune` forgets idle keys."""

    def __init__(self, cfg: OtpConfig, caps: tuple[Cap, ...], what: str) -> None:
        self.cfg = cfg
        self.caps = caps
        self.what = what  # "SMS" | "wrong codes", for the log
        self.windows: dict[Cap, dict[str, Window]] = {cap: {} for cap in caps}
        self.refused: Counter[str] = Counter()  # cap key -> refusals, for /metrics
        self._episodes: set[tuple[str, str]] = set()  # (cap, key) full and logged

    def limit(self, cap: Cap) -> int:
        return int(getattr(self.cfg, cap.key))

    def full(self, keys: dict[str, str | None], now: float) -> Refused | None:
        """The first cap that is full for these keys, counted and logged, or None.
        Looks only (.get): a refused request allocates nothing (spoofed floods)."""
        for cap in self.caps:
            key = keys.get(cap.what)
            if key is None:
                continue
            w = self.windows[cap].get(key)
            if w is None or w.count(now) < self.limit(cap):
                self._episodes.discard((cap.key, key))
                continue
            wait = w.oldest() + cap.span - now
            self.refused[cap.key] += 1
            if cap.costly and (cap.key, key) not in self._episodes:
                self._episodes.add((cap.key, key))
                shown = "" if cap.what == "global" else f" for {cap.what} {key}"
                log.warning("[otp] %s reached%s (%d %s in %s): refusing until %.0f s "
                            "from now (logged once until it frees up)", cap.key, shown,
                            self.limit(cap), self.what, _span(cap.span), wait)
            return Refused(cap.reason, wait, {"minutes": max(1, round(wait / 60))}, cap.key)
        return None

    def add(self, keys: dict[str, str | None], now: float) -> None:
        for cap in self.caps:
            key = keys.get(cap.what)
            if key is None:
                continue
            table = self.windows[cap]
            w = table.get(key)
            if w is None:
                w = table[key] = Window(cap.span)
            w.events.append(now)

    def prune(self, now: float) -> None:
        for table in self.windows.values():
            for key in [k for k, w in table.items() if not w.count(now)]:
                del table[key]


def _span(seconds: float) -> str:
    return {MINUTE: "a minute", HOUR: "an hour", DAY: "24 h"}.get(seconds, f"{seconds:.0f} s")


class SmsLimits(_Budget):
    """Rules §6 costs money: what a "Get password" press may trigger."""

    def __init__(self, cfg: OtpConfig, region_of: Callable[[str], str]) -> None:
        super().__init__(cfg, SMS_CAPS, "SMS")
        self.region_of = region_of
        self.last_sent: dict[str, float] = {}

    # Names the tests and the HTTP side know the windows by.
    @property
    def number_hour(self) -> dict[str, Window]:
        return self.windows[SMS_CAPS[0]]

    @property
    def device_hour(self) -> dict[str, Window]:
        return self.windows[SMS_CAPS[2]]

    def _keys(self, login: str, device: str | None, nas: str | None) -> dict[str, str | None]:
        region = self.region_of(login)
        foreign = region != self.cfg.default_region and login.startswith("+")
        return {
            "number": login,
            "device": device or None,
            "nas": nas or None,
            "prefix": login[:-PREFIX_FREE_DIGITS] if login.startswith("+") else None,
            "foreign": region if foreign else None,
            "global": "",
        }

    def check(self, login: str, device: str | None, nas: str | None,
              now: float) -> Refused | None:
        last = self.last_sent.get(login)
        wait_for = self.cfg.resend_after_seconds
        if last is not None and now - last < wait_for:
            wait = wait_for - (now - last)
            return Refused("resend_wait", wait, {"seconds": max(1, round(wait))})
        return self.full(self._keys(login, device, nas), now)

    def record(self, login: str, device: str | None, nas: str | None, now: float) -> None:
        """An SMS was queued for this press: it counts in every window."""
        self.last_sent[login] = max(now, self.last_sent.get(login, 0.0))
        self.add(self._keys(login, device, nas), now)

    def prune(self, now: float) -> None:
        """Forget idle keys so memory follows traffic, not history."""
        super().prune(now)
        for key in [k for k, t in self.last_sent.items() if now - t > DAY]:
            del self.last_sent[key]


class GuessLimits(_Budget):
    """Rules §7: wrong codes per device and per NAS. A wrong code also counts against
    every live password of the number it named (`max_attempts`, in `otp`)."""

    def __init__(self, cfg: OtpConfig) -> None:
        super().__init__(cfg, GUESS_CAPS, "wrong codes")

    def check(self, device: str | None, nas: str | None, now: float) -> Refused | None:
        return self.full({"device": device or None, "nas": nas or None}, now)

    def wrong(self, device: str | None, nas: str | None, now: float) -> None:
        self.add({"device": device or None, "nas": nas or None}, now)
