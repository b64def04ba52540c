"""Edges of the password's life found in review: a mistyped code on a live session,
a voucher closed by hand after the server has seen it, and Rules §9 across restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from radiusd import journal
from radiusd.clock import ManualClock
from radiusd.sealing import Sealer
from radiusd.store.sqlite import connect_sync
from radiusd.testing.server import loopback_config, nas_for, running_server
from tests.otp_support import (
    ACCEPT,
    REJECT,
    enter,
    log_in,
    nas_of,
    otp_server,
    reply_message,
)


async def test_mistyped_code_during_a_live_session_says_wrong_password(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code, _ = await log_in(server, nas)
        wrong = "000000" if code != "000000" else "111111"
        answer = await enter(nas, wrong)
        assert answer.code == REJECT
        assert reply_message(answer) == "Wrong password"
        assert (await enter(nas, code)).code == ACCEPT  # the live one still works


async def test_voucher_closed_by_hand_after_use_is_refused(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, journal={"vouchers": True})
    clock = ManualClock(time.time())
    settings = journal.VoucherSettings(
        Sealer.from_config(config.otp), config.otp.length, config.otp.language)
    async with running_server(config, clock) as server:
        conn = connect_sync(config.database.path)
        opened = journal.open_entry(conn, clock.now(), journal_person(), "alice",
                                    vouchers=settings)
        v = opened.voucher
        assert v is not None
        nas = nas_for(server, timeout=1, retries=1)
        assert (await nas.send(nas.access_request(v.login, v.password))).code == ACCEPT
        journal.close_entry(conn, clock.now(), opened.entry.id, clock.now(), "alice")
        answer = await nas.send(nas.access_request(v.login, v.password))
        assert answer.code == REJECT
        conn.close()


def journal_person() -> journal.Person:
    return journal.Person(surname="Ахметова", name="Дана", patronymic="", computer="2")


async def test_next_code_differs_from_the_previous_one_across_a_restart(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules §9: the server remembers each number's last code through a restart; the
    random source is forced to offer the old code first, and it must be skipped."""
    async with otp_server(tmp_path, clock) as server:
        code, _ = await log_in(server, nas_of(server))
    clock.advance(3600)
    digits = iter(list(code) + list("987654") + list("123450"))
    monkeypatch.setattr("radiusd.otp.secrets.choice", lambda _seq: next(digits))
    async with otp_server(tmp_path, clock) as server:
        issued = await server.book.request("+77012345678", device=None, nas="t",
                                           language="en", now=clock.now())
        assert not hasattr(issued, "reason"), issued
        assert issued.password.code == "987654" != code  # type: ignore[union-attr]


async def test_a_new_code_is_never_one_that_is_live_for_someone_else(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    async with otp_server(tmp_path, clock) as server:
        first = await server.book.request("+77011111111", device=None, nas="t",
                                          language="en", now=clock.now())
        live = first.password.code  # type: ignore[union-attr]
        digits = iter(list(live) + list("246801") + list(live))
        monkeypatch.setattr("radiusd.otp.secrets.choice", lambda _seq: next(digits))
        second = await server.book.request("+77012222222", device=None, nas="t",
                                           language="en", now=clock.now())
        assert second.password.code == "246801" != live  # type: ignore[union-attr]
        await server.store.write(server.book.expire(
            first.password, clock.now(), "test"))  # type: ignore[union-attr]
        # Dead, the code may be someone else's again.
        third = await server.book.request("+77013333333", device=None, nas="t",
                                          language="en", now=clock.now())
        assert third.password.code == live  # type: ignore[union-attr]
