"""Exports stream (issue 18, item 4): rows are written as they are read, byte for byte
what a whole-list export wrote, and a time window is read along indexes."""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from radiusd import export, journal
from radiusd.cli import main
from radiusd.journal import Entry, Person
from radiusd.store.migrations import MIGRATIONS, _statements, migrate
from radiusd.store.sqlite import connect_sync

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
DAY = 86400.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect_sync(str(tmp_path / "radiusd.db"))
    yield conn
    conn.close()


def session_row(i: int) -> dict[str, Any]:
    return {"id": i, "login": f"+7701{i:07d}", "phone": f"+7701{i:07d}",
            "device": "AA-BB-CC-DD-EE-FF", "nas": "кафе \"Орталық\", 2", "nas_address": None,
            "framed_ip": "10.5.0.2", "started_at": "2026-01-05T14:30:00+05:00",
            "stopped_at": None, "session_time": i * 60, "input_octets": 2**40 + i,
            "output_octets": 0, "terminate_cause": "User-Request"}


def whole(rows: list[dict[str, Any]], fmt: str, bom: bool) -> str:
    """What exports wrote before they streamed: one string from the whole list."""
    if fmt == "json":
        items = [{c: r[c] for c in export.SESSION_COLUMNS} for r in rows]
        return json.dumps(items, ensure_ascii=False, indent=2) + "\n"
    buf = io.StringIO()
    if bom:
        buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(export.SESSION_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in export.SESSION_COLUMNS])
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("count", [0, 1, 3, 3000])
def test_streamed_export_is_byte_identical_to_the_whole_list(fmt: str, count: int) -> None:
    rows = [session_row(i) for i in range(count)]
    pieces = list(export.chunks(iter(rows), export.SESSION_COLUMNS, fmt, bom=count == 3))
    assert "".join(pieces) == whole(rows, fmt, bom=count == 3)
    if count == 3000:  # 3000 rows come out in several pieces, not one
        assert len(pieces) > 3


class MaterialisingIsAnError:
    """Rows that refuse to be read far ahead of what the consumer has handed on: a
    list() of them, or a render of everything before writing, fails."""

    def __init__(self, rows: int, ahead: int, handed_on: Any) -> None:
        self.rows, self.ahead, self.handed_on = rows, ahead, handed_on

    def __iter__(self) -> Iterator[dict[str, Any]]:
        seen = 0
        for i in range(self.rows):
            if i and i % self.ahead == 0:
                now = self.handed_on()
                assert now > seen, f"{i} rows read and nothing more written"
                seen = now
            yield session_row(i)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_pieces_come_out_while_rows_are_still_being_read(fmt: str) -> None:
    out: list[str] = []
    rows = MaterialisingIsAnError(20_000, 2000, lambda: len(out))
    for piece in export.chunks(iter(rows), export.SESSION_COLUMNS, fmt):
        out.append(piece)
    text = "".join(out)
    if fmt == "json":
        assert len(json.loads(text)) == 20_000
    else:
        assert text.count("\r\n") == 20_001


