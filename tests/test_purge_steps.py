"""`radiusd purge` in small steps (issue 18, item 5): bounded steps, each committed on
its own with the write lock free in between; stopped half-way it leaves a consistent
database that a second run finishes; the same rows go as in one big delete."""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radiusd import journal, retention
from radiusd.journal import Person
from radiusd.store import retention as kept_retention
from radiusd.store.backend import SyncConnection
from radiusd.store.sqlite import connect_sync

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
DAY = 86400.0
CUTOFF = T0 + 20 * DAY
TABLES = ("journal", "journal_events", "journal_span", "sessions", "passwords", "sms_outbox")


def fill(path: Path, seed: int = 5) -> None:
    """History on both sides of CUTOFF, with what must stay: open sessions and
    entries, live passwords, queued SMS, rows that ended just after the cutoff."""
    db = connect_sync(str(path))
    fill_conn(db, seed)
    db.close()


def fill_conn(db: SyncConnection, seed: int = 5) -> None:
    """`fill` on any store's CLI connection (SQLite or PostgreSQL)."""
    rng = random.Random(seed)
    for i in range(40):
        opened = T0 + rng.uniform(0, 40 * DAY)
        e = journal.open_entry(db, opened, Person("Ким", "Ли", str(i % 3)), "t").entry
        journal.correct_entry(db, opened + 1, e.id, "name", "Ерлан", "t")
        if rng.random() < 0.8:
            end = opened + rng.choice([600.0, 3 * DAY])
            journal.close_entry(db, end + 1, e.id, end, "t")
    sessions, passwords, sms = [], [], []
    for i in range(150):
        begin = T0 + rng.uniform(0, 40 * DAY)
        stop = None if rng.random() < 0.1 else begin + rng.choice([60.0, 2 * DAY, -30.0])
        sessions.append((f"u{i}", f"s{i}", begin, begin, stop))
        state = "expired" if rng.random() < 0.9 else "active"
        expired = begin + rng.choice([300.0, 3 * DAY, -5.0]) if state == "expired" else None
        passwords.append((i + 1, state, begin, begin + 300, expired))
        sms.append((i + 1, i + 1, begin, rng.choice(["sent", "failed", "cancelled", "queued"])))
    db.executemany("INSERT INTO sessions (unique_id, nas, acct_session_id, started_at,"
                   " updated_at, stopped_at) VALUES (?, 'n', ?, ?, ?, ?)", sessions)
    db.executemany("INSERT INTO passwords (id, login, state, secret, language, issued_at,"
                   " unclaimed_until, expired_at) VALUES (?, '+77012345678', ?, ?, 'ru',"
                   " ?, ?, ?)", [(i, st, b"\0", b, u, e) for i, st, b, u, e in passwords])
    db.executemany("INSERT INTO sms_outbox (id, password_id, recipient, body, created_at,"
                   " state, next_attempt_at) VALUES (?, ?, '+77012345678', ?, ?, ?, 0)",
                   [(i, p, b"\0", c, st) for i, p, c, st in sms])
    for d in range(0, 40, 3):  # venues' figures per day (issue 15), across the cutoff
        day = time.strftime("%Y-%m-%d", time.gmtime(T0 + d * DAY))
        db.execute("INSERT INTO venue_days (venue, day, name, value) VALUES ('cafe', ?,"
                   " 'logins', ?)", (day, d))
        db.execute("INSERT INTO venue_numbers (venue, day, number_tag) VALUES ('cafe', ?,"
                   " ?)", (day, f"t{d}"))


def snapshot(path: Path) -> list[list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES]
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "radiusd.db"
    fill(path)
    return path


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect_sync(str(db_path))
    yield c
    c.close()


