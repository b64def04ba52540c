"""Rules §10 journal as a library: plain functions over a real SQLite file and `now`."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radiusd import journal
from radiusd.config import OtpConfig
from radiusd.journal import JournalError, Person
from radiusd.sealing import Sealer
from radiusd.store.backend import SyncConnection, connect_sync
from radiusd.store.sqlite import connect_sync as sqlite_connect
from radiusd.testing.server import loopback_config

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
KAZAKH = "ӘҒҚҢӨҰҮҺІ әғқңөұүһі"


@pytest.fixture
def db(tmp_path: Path, store_backend: str) -> Iterator[SyncConnection]:
    """The admin CLI's connection to the store: run once on SQLite, once on a fresh
    PostgreSQL database (tests/conftest.py `BOTH_STORES`)."""
    conn = connect_sync(loopback_config(tmp_path).database)
    yield conn
    conn.close()


@pytest.fixture
def vouchers(tmp_path: Path) -> journal.VoucherSettings:
    otp = OtpConfig(key_file=str(tmp_path / "radiusd.key"), length=8, language="kk")
    return journal.VoucherSettings(Sealer.from_config(otp), otp.length, otp.language)


def person(**kw: str) -> Person:
    base = {"surname": "Әбілқасымов", "name": "Нұрлан", "patronymic": "Серікұлы",
            "computer": "3"}
    return Person(**{**base, **kw})


def dump(conn: SyncConnection) -> list[object]:
    return [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
            for t in ("journal", "journal_events", "passwords")]


@pytest.mark.sqlite_only
def test_database_file_is_private(tmp_path: Path) -> None:
    sqlite_connect(str(tmp_path / "new.db")).close()
    assert stat.S_IMODE(os.stat(tmp_path / "new.db").st_mode) == 0o600


def test_open_records_entry_and_who_opened_it(db: SyncConnection) -> None:
    opened = journal.open_entry(db, T0, person(surname=KAZAKH), "alice")
    e = opened.entry
    assert (e.surname, e.name, e.patronymic, e.computer) == (KAZAKH, "Нұрлан", "Серікұлы", "3")
    assert e.started_at == e.opened_at == T0 and e.ended_at is None
    assert opened.voucher is None
    [ev] = journal.history(db, e.id)
    assert (ev.event, ev.actor, ev.at) == ("open", "alice", T0)


def test_text_is_stored_in_composed_form(db: SyncConnection) -> None:
    decomposed = "Й".replace("Й", "И\u0306") + "ерлан"  # И + combining breve
    e = journal.open_entry(db, T0, person(name=decomposed), "alice").entry
    assert e.name == "Йерлан"


@pytest.mark.parametrize("field", ["surname", "name", "computer"])
def test_empty_required_field_is_refused(db: SyncConnection, field: str) -> None:
    with pytest.raises(JournalError, match=f"--{field} is empty"):
        journal.open_entry(db, T0, person(**{field: "  "}), "alice")
    assert dump(db) == [[], [], []]


def test_line_break_in_a_name_is_refused(db: SyncConnection) -> None:
    with pytest.raises(JournalError, match="one line"):
        journal.open_entry(db, T0, person(surname="A\nB"), "alice")


def test_document_number_needs_the_config_switch(db: SyncConnection) -> None:
    p = person(document_type="passport", document_number="N1234567")
    with pytest.raises(JournalError, match="store_document_number"):
        journal.open_entry(db, T0, p, "alice")
    assert dump(db) == [[], [], []]
    e = journal.open_entry(db, T0, p, "alice", store_document_number=True).entry
    assert (e.document_type, e.document_number) == ("passport", "N1234567")


def test_close_sets_end_time_as_an_event(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(), "alice").entry
    closed = journal.close_entry(db, T0 + 7200, e.id, T0 + 3600, "bob")
    assert closed.ended_at == T0 + 3600
    assert [(ev.event, ev.actor) for ev in journal.history(db, e.id)] == [
        ("open", "alice"), ("close", "bob")]
    # The first-written row is untouched.
    assert db.execute("SELECT ended_at FROM journal").fetchone() == (None,)


def test_closing_twice_is_refused_and_changes_nothing(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(), "alice").entry
    journal.close_entry(db, T0 + 60, e.id, T0 + 60, "alice")
    before = dump(db)
    with pytest.raises(JournalError, match=r"already closed.*journal correct"):
        journal.close_entry(db, T0 + 120, e.id, T0 + 120, "alice")
    assert dump(db) == before


def test_end_before_start_is_refused(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(), "alice").entry
    with pytest.raises(JournalError, match="end before start"):
        journal.close_entry(db, T0 + 60, e.id, T0 - 60, "alice")
    assert journal.get_entry(db, e.id).ended_at is None


def test_end_in_the_future_is_refused(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(), "alice").entry
    with pytest.raises(JournalError, match="future"):
        journal.close_entry(db, T0, e.id, T0 + 3600, "alice")


def test_unknown_id_is_refused(db: SyncConnection) -> None:
    with pytest.raises(JournalError, match="no journal entry 42"):
        journal.close_entry(db, T0, 42, T0, "alice")
    with pytest.raises(JournalError, match="no journal entry 42"):
        journal.correct_entry(db, T0, 42, "surname", "X", "alice")


def test_correction_is_a_new_event_and_the_original_stays(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(surname="Абилкасымов"), "alice").entry
    fixed = journal.correct_entry(db, T0 + 10, e.id, "surname", "Әбілқасымов", "bob",
                                  reason="typed without Kazakh letters")
    assert fixed.surname == "Әбілқасымов" and fixed.corrections == 1
    assert db.execute("SELECT surname FROM journal").fetchone() == ("Абилкасымов",)
    last = journal.history(db, e.id)[-1]
    assert (last.event, last.actor, last.at) == ("correct", "bob", T0 + 10)
    assert last.detail == {"field": "surname", "value": "Әбілқасымов",
                           "reason": "typed without Kazakh letters"}
    # A second correction wins over the first; both stay on record.
    journal.correct_entry(db, T0 + 20, e.id, "surname", "Әбілқасым", "carol")
    assert journal.get_entry(db, e.id).surname == "Әбілқасым"
    assert len(journal.history(db, e.id)) == 3
    assert journal.list_entries(db)[0].surname == "Әбілқасым"


def test_correcting_times_keeps_start_before_end(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(), "alice").entry
    with pytest.raises(JournalError, match=r"still open.*journal close"):
        journal.correct_entry(db, T0 + 60, e.id, "ended_at", T0 + 30, "alice")
    journal.close_entry(db, T0 + 3600, e.id, T0 + 3600, "alice")
    with pytest.raises(JournalError, match="start after end"):
        journal.correct_entry(db, T0 + 3600, e.id, "started_at", T0 + 3601, "alice")
    with pytest.raises(JournalError, match="end before start"):
        journal.correct_entry(db, T0 + 3600, e.id, "ended_at", T0 - 1, "alice")
    fixed = journal.correct_entry(db, T0 + 3600, e.id, "started_at", T0 - 600, "alice")
    assert fixed.started_at == T0 - 600


def test_corrections_refuse_nonsense(db: SyncConnection) -> None:
    e = journal.open_entry(db, T0, person(), "alice").entry
    before = dump(db)
    with pytest.raises(JournalError, match="cannot be corrected"):
        journal.correct_entry(db, T0, e.id, "opened_at", T0, "alice")
    with pytest.raises(JournalError, match="--name is empty"):
        journal.correct_entry(db, T0, e.id, "name", " ", "alice")
    with pytest.raises(JournalError, match="nothing to correct"):
        journal.correct_entry(db, T0, e.id, "computer", "3", "alice")
    with pytest.raises(JournalError, match="store_document_number"):
        journal.correct_entry(db, T0, e.id, "document_number", "N1", "alice")
    assert dump(db) == before
    # The patronymic is "if any": it may be corrected to nothing.
    assert journal.correct_entry(db, T0, e.id, "patronymic", "", "alice").patronymic == ""


def test_list_shows_entries_online_in_the_range(db: SyncConnection) -> None:
    a = journal.open_entry(db, T0, person(computer="1"), "x").entry
    journal.close_entry(db, T0 + 3600, a.id, T0 + 3600, "x")
    b = journal.open_entry(db, T0 + 7200, person(computer="2"), "x").entry

    def ids(**kw: object) -> list[int]:
        return [e.id for e in journal.list_entries(db, **kw)]  # type: ignore[arg-type]

    assert ids() == [a.id, b.id]
    assert ids(open_only=True) == [b.id]
    assert ids(computer="1") == [a.id]
    assert ids(since=T0 + 1800) == [a.id, b.id]  # a still online at T0+30min
    assert ids(since=T0 + 3601) == [b.id]
    assert ids(until=T0 + 7200) == [a.id]
    assert ids(since=T0 + 3601, until=T0 + 7000) == []


def test_voucher_is_issued_sealed_with_the_server_key(
    db: SyncConnection, vouchers: journal.VoucherSettings, tmp_path: Path,
) -> None:
    opened = journal.open_entry(db, T0, person(), "alice", vouchers=vouchers)
    v = opened.voucher
    assert v is not None and re.fullmatch(r"v\d{6}", v.login) and re.fullmatch(r"\d{8}", v.password)
    assert opened.entry.voucher_login == v.login
    row = db.execute(
        "SELECT id, kind, state, secret, language, issued_at, unclaimed_until, attempts,"
        " journal_id FROM passwords WHERE login = ?", (v.login,)).fetchone()
    pid, kind, state, secret, language, issued, unclaimed, attempts, jid = row
    assert 0 <= pid < 2**62
    assert (kind, state, language, issued, unclaimed, attempts, jid) == (
        "voucher", "issued", "kk", T0, T0 + journal.VOUCHER_UNCLAIMED_SECONDS, 0,
        opened.entry.id)
    assert v.password.encode() not in secret
    server_side = Sealer.from_config(OtpConfig(key_file=str(tmp_path / "radiusd.key")))
    assert server_side.open(secret, aad=b"otp") == v.password.encode()


def test_voucher_logins_do_not_repeat(
    db: SyncConnection, vouchers: journal.VoucherSettings,
) -> None:
    logins = {journal.open_entry(db, T0, person(), "x", vouchers=vouchers).voucher.login  # type: ignore[union-attr]
              for _ in range(50)}
    assert len(logins) == 50


def test_closing_by_hand_expires_the_unused_voucher(
    db: SyncConnection, vouchers: journal.VoucherSettings,
) -> None:
    e = journal.open_entry(db, T0, person(), "alice", vouchers=vouchers).entry
    journal.close_entry(db, T0 + 60, e.id, T0 + 60, "alice")
    assert db.execute("SELECT state, expired_at, expire_reason FROM passwords").fetchone() == (
        "expired", T0 + 60, "journal-closed")


def _commit(conn: SyncConnection, ops: list[tuple[str, tuple[object, ...]]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for sql, params in ops:
        conn.execute(sql, params)
    conn.execute("COMMIT")


def test_voucher_accounting_sets_start_and_end(
    db: SyncConnection, vouchers: journal.VoucherSettings,
) -> None:
    e = journal.open_entry(db, T0, person(), "alice", vouchers=vouchers).entry
    _commit(db, journal.voucher_session_started_ops(e.id, T0 + 300))
    _commit(db, journal.voucher_session_started_ops(e.id, T0 + 900))  # a second Start: ignored
    assert journal.get_entry(db, e.id).started_at == T0 + 300
    _commit(db, journal.voucher_session_ended_ops(e.id, T0 + 4000))
    _commit(db, journal.voucher_session_ended_ops(e.id, T0 + 5000))  # a repeated Stop: ignored
    got = journal.get_entry(db, e.id)
    assert (got.started_at, got.ended_at, got.opened_at) == (T0 + 300, T0 + 4000, T0)
    assert [(ev.event, ev.actor) for ev in journal.history(db, e.id)] == [
        ("open", "alice"), ("start", "radiusd"), ("close", "radiusd")]


def test_voucher_accounting_after_a_manual_close_changes_nothing(
    db: SyncConnection, vouchers: journal.VoucherSettings,
) -> None:
    e = journal.open_entry(db, T0, person(), "alice", vouchers=vouchers).entry
    journal.close_entry(db, T0 + 60, e.id, T0 + 60, "alice")
    before = dump(db)
    _commit(db, journal.voucher_session_started_ops(e.id, T0 + 120))
    _commit(db, journal.voucher_session_ended_ops(e.id, T0 + 180))
    _commit(db, journal.voucher_session_ended_ops(999, T0 + 180))  # unknown id: no-op
    assert dump(db) == before


def test_purge_removes_only_entries_ended_before_the_cutoff(db: SyncConnection) -> None:
    old = journal.open_entry(db, T0, person(), "x").entry
    journal.close_entry(db, T0 + 60, old.id, T0 + 60, "x")
    journal.correct_entry(db, T0 + 60, old.id, "name", "Ерлан", "x")
    still_open = journal.open_entry(db, T0, person(), "x").entry
    recent = journal.open_entry(db, T0 + 1000, person(), "x").entry
    journal.close_entry(db, T0 + 2000, recent.id, T0 + 2000, "x")
    db.execute("BEGIN IMMEDIATE")
    assert journal.purge_entries(db, T0 + 1000) == 1
    db.execute("COMMIT")
    assert [e.id for e in journal.list_entries(db)] == [still_open.id, recent.id]
    assert db.execute("SELECT COUNT(*) FROM journal_events WHERE journal_id = ?",
                      (old.id,)).fetchone() == (0,)


@pytest.mark.sqlite_only
def test_a_write_waits_for_the_servers_transaction(tmp_path: Path) -> None:
    path = str(tmp_path / "radiusd.db")
    cli = sqlite_connect(path)
    locked = threading.Event()

    def server() -> None:  # the server's group commit holding the write lock a while
        conn = sqlite_connect(path)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO sessions (unique_id, nas, acct_session_id, updated_at)"
                     " VALUES ('u1', 'nas', 's1', 0)")
        locked.set()
        time.sleep(0.3)
        conn.execute("COMMIT")
        conn.close()

    worker = threading.Thread(target=server)
    worker.start()
    assert locked.wait(5)
    t = time.monotonic()
    entry = journal.open_entry(cli, T0, person(), "alice").entry  # queues, does not fail
    waited = time.monotonic() - t
    worker.join()
    assert entry.id == 1 and 0.2 < waited < 5
    assert cli.execute("SELECT COUNT(*) FROM sessions").fetchone() == (1,)
    cli.close()


async def test_voucher_login_and_accounting_fill_the_entry(tmp_path: Path) -> None:
    """End to end with the real server: the voucher logs in through the NAS like a
    phone login, its Start and Stop set the entry's times, and Stop kills it."""
    from radiusd.clock import ManualClock
    from radiusd.testing.server import nas_for, running_server

    config = loopback_config(tmp_path, journal={"vouchers": True})
    clock = ManualClock(time.time())
    settings = journal.VoucherSettings(
        Sealer.from_config(config.otp), config.otp.length, config.otp.language)
    async with running_server(config, clock) as server:
        conn = connect_sync(config.database)
        opened = journal.open_entry(conn, clock.now() - 60, person(), "alice", vouchers=settings)
        unused = journal.open_entry(conn, clock.now() - 60, person(computer="4"), "alice",
                                    vouchers=settings)
        journal.close_entry(conn, clock.now(), unused.entry.id, clock.now(), "alice")
        v, gone = opened.voucher, unused.voucher
        assert v is not None and gone is not None
        nas = nas_for(server, timeout=1, retries=1)
        assert (await nas.send(nas.access_request(v.login, v.password, chap=True))).code == 2
        assert (await nas.send(nas.access_request(gone.login, gone.password))).code == 3
        sid = nas.new_session_id()
        await nas.send(nas.accounting_request("Start", user=v.login, session_id=sid), acct=True)
        start = clock.now()
        clock.advance(1800)
        await nas.send(nas.accounting_request("Stop", user=v.login, session_id=sid,
                                              Acct_Session_Time=1800), acct=True)
        entry = journal.get_entry(conn, opened.entry.id)
        assert (entry.started_at, entry.ended_at) == (
            pytest.approx(start), pytest.approx(start + 1800))
        assert entry.opened_at < entry.started_at
        assert (await nas.send(nas.access_request(v.login, v.password))).code == 3  # Rules §8
        conn.close()
