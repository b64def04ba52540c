"""Retention (`radiusd purge`): delete what ended before a cutoff, in small steps.

What goes, once it ended before the cutoff (what is still open stays, whatever its age):
- journal entries closed before it, with their events (Rules §10);
- sessions that stopped before it;
- expired passwords, issued and expired before it (a password is issued before it
  expires: only one whose NAS reported a Stop time before its issue could differ);
- SMS sent, failed or cancelled, created before it.

Each step deletes `FEWEST` to `BATCH` rows (as many as fit in `TARGET` seconds of
holding the write lock; journal entries count with their events) in its own short
`BEGIN IMMEDIATE` transaction, copies its pages into the database off the lock, then
sleeps (at least `PAUSE`, and so that steps take `SHARE` of the time): the server's
writer, trying for the same lock every half millisecond, gets in between two steps,
so no write waits behind more than one step. While a server commits to the same file
(`WriteWatch`), steps are tiny (`TARGET_LIVE`, `SHARE_LIVE`): what its answers wait
for then is each step's checkpoint on the disk they share, and a small step's
checkpoint is short (issue 18 item 5). A step finds its rows along an index
from where the last one ended (never a scan of the table), so each costs the same on
a database of any size. Stopped half-way (Ctrl-C, a crash, the machine going down),
the database holds whole steps only and is consistent; the next run finishes the job.
Freed pages are zeroed (secure_delete).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from radiusd import journal
from radiusd.store import retention as kept
from radiusd.store.backend import SyncConnection
from radiusd.store.journal import transaction

DAY = 86400.0
BATCH = 2000  # rows in a step at most
FEWEST = 100  # rows in a step at least: tiny steps rewrite the same index pages again
#               and again (each step's pages go to the WAL and back), which costs more
TARGET = 0.01  # seconds a step may hold the write lock: fewer rows when they take longer
PAUSE = 0.05  # seconds between steps at least
SHARE = 0.25  # of the time: a step, with its checkpoint, then three times as long idle
# While a server writes to the same SQLite file (issue 18 item 5: its answers' p99
# within 2x of idle). What delays its answers then is not a step's lock but the step's
# checkpoint: the pages it copies into the database and syncs share the disk with the
# server's own fsyncs, and an answer whose commit meets a checkpoint waits about as
# long as the checkpoint takes. So, beside a server: tiny steps, whose checkpoints take
# a millisecond or two, and the disk left to the server 90 % of the time. Measured on
# 1 M sessions at 500 accounting requests/s (BENCHMARKS.md "Issue 18"): steps of 2 ms
# with 50 ms pauses, p99 3.1x idle; steps of 0.5 ms with their checkpoint 15 % of the
# time, 1.7-1.8x; 10 %, 1.4x, and the purge 2.5x slower. Nothing else is waiting when
# no server writes, so then the quiet pace above.
TARGET_LIVE = 0.0005
FEWEST_LIVE = 3
PAUSE_LIVE = 0.01
SHARE_LIVE = 0.1

# What `radiusd purge` prints for each table it sweeps after the journal.
_WHAT = {"sessions": "sessions", "passwords": "passwords", "sms_outbox": "sms messages"}
VENUE_FIGURES = "venue figures"  # `radiusd venues report`'s rows (issue 15), per venue and day

Step = Callable[[str, int], None]


class Pace:
    """How many rows the next step takes (about as many as fit in `target` seconds of
    holding the write lock, measured on the last full step, never more than `most`) and
    how long the server then has the database (at least `pause`, and so that a step
    with its checkpoint takes `share` of the time)."""

    def __init__(self, most: int, target: float, fewest: int = FEWEST,
                 pause: float = PAUSE) -> None:
        self.most, self.target = most, target
        self.fewest = min(fewest, most)
        self.rows = min(most, 256)
        self.pause, self.share = pause, SHARE
        self.quiet = (target, self.fewest, pause, SHARE)

    def server_writes(self, live: bool) -> None:
        """Whether a server wrote since the last step: tiny steps and the disk left to
        it while one does (`TARGET_LIVE`...), back to the given pace when none does."""
        target, fewest, pause, share = self.quiet
        if live:
            target, fewest = min(TARGET_LIVE, target), min(FEWEST_LIVE, self.most)
            pause, share = min(PAUSE_LIVE, pause), SHARE_LIVE
        self.target, self.fewest, self.pause, self.share = target, fewest, pause, share
        self.rows = max(self.fewest, min(self.rows, self.most))

    def took(self, seconds: float, full: bool) -> None:
        if not full:  # a short last step says nothing about the next
            return
        scale = min(2.0, max(0.5, self.target / max(seconds, 1e-6)))
        self.rows = max(self.fewest, min(self.most, int(self.rows * scale)))

    def rest(self, busy: float) -> float:
        """How long to leave the database to the server after a step and its checkpoint
        that took `busy` seconds."""
        return max(self.pause, busy * (1 / self.share - 1))


def purge(conn: SyncConnection, cutoff: float, *, dry_run: bool = False,
          batch: int = BATCH, target: float = TARGET, pause: float = PAUSE,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic,
          on_step: Step | None = None) -> dict[str, int]:
    """Remove (with `dry_run`, count) what ended before `cutoff`; rows per kind, in the
    order `radiusd purge` prints them. A step takes at most `batch` rows, fewer when
    they take longer than `target` seconds to delete; `on_step(what, rows)` is called
    after each step is committed."""
    counts = {"journal events": 0, "journal entries": 0, "sessions": 0, "passwords": 0,
              "sms messages": 0, VENUE_FIGURES: 0}
    # No fsync per step (a lost step is simply done again), pages zeroed, and each
    # step's pages checkpointed after it, off the lock (`_done`), not in COMMIT.
    with kept.purging(conn):
        pace = Pace(batch, target, pause=pause)
        watch = kept.WriteWatch(conn)
        if dry_run:  # nothing is locked: no need to go slow
            pace.rows = batch
        after: tuple[float, int] | None = None
        while True:
            pace.server_writes(watch.others_wrote())
            with _step(conn, dry_run, clock) as took:
                entries, events, after = journal.purge_step(
                    conn, cutoff, after, max(1, pace.rows // 4), dry_run=dry_run)
            pace.took(took[0], after is not None)
            counts["journal entries"] += entries  # an entry comes with a few events
            counts["journal events"] += events
            _done(on_step, "journal entries", entries, took[0], dry_run, pace, sleep, clock,
                  conn)
            if after is None:
                break
        for table in kept.TABLES:
            what = _WHAT[table]
            # A session that stopped before the cutoff may begin after it (`bounds`).
            params = kept.bounds(conn, table, cutoff)
            key: tuple[float, int] | None = None
            while True:
                pace.server_writes(watch.others_wrote())
                with _step(conn, dry_run, clock) as took:
                    n, key = kept.sweep_step(conn, table, params, pace.rows, key, dry_run)
                pace.took(took[0], key is not None)
                counts[what] += n
                _done(on_step, what, n, took[0], dry_run, pace, sleep, clock, conn)
                if key is None:
                    break
        # A day ended before the cutoff is done with (a day early, for the timezones).
        before_day = time.strftime("%Y-%m-%d", time.gmtime(cutoff - DAY))
        for table in kept.VENUE_TABLES:
            day: tuple[str, str] | None = None
            while True:
                with _step(conn, dry_run, clock) as took:
                    n, day = kept.venue_day_step(conn, table, before_day, day, dry_run)
                counts[VENUE_FIGURES] += n
                _done(on_step, VENUE_FIGURES, n, took[0], dry_run, pace, sleep, clock, conn)
                if day is None:
                    break
        if not dry_run:
            kept.checkpoint(conn)
    return counts


@contextmanager
def _step(conn: SyncConnection, dry_run: bool,
          clock: Callable[[], float]) -> Iterator[list[float]]:
    """One step's own short write transaction (none for a dry run: it only reads);
    yields where it puts how long it held the lock, to its commit."""
    took = [0.0]
    if dry_run:
        yield took
        return
    with transaction(conn):
        t0 = clock()
        yield took
    took[0] = clock() - t0


def _done(on_step: Step | None, what: str, rows: int, held: float, dry_run: bool,
          pace: Pace, sleep: Callable[[float], None], clock: Callable[[], float],
          conn: SyncConnection) -> None:
    """After a committed step: copy its pages into the database (off the lock, so the
    server's own checkpoint finds little to do), then let the server have the
    database and the disk (`Pace.rest`)."""
    if on_step is not None:
        on_step(what, rows)
    if rows and not dry_run:
        t0 = clock()
        kept.checkpoint_step(conn)
        sleep(pace.rest(held + clock() - t0))
