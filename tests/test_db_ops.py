"""Issue 14 items 1-3: one place for the data, a damaged database noticed, backup and
restore. What the owner types (`radiusd ...`), and what the server does with a file
that SQLite calls damaged."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from radiusd import config as config_module
from radiusd import journal
from radiusd.cli import main
from radiusd.clock import ManualClock
from radiusd.config import find_config, load
from radiusd.health import Health
from radiusd.sealing import load_key_file
from radiusd.store.sqlite import PROBE, Store, connect_sync
from radiusd.testing.server import loopback_config, running_server

PYTHON = sys.executable
ENV = {**os.environ, "PYTHONUTF8": "1"}
ENV.pop("RADIUSD_CONFIG", None)


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This machine's /etc/radiusd/radiusd.toml, if any, is not the test's."""
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG", tmp_path / "no-such.toml")
    monkeypatch.delenv("RADIUSD_CONFIG", raising=False)


def write_config(where: Path, database: str = "radiusd.db", key: str = "radiusd.key") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    conf = where / "radiusd.toml"
    conf.write_text("\n".join([
        "[server]", 'auth_listen = ["127.0.0.1:0"]', 'acct_listen = ["127.0.0.1:0"]',
        "[database]", f'path = "{database}"', "[otp]", f'key_file = "{key}"',
        "[sms]", 'provider = "file"', "[sms.file]", 'path = "outbox.jsonl"',
    ]) + "\n")
    return conf


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def fill(path: Path, rows: int = 3000) -> None:
    """A database with enough journal rows to span many pages."""
    conn = connect_sync(str(path))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO journal (surname, name, computer, opened_at, started_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [("Surname" * 8, "Name", str(i), 1e9 + i, 1e9 + i) for i in range(rows)])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def damage(path: Path, table: str = "journal") -> None:
    """One damaged page: the root of `table`'s B-tree overwritten with noise."""
    conn = sqlite3.connect(path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(bytes([0x0D]) + b"\xff" * (size - 1))


# --- 1. one place for the data ----------------------------------------------------

def test_relative_paths_follow_the_config_file_from_any_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path / "etc", database="data/radiusd.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load(conf)
    assert loaded.database.path == str(tmp_path / "etc" / "data" / "radiusd.db")
    assert loaded.otp.key_file == str(tmp_path / "etc" / "radiusd.key")
    assert loaded.sms.file.path == str(tmp_path / "etc" / "outbox.jsonl")
    assert run(["db", "init", "-c", str(conf)], capsys)[0] == 0
    code, out, _ = run(["journal", "open", "--surname", "Ким", "--name", "Ли",
                        "--computer", "1", "-c", str(conf)], capsys)
    assert (code, out) == (0, "1\n")
    monkeypatch.chdir(tmp_path)  # another directory: the same entry
    code, out, _ = run(["journal", "list", "-c", "etc/radiusd.toml"], capsys)
    assert code == 0 and "Ким Ли" in out
    assert sorted(p.name for p in elsewhere.iterdir()) == []
    assert not (tmp_path / "radiusd.key").exists()


@pytest.mark.parametrize("command", [["journal", "list"], ["journal", "export", "--format",
                                     "csv"], ["sessions", "export", "--format", "json"],
                                     ["purge", "--older-than", "30"], ["db", "backup", "x.db"],
                                     ["db", "check"]])
def test_commands_other_than_serve_refuse_a_missing_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(command, capsys)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert "radiusd.db: no database here" in err and "embedded defaults" in err
    assert "-c FILE" in err and "RADIUSD_CONFIG" in err
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_a_typo_in_the_database_directory_is_named_not_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path, database=str(tmp_path / "dtaa" / "radiusd.db"))
    code, _, err = run(["journal", "list", "-c", str(conf)], capsys)
    assert code == 1 and str(tmp_path / "dtaa" / "radiusd.db") in err and str(conf) in err
    assert not (tmp_path / "dtaa").exists()


def test_the_config_is_found_as_the_server_finds_it(tmp_path: Path) -> None:
    system = tmp_path / "etc-radiusd.toml"
    assert find_config(None, {}, system) == (None, "")
    system.write_text("")
    assert find_config(None, {}, system) == (str(system), "the default place")
    assert find_config(None, {"RADIUSD_CONFIG": "/e.toml"}, system) == \
        ("/e.toml", "$RADIUSD_CONFIG")
    assert find_config("/c.toml", {"RADIUSD_CONFIG": "/e.toml"}, system) == ("/c.toml", "-c")


