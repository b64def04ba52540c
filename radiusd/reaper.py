"""Dead sessions and dead passwords (DESIGN flow 5; Rules §8).

A NAS that reboots or loses its link never sends Stop (MikroTik sends no
Accounting-On either), so a session with no update for
`[accounting] stale_after_seconds` is closed here and its password expired, and a
password past `[otp] max_lifetime_seconds` dies whatever the NAS says (and the NAS is
told: `SessionEnd.lifetime_over`). A password no accounting spoke of within
`[accounting] start_grace_seconds` of its login dies too (Rules §8 without
accounting: `SessionEnd.unseen_over`).
"""

from __future__ import annotations

import asyncio
import logging

from radiusd.clock import Clock
from radiusd.config import Config
from radiusd.otp import PRUNES, PasswordBook
from radiusd.session_end import SessionEnd
from radiusd.store import sessions
from radiusd.store.backend import Backend, Op
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.reaper")


class Reaper:
    def __init__(self, config: Config, book: PasswordBook, ends: SessionEnd, store: Backend,
                 clock: Clock) -> None:
        self.config = config
        self.book = book
        self.ends = ends
        self.store = store
        self.clock = clock
        self.failures = 0
        self._throttle = LogThrottle(600.0)  # a failing pass: one traceback per 10 min

    async def run_once(self) -> int:
        """One pass; returns how many sessions and passwords it ended."""
        now = self.clock.now()
        cutoff = now - self.config.accounting.stale_after()
        # Closed in the database, once: whichever nodes reap, each acts only on the
        # sessions it closed itself (issue 12).
        rows = await sessions.close_stale_sessions(self.store, cutoff)
        ops: list[Op] = []
        for r in rows:
            ops += await self.ends.end_session(r.class_token, r.login, r.device, now,
                                               "stale_session", last_seen=r.updated_at)
        # Issue 13: past the maximum lifetime the NAS is told too; without accounting
        # a password is single-use (Rules §8).
        revoked = await self.ends.lifetime_over(now)
        grace = self.config.accounting.start_grace_seconds
        if grace:
            revoked += await self.ends.unseen_over(now, grace)
        ended = await self.book.sweep(now)
        await self.store.write(ops + ended)
        done = len(rows) + len(ops) + len(ended) - PRUNES + revoked
        if done:
            log.info("reaper: closed %d stale session(s), %d write(s)", len(rows), done)
        return done

    async def run(self) -> None:
        interval = self.config.accounting.reaper_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except Exception as e:  # keep reaping; a lost Stop must not live forever
                self.failures += 1
                if not self.store.ok:
                    # The store logs its own episode once, with the real error.
                    log.debug("reaper pass failed while the store is failing: %s", e)
                    continue
                self._throttle.log(log, logging.ERROR, "reaper", self.clock.now(),
                                   "reaper pass failed (%d so far); retrying in %.0fs",
                                   self.failures, interval, exc_info=True)