def one_big_delete(path: Path) -> dict[str, int]:
    """The rule as it was written before purge went in steps: one transaction."""
    c = connect_sync(str(path))
    c.execute("BEGIN IMMEDIATE")
    ended = [r[0] for r in c.execute(f"SELECT id FROM ({journal.CURRENT})"
                                     " WHERE ended_at IS NOT NULL AND ended_at < ?", (CUTOFF,))]
    marks = ",".join("?" * len(ended))
    counts = {
        "journal events": c.execute(f"DELETE FROM journal_events WHERE journal_id IN ({marks})",
                                    ended).rowcount,
        "journal entries": c.execute(f"DELETE FROM journal WHERE id IN ({marks})",
                                     ended).rowcount,
        "sessions": c.execute("DELETE FROM sessions WHERE stopped_at IS NOT NULL"
                              " AND stopped_at < ?", (CUTOFF,)).rowcount,
        "passwords": c.execute("DELETE FROM passwords WHERE state = 'expired' AND issued_at < ?"
                               " AND COALESCE(expired_at, issued_at) < ?",
                               (CUTOFF, CUTOFF)).rowcount,
        "sms messages": c.execute("DELETE FROM sms_outbox WHERE state IN ('sent', 'failed',"
                                  " 'cancelled') AND created_at < ?", (CUTOFF,)).rowcount,
        "venue figures": sum(
            c.execute(f"DELETE FROM {t} WHERE day < ?",
                      (time.strftime("%Y-%m-%d", time.gmtime(CUTOFF - DAY)),)).rowcount
            for t in ("venue_numbers", "venue_days", "sms_budget")),
    }
    c.execute("COMMIT")
    c.close()
    return counts


def test_steps_remove_the_same_rows_as_one_big_delete(db_path: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.db"
    shutil.copyfile(db_path, reference)
    want = one_big_delete(reference)
    assert all(want.values()), want  # every kind has something to purge
    c = connect_sync(str(db_path))
    got = retention.purge(c, CUTOFF, batch=8, pause=0)
    c.close()
    assert got == want
    assert snapshot(db_path) == snapshot(reference)
    left = sqlite3.connect(db_path)
    assert left.execute("SELECT COUNT(*) FROM sessions WHERE stopped_at IS NULL").fetchone()[0]
    assert left.execute("SELECT COUNT(*) FROM passwords WHERE state = 'active'").fetchone()[0]
    assert left.execute("SELECT COUNT(*) FROM sms_outbox WHERE state = 'queued'").fetchone()[0]


def test_each_step_is_bounded_committed_and_leaves_the_lock_free(
        conn: sqlite3.Connection, db_path: Path) -> None:
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)  # a writer that never waits
    sessions = other.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    steps: list[tuple[str, int]] = []

    def between(what: str, rows: int) -> None:
        nonlocal sessions
        steps.append((what, rows))
        assert not conn.in_transaction
        other.execute("BEGIN IMMEDIATE")  # the server's writer gets in between steps
        if what == "sessions":  # and sees what the step removed: it is committed
            sessions -= rows
            assert other.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == sessions
        other.execute("ROLLBACK")

    counts = retention.purge(conn, CUTOFF, batch=8, pause=0, on_step=between)
    other.close()
    assert counts["sessions"] > 16 and len(steps) > 10
    assert max(n for what, n in steps if what != "journal entries") <= 8
    assert max(n for what, n in steps if what == "journal entries") <= 2  # with their events