def test_verbose_names_the_config_database_and_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path)
    connect_sync(str(tmp_path / "radiusd.db")).close()
    monkeypatch.setenv("RADIUSD_CONFIG", str(conf))
    code, out, err = run(["-v", "journal", "list"], capsys)
    assert code == 0 and out == "no entries\n"
    line = next(x for x in err.splitlines() if x.startswith("radiusd: config "))
    assert f"config {conf} (from $RADIUSD_CONFIG)" in line
    assert f"database {tmp_path / 'radiusd.db'}" in line
    assert f"sealing key {tmp_path / 'radiusd.key'}" in line


def test_journal_open_makes_no_sealing_key_of_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path)
    with conf.open("a") as f:
        f.write("[journal]\nvouchers = true\n")
    connect_sync(str(tmp_path / "radiusd.db")).close()
    code, _, err = run(["journal", "open", "--surname", "A", "--name", "B", "--computer",
                        "1", "-c", str(conf)], capsys)
    assert code == 1 and "does not exist" in err and "radiusd db init" in err
    assert not (tmp_path / "radiusd.key").exists()


def test_journal_close_accepts_the_minute_it_suggests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path)
    assert run(["db", "init", "-c", str(conf)], capsys)[0] == 0
    assert run(["journal", "open", "--surname", "A", "--name", "B", "--computer", "1",
                "-c", str(conf)], capsys)[0] == 0
    conn = connect_sync(str(tmp_path / "radiusd.db"))
    started = journal.get_entry(conn, 1).started_at
    conn.close()
    minute = datetime.fromtimestamp(started).strftime("%H:%M")
    code, out, err = run(["journal", "close", "1", "--at", minute, "-c", str(conf)], capsys)
    assert code == 0, err
    assert out.startswith("entry 1 closed at ")


# --- 2. a damaged database is noticed ----------------------------------------------

def test_serve_refuses_a_damaged_database_saying_what_to_do(tmp_path: Path) -> None:
    conf = write_config(tmp_path)
    load_key_file(str(tmp_path / "radiusd.key"))
    fill(tmp_path / "radiusd.db")
    damage(tmp_path / "radiusd.db")
    p = subprocess.run([PYTHON, "-m", "radiusd", "serve", "-c", str(conf)],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 1
    assert "the database is damaged" in p.stderr and "radiusd db restore" in p.stderr
    assert "Traceback" not in p.stderr and "ready" not in p.stderr


async def test_a_large_file_is_checked_after_start_and_damage_stays_reported(
        tmp_path: Path) -> None:
    path = tmp_path / "radiusd.db"
    fill(path)
    damage(path)
    store = Store(str(path), health=Health(), clock=ManualClock())
    store.check_before_start_bytes = 0  # as for a file of gigabytes
    await store.open()
    try:
        assert store.checked is not None
        await store.checked
        assert not store.ok
        reason = store.health.reason("store") or ""
        assert "the database is damaged" in reason and "radiusd db restore" in reason
        await store.write(PROBE)  # commits still work elsewhere in the file...
        assert not store.ok  # ...but a damaged file does not heal by itself
    finally:
        await store.close()


async def test_damage_met_by_a_read_marks_the_store_unhealthy_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "radiusd.db"
    fill(path)
    store = Store(str(path), health=Health(), clock=ManualClock())
    await store.open()  # sound at start
    try:
        assert store.ok
        damage(path)
        caplog.set_level(logging.ERROR, "radiusd.health")
        for _ in range(3):
            with pytest.raises(sqlite3.DatabaseError):
                await store.fetchall("SELECT count(*) FROM journal WHERE computer = ?", ("7",))
        assert not store.ok
        failing = [r for r in caplog.records if "store failing" in r.getMessage()]
        assert len(failing) == 1 and "malformed" in failing[0].getMessage()
    finally:
        await store.close()


@pytest.mark.parametrize("command", [["journal", "list"], ["journal", "export", "--format",
                                     "csv"], ["journal", "show", "5"]])
def test_cli_reports_a_damaged_database_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    conf = write_config(tmp_path)
    fill(tmp_path / "radiusd.db")
    damage(tmp_path / "radiusd.db")
    code, _, err = run([*command, "-c", str(conf)], capsys)
    assert code == 1
    assert len(err.splitlines()) == 1 and "the database is damaged" in err, err
    assert "radiusd db restore" in err


def test_db_check_says_ok_or_lists_the_damage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path)
    fill(tmp_path / "radiusd.db")
    code, out, _ = run(["db", "check", "-c", str(conf)], capsys)
    assert code == 0 and out.startswith(f"{tmp_path / 'radiusd.db'}: ok (integrity_check")
    damage(tmp_path / "radiusd.db")
    code, out, err = run(["db", "check", "--quick", "-c", str(conf)], capsys)
    assert code == 1 and "damaged (quick_check found" in out
    assert len(err.splitlines()) == 1 and "radiusd db restore" in err


# --- 3. backup and restore ---------------------------------------------------------

