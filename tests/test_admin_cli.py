"""The admin CLI end to end: `python -m radiusd journal|sessions|purge` in a subprocess
against a real database, as the venue owner runs it (also while `radiusd serve` runs)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from queue import Empty, Queue

import pytest

from radiusd import journal
from radiusd.cli import main
from radiusd.config import DatabaseConfig
from radiusd.journal import Person
from radiusd.sealing import load_key_file
from radiusd.store.backend import SyncConnection, connect_sync
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import DATABASE_URL_ENV

PYTHON = sys.executable
ENV = {**os.environ, "TZ": "Asia/Almaty", "PYTHONUTF8": "1"}  # UTC+05:00 all year
KAZAKH = "Ә Ғ Қ Ң Ө Ұ Ү Һ І ә ғ қ ң ө ұ ү һ і"
HOUR = 3600.0


class Cli:
    def __init__(self, tmp: Path, **journal_keys: object) -> None:
        self.tmp = tmp
        self.db = tmp / "radiusd.db"
        self.config = tmp / "radiusd.toml"
        # On PostgreSQL when the suite runs this module on both stores (conftest).
        self.url = os.environ.get(DATABASE_URL_ENV)
        database = f'url = "{self.url}"' if self.url else f'path = "{self.db}"'
        lines = [
            "[server]", 'auth_listen = ["127.0.0.1:0"]', 'acct_listen = ["127.0.0.1:0"]',
            "[database]", database,
            "[otp]", f'key_file = "{tmp / "radiusd.key"}"',
            "[sms]", 'provider = "file"', "[sms.file]", f'path = "{tmp / "outbox.jsonl"}"',
            "[journal]", *(f"{k} = {json.dumps(v)}" for k, v in journal_keys.items()),
        ]
        self.config.write_text("\n".join(lines) + "\n")
        # What `radiusd serve` (or `radiusd db init`) makes at its first start.
        if not self.url:
            connect_sync(DatabaseConfig(path=str(self.db))).close()
        load_key_file(str(tmp / "radiusd.key"))

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [PYTHON, "-m", "radiusd", *args, "-c", str(self.config)],
            capture_output=True, text=True, encoding="utf-8", env=ENV, timeout=30,
        )
        if ok:
            assert p.returncode == 0, p.stderr
        return p

    def connect(self) -> SyncConnection:
        return connect_sync(DatabaseConfig(url=self.url) if self.url
                            else DatabaseConfig(path=str(self.db)))


def in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`radiusd ARGS` through `radiusd.cli.main` in this process: the same code path as
    the command without paying an interpreter start (the suite stays fast)."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def iso_to_unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def snapshot(c: Cli) -> list[object]:
    conn = c.connect()
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                for t in ("journal", "journal_events", "passwords", "sessions")]
    finally:
        conn.close()


def test_open_list_close_export(cli: Cli) -> None:
    opened = cli("journal", "open", "--surname", "Әбілқасымов", "--name", "Нұрлан",
                 "--patronymic", "Серікұлы", "--computer", "3")
    assert opened.stdout == "1\n"
    if cli.url is None:  # the SQLite file holds personal data (Rules §10)
        assert stat.S_IMODE(cli.db.stat().st_mode) == 0o600
    listed = cli("journal", "list").stdout
    assert "Әбілқасымов Нұрлан Серікұлы" in listed and "open" in listed
    assert cli("journal", "list", "--open", "--computer", "4").stdout == "no entries\n"
    closed = cli("journal", "close", "1")
    assert closed.stdout.startswith("entry 1 closed at ")
    assert cli("journal", "list", "--open").stdout == "no entries\n"
    [row] = list(csv.DictReader(io.StringIO(cli("journal", "export", "--format", "csv").stdout)))
    assert (row["id"], row["surname"], row["computer"]) == ("1", "Әбілқасымов", "3")
    assert row["started_at"].endswith("+05:00") and row["ended_at"].endswith("+05:00")
    assert iso_to_unix(row["started_at"]) <= iso_to_unix(row["ended_at"])


def test_kazakh_and_russian_letters_round_trip(cli: Cli) -> None:
    cli("journal", "open", "--surname", KAZAKH, "--name", "Ёжиков Щ", "--computer", "Қ-1")
    text = cli("journal", "export", "--format", "json").stdout
    [item] = json.loads(text)
    assert (item["surname"], item["name"], item["computer"]) == (KAZAKH, "Ёжиков Щ", "Қ-1")
    assert KAZAKH in text  # written as letters, not \\u escapes
    [row] = list(csv.DictReader(io.StringIO(cli("journal", "export", "--format", "csv").stdout)))
    assert row["surname"] == KAZAKH
    assert KAZAKH in cli("journal", "list").stdout


def _fill(c: Cli, now: float) -> None:
    conn = c.connect()
    names = [("O'Brien, \"Jr\"", "Иван", ""), (KAZAKH, "Нұрлан", "Серікұлы"),
             ("Петров", "Пётр", "Петрович")]
    for i, (surname, name, patronymic) in enumerate(names):
        e = journal.open_entry(conn, now - 10 * HOUR + i * HOUR,
                               Person(surname, name, f"PC {i}, hall", patronymic), "test").entry
        if i < 2:
            journal.close_entry(conn, now, e.id, now - 9 * HOUR + i * HOUR, "test")
    journal.correct_entry(conn, now, 1, "name", "Ян", "test", reason="typo")
    conn.close()


def test_export_round_trip_csv_and_json(cli: Cli) -> None:
    now = time.time()
    _fill(cli, now)
    as_csv = list(csv.DictReader(io.StringIO(
        cli("journal", "export", "--format", "csv").stdout, newline="")))
    as_json = json.loads(cli("journal", "export", "--format", "json").stdout)
    conn = cli.connect()
    entries = journal.list_entries(conn)
    conn.close()
    assert len(as_csv) == len(as_json) == len(entries) == 3
    for row, item, e in zip(as_csv, as_json, entries, strict=True):
        for col in ("surname", "name", "patronymic", "computer", "document_type"):
            assert row[col] == item[col] == getattr(e, col)
        assert int(row["id"]) == item["id"] == e.id
        assert iso_to_unix(row["started_at"]) == iso_to_unix(item["started_at"]) == int(
            e.started_at)
        if e.ended_at is None:
            assert row["ended_at"] == "" and item["ended_at"] is None
        else:
            assert iso_to_unix(row["ended_at"]) == iso_to_unix(item["ended_at"]) == int(e.ended_at)
    assert as_json[0]["name"] == "Ян" and as_json[0]["corrections"] == 1  # corrected value


def test_export_filters(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    # Yesterday 22:00 local: the entries (10 to 8 hours before) fall on one day whatever
    # the hour the test runs (from time.time() they straddled midnight from 08:00 to
    # 10:00 local).
    now = datetime.now().replace(hour=22, minute=0, second=0, microsecond=0).timestamp() \
        - 24 * HOUR
    _fill(cli, now)

    def ids(*args: str) -> list[int]:
        code, out, err = in_process(
            ["journal", "export", "--format", "json", *args, "-c", str(cli.config)], capsys)
        assert code == 0, err
        return [item["id"] for item in json.loads(out)]

    day = datetime.fromtimestamp(now - 10 * HOUR).date().isoformat()
    assert ids("--computer", "PC 1, hall") == [2]
    since = datetime.fromtimestamp(now - 8.5 * HOUR).astimezone().isoformat()
    assert ids("--since", since) == [2, 3]
    assert ids("--until", "2000-01-01") == []
    assert ids("--since", day, "--until", day) == [e for e in ids() if e]  # a date: whole day
    assert ids("--since", "2000-01-01", "--until", "2000-01-02") == []


def test_export_to_a_file_is_atomic_and_private(cli: Cli, tmp_path: Path) -> None:
    _fill(cli, time.time())
    out = tmp_path / "journal.csv"
    assert cli("journal", "export", "--format", "csv", "--bom", "-o", str(out)).stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # --bom: Excel then reads the file as UTF-8.
    assert out.read_text(encoding="utf-8").startswith("\ufeffid,surname,name,patronymic,computer,")
    # A failure (here: the target is a directory) leaves no file behind, not even a temp.
    target = tmp_path / "adir"
    target.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    p = cli("journal", "export", "--format", "json", "-o", str(target), ok=False)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list(target.iterdir()) == []
    p = cli("journal", "export", "--format", "json", "-o", str(tmp_path / "no" / "x.json"),
            ok=False)
    assert p.returncode == 1 and "-o" in p.stderr


def test_correct_and_show_history(cli: Cli) -> None:
    cli("journal", "open", "--surname", "Абилкасымов", "--name", "Нурлан", "--computer", "3")
    p = cli("journal", "correct", "1", "--field", "surname", "--value", "Әбілқасымов",
            "--reason", "typed without Kazakh letters")
    assert "Әбілқасымов" in p.stdout
    shown = cli("journal", "show", "1").stdout
    # The history shows what the correction replaced, and why.
    assert "surname = Әбілқасымов (was Абилкасымов) (typed without Kazakh letters)" in shown
    assert re.search(r"open\s+by \S+", shown)
    assert "1*" in cli("journal", "list").stdout
    assert json.loads(cli("journal", "export", "--format", "json").stdout)[0]["surname"] == (
        "Әбілқасымов")


def test_close_at_a_given_time_and_correct_it(cli: Cli) -> None:
    cli("journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "1")
    conn = cli.connect()
    started = journal.get_entry(conn, 1).started_at
    conn.close()
    at = datetime.fromtimestamp(started + 1).astimezone().isoformat(timespec="seconds")
    cli("journal", "close", "1", "--at", at)
    later = datetime.fromtimestamp(started + 2).astimezone().isoformat(timespec="seconds")
    cli("journal", "correct", "1", "--field", "ended_at", "--value", later)
    [item] = json.loads(cli("journal", "export", "--format", "json").stdout)
    assert iso_to_unix(item["ended_at"]) == iso_to_unix(later)


def test_document_number_is_kept_only_when_configured(tmp_path: Path) -> None:
    c = Cli(tmp_path, store_document_number=True)
    p = c("journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "1",
          "--document-type", "passport", "--document-number", "N0123456")
    assert "N0123456" not in p.stdout + p.stderr  # never echoed
    [item] = json.loads(c("journal", "export", "--format", "json").stdout)
    assert (item["document_type"], item["document_number"]) == ("passport", "N0123456")


def test_vouchers_are_printed_and_stored_sealed(tmp_path: Path) -> None:
    c = Cli(tmp_path, vouchers=True)
    out = c("journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "1").stdout
    entry_id, login_line, password_line = out.splitlines()
    login = login_line.removeprefix("login: ")
    password = password_line.removeprefix("password: ")
    assert entry_id == "1" and re.fullmatch(r"v\d{6}", login) and re.fullmatch(r"\d{6}", password)
    conn = c.connect()
    kind, state, secret, jid = conn.execute(
        "SELECT kind, state, secret, journal_id FROM passwords WHERE login = ?", (login,)
    ).fetchone()
    conn.close()
    assert (kind, state, jid) == ("voucher", "issued", 1) and password.encode() not in secret
    assert stat.S_IMODE((tmp_path / "radiusd.key").stat().st_mode) == 0o600


# --- bad input: a non-zero exit, one line that says what to type, nothing changed ------

BAD = [
    (["journal", "open", "--name", "Ли", "--computer", "1"], "--surname is missing"),
    (["journal", "open", "--surname", "Ким", "--computer", "1"], "--name is missing"),
    (["journal", "open", "--surname", "Ким", "--name", "Ли"], "--computer is missing"),
    (["journal", "open", "--surname", "", "--name", "Ли", "--computer", "1"], "--surname is empty"),
    (["journal", "open", "--surname", "Ким", "--name", " ", "--computer", "1"], "--name is empty"),
    (["journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", ""],
     "--computer is empty"),
    (["journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "1",
      "--document-type", "passport", "--document-number", "N1"], "store_document_number"),
    (["journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "1",
      "--document-number", "N1"], "--document-type"),
    (["journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "1", "--colour", "x"],
     "unrecognized arguments: --colour"),
    (["journal", "close", "99"], "no journal entry 99"),
    (["journal", "close", "two"], "not an entry id"),
    (["journal", "close"], "required: ID"),
    (["journal", "close", "2"], "already closed"),
    (["journal", "close", "1", "--at", "2000-01-01T10:00"], "end before start"),
    (["journal", "close", "1", "--at", "half past two"], "cannot read 'half past two'"),
    (["journal", "close", "1", "--at", "2999-01-01"], "in the future"),
    (["journal", "list", "--since", "last week"], "--since: cannot read"),
    (["journal", "export", "--format", "csv", "--since", "2026-02-01", "--until", "2026-01-01"],
     "--until is not after --since"),
    (["journal", "export"], "--format csv"),
    (["journal", "export", "--format", "xml"], "invalid choice: 'xml'"),
    (["journal", "correct", "1", "--field", "surname"], "say what to correct"),
    (["journal", "correct", "1", "--field", "opened_at", "--value", "x"], "cannot be corrected"),
    (["journal", "correct", "1", "--field", "ended_at", "--value", "2026-01-01"], "still open"),
    (["journal", "correct", "1", "--field", "name", "--value", ""], "--name is empty"),
    (["journal", "correct", "9", "--field", "name", "--value", "X"], "no journal entry 9"),
    (["journal", "show", "9"], "no journal entry 9"),
    (["sessions", "export", "--format", "csv", "--phone", "call me"], "not a phone number"),
    (["purge", "--older-than", "soon"], "whole number of days"),
    (["purge"], "--older-than DAYS"),
]


@pytest.fixture
def filled(cli: Cli) -> Cli:
    conn = cli.connect()
    now = time.time()
    journal.open_entry(conn, now - HOUR, Person("Ким", "Ли", "1"), "test")
    e = journal.open_entry(conn, now - HOUR, Person("Пак", "Ян", "2"), "test").entry
    journal.close_entry(conn, now, e.id, now, "test")
    conn.close()
    return cli


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_refused_in_one_line(
    filled: Cli, args: list[str], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """In process (see `in_process`); a few of them run as a subprocess below."""
    before = snapshot(filled)
    code, out, err = in_process([*args, "-c", str(filled.config)], capsys)
    assert code != 0
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert snapshot(filled) == before


@pytest.mark.parametrize(("args", "message"), [BAD[0], BAD[12], BAD[14], BAD[19]])
def test_bad_input_from_the_shell(filled: Cli, args: list[str], message: str) -> None:
    before = snapshot(filled)
    p = filled(*args, ok=False)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and message in p.stderr
    assert snapshot(filled) == before


@pytest.mark.parametrize("content", [None, "[journal\n", "[journal]\nretention_days = -1\n",
                                     "dir"])
def test_unreadable_config_is_refused(
    tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "radiusd.toml"
    if content == "dir":
        config.mkdir()
    elif content is not None:
        config.write_text(content)
    if content is None:  # one of them from the shell
        p = subprocess.run([PYTHON, "-m", "radiusd", "journal", "list", "-c", str(config)],
                           capture_output=True, text=True, env=ENV, timeout=30)
        code, err = p.returncode, p.stderr
    else:
        code, _, err = in_process(["journal", "list", "-c", str(config)], capsys)
    assert code == 1
    assert len(err.splitlines()) == 1 and str(config) in err
    assert not (tmp_path / "radiusd.db").exists()


@pytest.mark.sqlite_only  # `radiusd purge` refuses PostgreSQL so far (test_postgres)
def test_purge_respects_retention_and_counts_rows(tmp_path: Path) -> None:
    c = Cli(tmp_path, retention_days=30)
    now = time.time()
    conn = c.connect()
    old = journal.open_entry(conn, now - 40 * 86400, Person("Ким", "Ли", "1"), "t").entry
    journal.close_entry(conn, now, old.id, now - 40 * 86400 + HOUR, "t")
    journal.open_entry(conn, now - 40 * 86400, Person("Пак", "Ян", "2"), "t")  # still open
    conn.execute(
        "INSERT INTO sessions (unique_id, login, nas, acct_session_id, started_at,"
        " updated_at, stopped_at) VALUES ('a', '+77012345678', 'n', 's', ?, ?, ?),"
        " ('b', '+77012345678', 'n', 's2', ?, ?, NULL)",
        (now - 35 * 86400, now - 35 * 86400, now - 35 * 86400, now - 35 * 86400, now))
    old_t = now - 35 * 86400
    conn.execute(
        "INSERT INTO passwords (id, login, state, secret, language, issued_at, unclaimed_until,"
        " expired_at) VALUES (1, '+77012345678', 'expired', x'00', 'ru', ?, ?, ?),"
        " (2, '+77012345678', 'active', x'00', 'ru', ?, ?, NULL)",
        (old_t, old_t, old_t, old_t, old_t))
    conn.execute(
        "INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state,"
        " next_attempt_at) VALUES (1, 1, '+77012345678', x'00', ?, 'sent', 0),"
        " (2, 2, '+77012345678', x'00', ?, 'queued', 0)", (old_t, old_t))
    conn.close()
    before = snapshot(c)
    p = c("purge", "--older-than", "7", ok=False)
    assert p.returncode == 2 and "retention_days = 30" in p.stderr
    assert "--older-than 30" in p.stderr and len(p.stderr.splitlines()) == 1
    dry = c("purge", "--dry-run").stdout
    assert "would remove 6 rows" in dry  # entry + 2 events, session, password, SMS
    assert snapshot(c) == before
    out = c("purge").stdout  # --older-than defaults to retention_days
    assert "journal entries: 1\n" in out and "journal events: 2\n" in out
    assert "sessions: 1\n" in out and "passwords: 1\n" in out and "sms messages: 1\n" in out
    assert "removed 6 rows" in out
    conn = c.connect()
    assert [e.surname for e in journal.list_entries(conn)] == ["Пак"]
    assert conn.execute("SELECT unique_id FROM sessions").fetchall() == [("b",)]
    assert conn.execute("SELECT id FROM passwords").fetchall() == [(2,)]
    assert conn.execute("SELECT id FROM sms_outbox").fetchall() == [(2,)]
    conn.close()


# --- while the server runs ---------------------------------------------------------

@pytest.fixture
def running(cli: Cli) -> Iterator[tuple[Cli, int]]:
    proc = subprocess.Popen([PYTHON, "-m", "radiusd", "serve", "-c", str(cli.config)],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    lines: Queue[str] = Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    acct_port = None
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except Empty:
                assert proc.poll() is None, "radiusd serve exited"
                continue
            if m := re.search(r"listening for acct on 127\.0\.0\.1:(\d+)/udp", line):
                acct_port = int(m.group(1))
            if "radiusd ready" in line:
                break
        assert acct_port, "radiusd serve did not start"
        yield cli, acct_port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_admin_writes_while_the_server_runs(running: tuple[Cli, int]) -> None:
    cli, acct_port = running
    nas = SimulatedNAS(auth_address=("127.0.0.1", acct_port - 0),
                       acct_address=("127.0.0.1", acct_port), timeout=2, retries=2)

    async def accounting(i: int) -> None:
        sid = nas.new_session_id()
        user = "8 701 234 56 78" if i % 2 else "+77019876543"
        mac = f"AA-BB-CC-DD-EE-{i:02X}"
        assert (await nas.send(nas.accounting_request("Start", user=user, session_id=sid,
                                                      mac=mac), acct=True)).code == 5
        assert (await nas.send(nas.accounting_request(
            "Stop", user=user, session_id=sid, mac=mac, Acct_Session_Time=60,
            Acct_Input_Octets=1000 + i, Acct_Output_Octets=2000, Acct_Terminate_Cause=1),
            acct=True)).code == 5

    async def admin(i: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "radiusd", "journal", "open", "--surname", f"Қасым {i}", "--name",
            "Ұлан", "--computer", str(i), "-c", str(cli.config), env=ENV,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return int(out.decode().split()[0])

    results = await asyncio.gather(*(accounting(i) for i in range(20)),
                                   *(admin(i) for i in range(4)))
    assert sorted(r for r in results if r is not None) == [1, 2, 3, 4]

    def run(*args: str) -> str:
        return cli(*args).stdout

    closed = await asyncio.to_thread(run, "journal", "close", "2")
    assert closed.startswith("entry 2 closed")
    exported = await asyncio.to_thread(
        run, "sessions", "export", "--format", "json", "--phone", "+7 (701) 234-56-78")
    rows = json.loads(exported)
    assert len(rows) == 10
    assert {r["phone"] for r in rows} == {"+77012345678"}
    # Stored as the login was at Access-Request: the number the NAS sent, in E.164.
    assert {r["login"] for r in rows} == {"+77012345678"}
    row = rows[0]
    assert row["device"].startswith("AA-BB-CC-DD-EE-") and row["terminate_cause"] == "User-Request"
    assert row["output_octets"] == 2000 and row["stopped_at"].endswith("+05:00")
    assert row["nas"] == "localhost"
    as_csv = list(csv.DictReader(io.StringIO(await asyncio.to_thread(
        run, "sessions", "export", "--format", "csv"))))
    assert len(as_csv) == 20
    by_id = {r["id"]: r for r in json.loads(await asyncio.to_thread(
        run, "sessions", "export", "--format", "json"))}
    for r in as_csv:
        j = by_id[int(r["id"])]
        assert (r["login"], r["device"], r["started_at"], r["stopped_at"]) == (
            j["login"], j["device"], j["started_at"], j["stopped_at"])
        assert int(r["input_octets"]) == j["input_octets"]


def test_times_are_read_as_people_type_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from radiusd.admin import parse_time

    monkeypatch.setenv("TZ", "Asia/Almaty")
    time.tzset()
    try:
        now = iso_to_unix("2026-01-05T18:00:00+05:00")
        expect = iso_to_unix("2026-01-05T09:30:00+05:00")
        for text in ("9:30", "09:30:00", "2026-01-05 09:30", "2026-01-05T09:30",
                     "2026-01-05T04:30Z", "2026-01-05T09:30+05:00"):
            assert parse_time(text, "--at", now) == expect, text
        assert parse_time("now", "--at", now) == now
        assert parse_time("2026-01-05", "--since", now) == iso_to_unix("2026-01-05T00:00+05:00")
        assert parse_time("2026-01-05", "--until", now, end_of_day=True) == iso_to_unix(
            "2026-01-06T00:00+05:00")
    finally:
        monkeypatch.undo()
        time.tzset()