def test_a_purge_stopped_half_way_is_finished_by_running_it_again(
        db_path: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.db"
    shutil.copyfile(db_path, reference)
    c = connect_sync(str(reference))
    retention.purge(c, CUTOFF, pause=0)
    c.close()

    done = 0

    def killed(what: str, rows: int) -> None:
        nonlocal done
        done += 1
        if done == 7:
            raise KeyboardInterrupt  # Ctrl-C between two steps

    c = connect_sync(str(db_path))
    with pytest.raises(KeyboardInterrupt):
        retention.purge(c, CUTOFF, batch=8, pause=0, on_step=killed)
    c.close()
    half = snapshot(db_path)
    assert half != snapshot(reference)  # it really stopped half-way
    check = sqlite3.connect(db_path)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    assert check.execute("SELECT COUNT(*) FROM journal_span s LEFT JOIN journal j"
                         " ON j.id = s.journal_id WHERE j.id IS NULL").fetchone() == (0,)
    check.close()
    c = connect_sync(str(db_path))
    retention.purge(c, CUTOFF, batch=8, pause=0)
    c.close()
    assert snapshot(db_path) == snapshot(reference)


def test_a_failing_step_is_rolled_back_whole(conn: sqlite3.Connection, db_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(db_path)
    real = journal.purge_step

    def dies_after_deleting(*a: object, **k: object) -> object:
        real(*a, **k)  # type: ignore[arg-type]
        raise OSError("the disk went away")

    monkeypatch.setattr(journal, "purge_step", dies_after_deleting)
    with pytest.raises(OSError):
        retention.purge(conn, CUTOFF, pause=0)
    assert not conn.in_transaction
    assert snapshot(db_path) == before


def test_dry_run_counts_what_a_purge_removes_and_removes_nothing(
        db_path: Path, tmp_path: Path) -> None:
    before = snapshot(db_path)
    c = connect_sync(str(db_path))
    dry = retention.purge(c, CUTOFF, dry_run=True, batch=8, pause=0)
    c.close()
    assert snapshot(db_path) == before
    c = connect_sync(str(db_path))
    assert retention.purge(c, CUTOFF, batch=8, pause=0) == dry
    c.close()


def test_purge_steps_find_their_rows_along_indexes(conn: sqlite3.Connection) -> None:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    retention.purge(conn, CUTOFF, batch=8, pause=0)
    conn.set_trace_callback(None)
    steps = {row[3] for sql in statements if sql.startswith("SELECT")
             for row in conn.execute("EXPLAIN QUERY PLAN " + sql)}
    assert not [s for s in steps if s.startswith("SCAN")], steps
    for index in ("journal_span_started", "sessions_begin", "passwords_issued",
                  "sms_created", "venue_days_day", "venue_numbers_day", "sms_budget_day"):
        assert any(index in s for s in steps), index


def test_steps_shrink_when_they_hold_the_lock_too_long_and_grow_back() -> None:
    pace = retention.Pace(most=2000, target=0.01)
    first = pace.rows
    pace.took(0.04, full=True)  # four times too long: halved (at most)
    assert pace.rows == first // 2
    pace.took(0.5, full=False)  # a short last step: nothing learnt
    assert pace.rows == first // 2
    for _ in range(20):
        pace.took(0.001, full=True)
    assert pace.rows == 2000  # fast steps grow to the bound, never past it
    for _ in range(40):
        pace.took(1.0, full=True)
    assert pace.rows == retention.FEWEST  # never so few that each step rewrites the same pages


def test_after_each_step_the_server_gets_three_times_as_long(conn: sqlite3.Connection) -> None:
    ticks = iter(range(10_000))
    clock = lambda: next(ticks) * 0.02  # noqa: E731 - every reading 20 ms later
    slept: list[float] = []
    retention.purge(conn, CUTOFF, batch=8, pause=0.05, sleep=slept.append, clock=clock)
    # Each step held the lock one reading (20 ms) and checkpointed one more: 40 ms
    # busy, so 120 ms left to the server (more than the 50 ms floor).
    assert slept and all(s == pytest.approx(0.12) for s in slept)


async def test_the_servers_writer_tries_for_a_held_lock_every_half_millisecond(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 5: while another process holds the write lock (a purge step), the
    server's group commit tries again every `LOCK_POLL_SECONDS`, not with SQLite's busy
    handler (1, 2, 5, 10... ms sleeps), and commits as soon as it is free."""
    from radiusd.store import sqlite as sqlite_store
    from radiusd.store.sqlite import Store

    path = str(tmp_path / "db")
    store = Store(path)
    await store.open()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # in the store's writer thread
        slept.append(seconds)
        if len(slept) == 5:
            holder.execute("COMMIT")  # the step ends

    monkeypatch.setattr(sqlite_store, "_sleep", sleep)
    try:
        await store.write([("CREATE TABLE t (n INTEGER)", ())])
        holder.execute("BEGIN IMMEDIATE")
        await store.write([("INSERT INTO t (n) VALUES (1)", ())])
        assert slept == [sqlite_store.LOCK_POLL_SECONDS] * 5
        assert [tuple(r) for r in await store.fetchall("SELECT n FROM t")] == [(1,)]
        # The writer never waits in SQLite's busy handler: it has no busy timeout.
        (busy,) = await store.run([("PRAGMA busy_timeout", ())])
        assert [tuple(r) for r in busy] == [(0,)]
    finally:
        holder.close()
        await store.close()


def test_steps_hold_the_lock_for_less_while_a_server_writes(db_path: Path) -> None:
    """Issue 18 item 5: when another connection (a server) committed since the last
    step, the next one aims at `TARGET_LIVE` and may be as small as `FEWEST_LIVE`, and
    leaves the disk to the server `1 - SHARE_LIVE` of the time (its checkpoint is what
    the server's answers wait behind); when none did, back to `TARGET` and `SHARE`. A
    step's size follows what it is aiming at."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    server = sqlite3.connect(db_path, isolation_level=None)
    try:
        watch = kept_retention.WriteWatch(conn)
        assert not watch.others_wrote()
        server.execute("CREATE TABLE served (n INTEGER)")
        assert watch.others_wrote()
        assert not watch.others_wrote()  # nothing since
        conn.execute("INSERT INTO served (n) VALUES (1)")
        assert not watch.others_wrote()  # our own commits do not count
    finally:
        server.close()
        conn.close()
    pace = retention.Pace(most=2000, target=retention.TARGET)
    assert pace.rest(0.04) == pytest.approx(0.12)  # quiet: three times as long...
    assert pace.rest(0.001) == retention.PAUSE  # ...and never less than the pause
    pace.server_writes(True)
    assert (pace.target, pace.fewest) == (retention.TARGET_LIVE, retention.FEWEST_LIVE)
    assert retention.SHARE_LIVE < retention.SHARE
    assert pace.rest(0.004) == pytest.approx(0.004 * (1 / retention.SHARE_LIVE - 1))
    assert pace.rest(0.0) == retention.PAUSE_LIVE
    for _ in range(40):
        pace.took(1.0, full=True)
    assert pace.rows == retention.FEWEST_LIVE
    pace.server_writes(False)
    assert (pace.target, pace.fewest, pace.rows) == (retention.TARGET, retention.FEWEST,
                                                     retention.FEWEST)
    assert pace.rest(0.04) == pytest.approx(0.12)


def test_venue_figures_go_by_day_and_venue_before_the_cutoff(tmp_path: Path) -> None:
    """Issue 15's per-venue, per-day rows (`radiusd venues report`, the daily budget):
    a day a day before the cutoff's goes, one venue's day per step; later ones stay."""
    conn = connect_sync(str(tmp_path / "venues.db"))
    old = time.strftime("%Y-%m-%d", time.gmtime(CUTOFF - 3 * DAY))
    edge = time.strftime("%Y-%m-%d", time.gmtime(CUTOFF - DAY))
    for day in (old, edge):
        for venue in ("cafe", "airport"):
            conn.execute("INSERT INTO venue_days VALUES (?, ?, 'logins', 3)", (venue, day))
            conn.execute("INSERT INTO sms_budget VALUES (?, ?, 5)", (venue, day))
            for tag in ("t1", "t2"):
                conn.execute("INSERT INTO venue_numbers VALUES (?, ?, ?)", (venue, day, tag))
    steps: list[tuple[str, int]] = []
    assert retention.purge(conn, CUTOFF, dry_run=True)["venue figures"] == 8
    counts = retention.purge(conn, CUTOFF, sleep=lambda s: None,
                             on_step=lambda what, n: steps.append((what, n)))
    assert counts["venue figures"] == 8
    assert [n for what, n in steps if what == "venue figures" and n] == [2, 2, 1, 1, 1, 1]
    for table in ("venue_numbers", "venue_days", "sms_budget"):
        assert {r[0] for r in conn.execute(f"SELECT DISTINCT day FROM {table}")} == {edge}
    conn.close()