async def test_backup_while_serving_and_restore_only_once_stopped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path)
    config = loopback_config(tmp_path)
    assert config.database.path == str(tmp_path / "radiusd.db")
    backup = tmp_path / "backups" / "radiusd-1.db"
    backup.parent.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "radiusd", *args, "-c", str(conf)],
                              capture_output=True, text=True, env=ENV, timeout=60)

    async with running_server(config, ManualClock()):
        assert cli("journal", "open", "--surname", "Before", "--name", "B",
                   "--computer", "1").returncode == 0
        p = cli("db", "backup", str(backup))
        assert p.returncode == 0, p.stderr
        assert "the sealing key is not in it" in p.stdout
        assert cli("journal", "open", "--surname", "After", "--name", "A",
                   "--computer", "2").returncode == 0
        p = cli("db", "restore", str(backup))
        assert p.returncode == 1 and "a radiusd server is using this database" in p.stderr
        assert len(p.stderr.splitlines()) == 1
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert cli("db", "check").returncode == 0
    p = cli("db", "restore", str(backup))
    assert p.returncode == 0, p.stderr
    listed = cli("journal", "list").stdout
    assert "Before" in listed and "After" not in listed
    kept = tmp_path / "radiusd.db.before-restore"
    assert f"kept as {kept}" in p.stdout
    conn = connect_sync(str(kept))
    assert [e.surname for e in journal.list_entries(conn)] == ["Before", "After"]
    conn.close()


def test_restore_refuses_a_damaged_backup_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path)
    connect_sync(str(tmp_path / "radiusd.db")).close()
    before = (tmp_path / "radiusd.db").read_bytes()
    bad = tmp_path / "bad.db"
    fill(bad)
    damage(bad)
    code, _, err = run(["db", "restore", str(bad), "-c", str(conf)], capsys)
    assert code == 1 and "damaged" in err and "nothing was changed" in err
    assert (tmp_path / "radiusd.db").read_bytes() == before
    assert not (tmp_path / "radiusd.db.before-restore").exists()


def test_postgresql_backup_and_restore_point_to_pg_dump(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "radiusd.toml"
    conf.write_text('[database]\nurl = "postgresql://u:p@127.0.0.1:1/none"\n')
    for action in (["backup", "x.dump"], ["restore", "x.dump"]):
        code, _, err = run(["db", *action, "-c", str(conf)], capsys)
        assert code == 1 and "pg_dump" in err and "pg_restore" in err
        assert len(err.splitlines()) == 1


async def test_serve_says_when_it_creates_a_new_database_and_directory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dtaa" / "radiusd.db"
    caplog.set_level(logging.WARNING, "radiusd.store")
    store = Store(str(path), health=Health(), clock=ManualClock())
    await store.open()
    await store.close()
    [said] = [r.getMessage() for r in caplog.records if "new, empty database" in r.getMessage()]
    assert str(path) in said and "and its directory" in said
    caplog.clear()
    store = Store(str(path), health=Health(), clock=ManualClock())
    await store.open()  # there now: nothing said
    await store.close()
    assert not [r for r in caplog.records if "new, empty database" in r.getMessage()]


def test_a_path_left_out_keeps_the_working_directory_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker image's config leaves path out: the database lands in /data, the
    working directory, not beside the read-only config."""
    conf = tmp_path / "etc" / "radiusd.toml"
    conf.parent.mkdir()
    conf.write_text('[sms]\nprovider = "file"\n')
    monkeypatch.chdir(tmp_path)
    loaded = load(conf)
    assert (loaded.database.path, loaded.sms.file.path) == ("radiusd.db", "outbox.jsonl")


async def test_a_server_that_finds_damage_after_start_says_so_and_answers_no_radius(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's server said `ready` and `/healthz` said `"store":"ok"` over a damaged
    page. A file checked after start (as one of gigabytes is) now turns unhealthy."""
    import aiohttp

    from radiusd.store import sqlite as lite
    from radiusd.testing.nas import NoReply
    from radiusd.testing.server import nas_for

    monkeypatch.setattr(lite, "CHECK_BEFORE_START_BYTES", 0)
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]})
    fill(Path(config.database.path))
    damage(Path(config.database.path))
    async with running_server(config, ManualClock()) as server:
        assert isinstance(server.store, Store) and server.store.checked is not None
        await server.store.checked
        async with aiohttp.ClientSession() as s, s.get(server.http.url("/healthz")) as r:
            status, body = r.status, await r.json()
        assert status == 503 and "the database is damaged" in body["checks"]["store"]
        async with aiohttp.ClientSession() as s, s.post(
                server.http.url("/api/v1/otp"), json={"phone": "+77012345678"}) as r:
            assert r.status == 503, await r.text()  # not a 500 with a traceback
        nas = nas_for(server, timeout=0.3, retries=0)
        with pytest.raises(NoReply):
            await nas.send(nas.access_request("8 701 234 56 78", ""))