def test_sessions_export_writes_the_file_as_it_reads(
        tmp_path: Path, db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "radiusd.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "radiusd.db"}"\n')
    target = tmp_path / "out.csv"

    def written() -> int:
        tmp = list(tmp_path.glob(".out.csv.*.tmp"))
        return tmp[0].stat().st_size if tmp else 0

    rows = MaterialisingIsAnError(20_000, 2000, written)
    monkeypatch.setattr(export, "session_rows", lambda *a, **k: iter(rows))
    assert main(["sessions", "export", "--format", "csv", "-o", str(target),
                 "-c", str(config)]) == 0
    assert target.read_bytes().count(b"\r\n") == 20_001
    assert not list(tmp_path.glob(".out.csv.*.tmp"))


def test_journal_export_writes_stdout_as_it_reads(
        tmp_path: Path, db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "radiusd.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "radiusd.db"}"\n')
    written: list[int] = []

    class Stdout:
        class buffer:  # stands in for sys.stdout.buffer
            @staticmethod
            def write(b: bytes) -> int:
                written.append(len(b))
                return len(b)

            @staticmethod
            def flush() -> None:
                pass

    def entries(*a: Any, **k: Any) -> Iterator[Entry]:
        for i in range(1, 6001):
            if i % 1000 == 0:
                assert len(written) >= i // 2, "entries read ahead of what was written"
            yield Entry(i, "Ким", "Ли", "", "1", "", "", T0 + i, None, T0 + i, None, 0)

    monkeypatch.setattr(journal, "iter_entries", entries)
    monkeypatch.setattr("sys.stdout", Stdout)
    assert main(["journal", "export", "--format", "json", "-c", str(config)]) == 0
    assert len(written) > 6000  # an item at a time


def test_session_rows_are_read_a_chunk_per_query(db: sqlite3.Connection) -> None:
    db.executemany(
        "INSERT INTO sessions (unique_id, login, nas, acct_session_id, started_at, updated_at,"
        " stopped_at) VALUES (?, '+77012345678', 'n', ?, ?, ?, ?)",
        [(f"u{i}", f"s{i}", T0 + i, T0 + i, T0 + i + 30) for i in range(35)])
    selects: list[str] = []
    db.set_trace_callback(lambda sql: selects.append(sql) if sql.startswith("SELECT") else None)
    rows = export.session_rows(db, "KZ", None, None, None, chunk=10)
    first = next(rows)
    assert first["id"] == 1 and len(selects) == 1
    assert [r["id"] for r in rows] == list(range(2, 36))
    assert len(selects) == 4  # 10 + 10 + 10 + 5


# --- a time window: from the indexes, the same rows ----------------------------------------

def fill_sessions(db: sqlite3.Connection, rng: random.Random, n: int) -> None:
    rows = []
    for i in range(n):
        begin = T0 + rng.uniform(0, 30 * DAY)
        length = rng.choice([60.0, 3600.0, 5 * DAY, -120.0, rng.uniform(0, 4 * 3600)])
        stopped = None if rng.random() < 0.1 else begin + length
        started = None if rng.random() < 0.05 else begin  # then updated_at stands in
        rows.append((f"u{i}", f"+7701{i % 50:07d}", f"s{i}", started, begin, stopped))
    db.executemany("INSERT INTO sessions (unique_id, login, nas, acct_session_id, started_at,"
                   " updated_at, stopped_at) VALUES (?, ?, 'n', ?, ?, ?, ?)", rows)


def online(begin: float, stopped: float | None, since: float | None,
           until: float | None) -> bool:
    """The rule exports state: online at some moment of [since, until)."""
    return ((since is None or stopped is None or stopped >= since)
            and (until is None or begin < until))


def windows(rng: random.Random) -> list[tuple[float | None, float | None]]:
    out: list[tuple[float | None, float | None]] = [(None, None)]
    for _ in range(12):
        since = T0 + rng.uniform(-DAY, 31 * DAY)
        out += [(since, since + DAY), (since, None), (None, since)]
    return out


def test_session_windows_hold_exactly_the_sessions_online_in_them(
        db: sqlite3.Connection) -> None:
    rng = random.Random(18)
    fill_sessions(db, rng, 600)
    everything = db.execute("SELECT id, COALESCE(started_at, updated_at), stopped_at"
                            " FROM sessions").fetchall()
    for since, until in windows(rng):
        want = sorted((b, i) for i, b, s in everything if online(b, s, since, until))
        got = [r["id"] for r in export.session_rows(db, "KZ", since, until, None, chunk=7)]
        assert got == [i for _, i in want], (since, until)


def fill_journal(db: sqlite3.Connection, rng: random.Random, n: int) -> None:
    """Entries whose times moved: a start corrected to before the entry was recorded,
    an end before that, ends corrected, long entries and open ones."""
    for i in range(n):
        opened = T0 + rng.uniform(0, 30 * DAY)
        e = journal.open_entry(db, opened, Person("Ким", "Ли", str(i % 4)), "t").entry
        start = opened
        if rng.random() < 0.2:
            start = opened - rng.uniform(0, 3 * DAY)
            journal.correct_entry(db, opened + 60, e.id, "started_at", start, "t")
        if rng.random() < 0.85:
            end = max(start, opened + rng.choice([-DAY, 600.0, 4 * 3600.0, 6 * DAY]))
            journal.close_entry(db, end + 60, e.id, end, "t")
            if rng.random() < 0.2:
                later = max(start, end - rng.uniform(0, 300))
                if later != end:
                    journal.correct_entry(db, end + 120, e.id, "ended_at", later, "t")


def test_journal_windows_hold_exactly_the_entries_online_in_them(
        db: sqlite3.Connection) -> None:
    rng = random.Random(10)
    fill_journal(db, rng, 150)
    everything = db.execute(f"SELECT id, started_at, ended_at, computer FROM"
                            f" ({journal.CURRENT})").fetchall()
    computer = {i: c for i, _, _, c in everything}
    for since, until in windows(rng):
        want = sorted((b, i) for i, b, e, _ in everything if online(b, e, since, until))
        got = [e.id for e in journal.iter_entries(db, since=since, until=until, chunk=7)]
        assert got == [i for _, i in want], (since, until)
        got = [e.id for e in journal.iter_entries(db, since=since, until=until, computer="2")]
        assert got == [i for _, i in want if computer[i] == "2"]
    open_now = sorted((b, i) for i, b, e, _ in everything if e is None)
    assert [e.id for e in journal.iter_entries(db, open_only=True, chunk=7)] == [
        i for _, i in open_now]


def test_a_one_day_export_is_read_along_indexes(db: sqlite3.Connection) -> None:
    rng = random.Random(4)
    fill_sessions(db, rng, 300)
    fill_journal(db, rng, 60)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    since = T0 + 10 * DAY
    assert list(export.session_rows(db, "KZ", since, since + DAY, None))
    assert list(journal.iter_entries(db, since=since, until=since + DAY))
    db.set_trace_callback(None)
    steps = [row[3] for sql in statements if sql.startswith("SELECT")
             for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
    scans = [s for s in steps if s.startswith("SCAN")]
    assert any("sessions_begin" in s for s in steps)
    assert any("journal_span_started" in s for s in steps)
    # No history table read from end to end; the small index of open sessions may be.
    assert set(scans) <= {"SCAN sessions USING INDEX sessions_open"}, scans


def test_migration_4_derives_each_entrys_current_times(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, script in enumerate(MIGRATIONS[:3], start=1):
        for stmt in _statements(script):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.executemany("INSERT INTO journal (id, surname, name, computer, opened_at, started_at)"
                     " VALUES (?, 'Ким', 'Ли', '1', ?, ?)", [(1, T0, T0), (2, T0, T0), (3, T0, T0)])
    conn.executemany(
        "INSERT INTO journal_events (journal_id, at, actor, event, detail)"
        " VALUES (?, 0, 't', ?, ?)",
        [(1, "close", '{"field": "ended_at", "value": 1767229200.0}'),
         (2, "start", '{"field": "started_at", "value": 1767226000.0}'),
         (2, "close", '{"field": "ended_at", "value": 1767227000.0}'),
         (2, "correct", '{"field": "ended_at", "value": 1767228000.0, "reason": "x"}'),
         (3, "correct", '{"field": "surname", "value": "Пак"}')])
    assert migrate(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT * FROM journal_span ORDER BY journal_id").fetchall() == [
        (1, T0, 1767229200.0), (2, 1767226000.0, 1767228000.0), (3, T0, None)]
    assert [e.id for e in journal.iter_entries(conn, since=1767228500.0)] == [1, 3]
