"""Dead sessions and dead passwords (DESIGN flow 5; Rules §8).

A NAS that reboots or loses its link never sends Stop (MikroTik sends no
Accounting-On either), so a session with no update for
`[accounting] stale_after_seconds` is closed here and its password expired, and a
password past `[otp] max_lifetime_seconds` dies whatever the NAS says.
"""

from __future__ import annotations

import asyncio
import logging

from radiusd.clock import Clock
from radiusd.config import Config
from radiusd.otp import PasswordBook
from radiusd.store.sqlite import Op, Store

log = logging.getLogger("radiusd.reaper")

_CLOSE = """
UPDATE sessions SET stopped_at = updated_at, terminate_cause = 'Stale'
WHERE unique_id = ? AND stopped_at IS NULL
"""


class Reaper:
    def __init__(self, config: Config, book: PasswordBook, store: Store, clock: Clock) -> None:
        self.config = config
        self.book = book
        self.store = store
        self.clock = clock
        self.failures = 0

    async def run_once(self) -> int:
        """One pass; returns how many sessions and passwords it ended."""
        now = self.clock.now()
        cutoff = now - self.config.accounting.stale_after()
        rows = await self.store.fetchall(
            "SELECT unique_id, class_token, login, device FROM sessions "
            "WHERE stopped_at IS NULL AND updated_at < ?", (cutoff,))
        ops: list[Op] = []
        for r in rows:
            ops.append((_CLOSE, (r["unique_id"],)))
            ops += self.book.end_session(r["class_token"], r["login"], r["device"], now,
                                         "stale_session")
        ops += self.book.sweep(now)
        if ops:
            await self.store.write(ops)
            log.info("reaper: closed %d stale session(s), %d write(s)", len(rows), len(ops))
        return len(ops)

    async def run(self) -> None:
        interval = self.config.accounting.reaper_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except Exception:  # keep reaping; a lost Stop must not live forever
                self.failures += 1
                log.exception("reaper pass failed (%d so far); retrying in %.0fs",
                              self.failures, interval)
