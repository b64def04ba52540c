"""What the server can honestly promise right now, part by part, sans-IO.

Each part (``store``, ``sms``, ...) is either ok or failing with a reason. The
parts that do the work report what happened (`failed`, `recovered`); the
places that speak for the server read it: Status-Server is answered only while
the parts a request needs are ok (RFC 5997 §4: a server that answers the
watchdog but not requests keeps traffic from failing over), and ``GET /healthz``
says 503 with the reason.

Each episode is logged twice at most: once when a part starts failing (with the
real error), once when it recovers, never once per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("radiusd.health")


@dataclass(slots=True)
class Trouble:
    """A part that is failing: why, since when (clock seconds) and how often."""

    reason: str
    since: float
    count: int = 1


class Health:
    """Per-part state. ``failed``/``recovered`` are cheap to call on every request:
    they log only on a change of state."""

    def __init__(self) -> None:
        self.troubles: dict[str, Trouble] = {}
        self.episodes: dict[str, int] = {}  # part -> episodes since start (for /metrics)

    def failed(self, part: str, reason: str, now: float) -> None:
        trouble = self.troubles.get(part)
        if trouble is not None:
            trouble.count += 1
            if trouble.reason != reason:
                log.error("%s: still failing, now: %s", part, reason)
                trouble.reason = reason
            return
        self.troubles[part] = Trouble(reason, now)
        self.episodes[part] = self.episodes.get(part, 0) + 1
        log.error("%s failing: %s (logged once until it recovers)", part, reason)

    def recovered(self, part: str, now: float) -> None:
        trouble = self.troubles.pop(part, None)
        if trouble is None:
            return
        log.warning("%s recovered after %.0fs and %d failure(s); last error was: %s",
                    part, max(0.0, now - trouble.since), trouble.count, trouble.reason)

    def ok(self, part: str) -> bool:
        return part not in self.troubles

    def reason(self, part: str) -> str | None:
        trouble = self.troubles.get(part)
        return None if trouble is None else trouble.reason
