"""Issue 13: every revocation ends the session in the store and tells the NAS.

The real server on loopback (`running_server`, what `radiusd serve` runs), the admin
commands through `radiusd.cli.main` (in a thread: each runs its own event loop, as
the command does in its own process) and a simulated NAS (`CoaNas`) that receives the
Disconnect-Requests on loopback and answers ACK, NAK, or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from radiusd import journal
from radiusd.app import Server
from radiusd.cli import main
from radiusd.clock import ManualClock
from radiusd.config import load
from radiusd.http import metrics
from radiusd.radius.coa import Backoff
from radiusd.sealing import Sealer
from radiusd.store.backend import connect_sync
from radiusd.testing.coa_nas import CoaNas
from radiusd.testing.server import DATABASE_URL_ENV, running_server
from tests.otp_support import (
    ACCEPT,
    MAC,
    OTHER_MAC,
    PHONE,
    REJECT,
    TYPED,
    acct,
    enter,
    get_password,
    log_in,
    nas_of,
    reply_message,
    request_code,
    session_row,
    sms_count,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """On both stores (issue 12 item 6), like tests/conftest.py's BOTH_STORES."""
    if "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", ["sqlite", "postgres"], indirect=True)


DISCONNECT_REQUEST = 40
BLOCKED_EN = "Wi-Fi access is blocked for this number. Please contact the staff"


@dataclass
class Rig:
    server: Server
    nas: CoaNas
    clock: ManualClock
    config_file: Path

    def radiusd(self, *args: str) -> tuple[int, str, str]:
        """`radiusd ARGS -c FILE` in this process (call through `asyncio.to_thread`)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*args, "-c", str(self.config_file)])
            except SystemExit as e:
                code = int(e.code or 0)
        return code, out.getvalue(), err.getvalue()

    async def cli(self, *args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(self.radiusd, *args)

    def disconnects(self) -> list[Any]:
        return [r for r in self.nas.received if r.code == DISCONNECT_REQUEST]


def _toml(tmp: Path, coa_port: int, **sections: dict[str, Any]) -> Path:
    url = os.environ.get(DATABASE_URL_ENV)
    database = f"url = {json.dumps(url)}" if url else f"path = {json.dumps(str(tmp / 'r.db'))}"
    lines = [
        "[server]", 'auth_listen = ["127.0.0.1:0"]', 'acct_listen = ["127.0.0.1:0"]',
        "[database]", database,
        "[otp]", f"key_file = {json.dumps(str(tmp / 'radiusd.key'))}",
        *(f"{k} = {json.dumps(v)}" for k, v in sections.get("otp", {}).items()),
        "[accounting]",
        *(f"{k} = {json.dumps(v)}" for k, v in sections.get("accounting", {}).items()),
        "[journal]",
        *(f"{k} = {json.dumps(v)}" for k, v in sections.get("journal", {}).items()),
        "[sms]", 'provider = "file"', "[sms.file]",
        f"path = {json.dumps(str(tmp / 'outbox.jsonl'))}",
        "[[clients]]", 'name = "cafe"', 'address = "127.0.0.1"', 'secret = "testing123"',
        'coa = "disconnect"', 'coa_address = "127.0.0.1"', f"coa_port = {coa_port}",
    ]
    path = tmp / "radiusd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def rig(tmp: Path, *, answer: str = "ack", error_cause: int | None = None,
              drop_first: int = 0, **sections: dict[str, Any]) -> AsyncIterator[Rig]:
    nas = CoaNas(answer=answer, error_cause=error_cause,  # type: ignore[arg-type]
                 drop_first=drop_first)
    _, port = await nas.start()
    path = _toml(tmp, port, **sections)
    clock = ManualClock(time.time())
    try:
        async with running_server(load(path), clock) as server:
            # Retransmissions in tenths of a second, so "never answers" ends soon.
            server.disconnector.backoff = Backoff(initial=0.05, maximum=0.1, attempts=3,
                                                  duration=0.6, jitter=0.0)
            yield Rig(server, nas, clock, path)
    finally:
        nas.close()


async def online(r: Rig, user: str = TYPED, mac: str = MAC, session: str = "s-1",
                 phone: str = PHONE) -> tuple[str, bytes]:
    """Log in and start accounting, as a NAS does."""
    radius = nas_of(r.server)
    code, klass = await log_in(r.server, radius, user, phone, mac=mac)
    await acct(radius, "Start", session, user=user, mac=mac, klass=klass)
    return code, klass


async def expire_reason(r: Rig, code_owner: str = PHONE) -> list[str | None]:
    rows = await r.server.store.fetchall(
        "SELECT expire_reason FROM passwords WHERE login = ? ORDER BY issued_at",
        (code_owner,))
    return [row[0] for row in rows]


# -- the maximum lifetime (the reaper) -----------------------------------------------


async def test_max_lifetime_disconnects_the_live_session_and_records_the_ack(
        tmp_path: Path) -> None:
    async with rig(tmp_path, otp={"max_lifetime_seconds": 3600},
             accounting={"stale_after_seconds": 7200}) as r:
        code, _ = await online(r)
        r.clock.advance(3601)
        await r.server.reaper.run_once()
        await r.server.disconnects.join()
        (sent,) = r.disconnects()
        assert sent.authenticator_ok and sent.message_authenticator_ok
        assert sent.get("Acct-Session-Id") == "s-1"
        assert sent.get("User-Name") == TYPED  # as the NAS knows it
        row = await session_row(r.server, "s-1")
        assert row["stopped_at"] is not None
        assert row["terminate_cause"] == "Session-Timeout"
        assert row["disconnect_answer"] == "ack"
        assert "Disconnect-ACK" in row["disconnect_detail"]
        assert await expire_reason(r) == ["max_lifetime"]
        assert (await enter(nas_of(r.server), code)).code == REJECT


async def test_a_nas_that_never_answers_is_recorded_and_the_password_is_dead_anyway(
        tmp_path: Path) -> None:
    async with rig(tmp_path, answer="none", otp={"max_lifetime_seconds": 3600},
             accounting={"stale_after_seconds": 7200}) as r:
        code, _ = await online(r)
        r.clock.advance(3601)
        await r.server.reaper.run_once()
        await r.server.disconnects.join()
        assert len(r.disconnects()) == 3  # the first send and two retransmissions
        assert len({d.raw for d in r.disconnects()}) == 1  # the same datagram (RFC 5080)
        row = await session_row(r.server, "s-1")
        assert row["disconnect_answer"] == "timeout"
        assert row["terminate_cause"] == "Session-Timeout"
        assert (await enter(nas_of(r.server), code)).code == REJECT
        text = metrics.render_disconnects(r.server.disconnector.samples(),
                                          r.server.session_end.no_accounting)
        assert "radiusd_coa_timeouts_total 1" in text
        assert "radiusd_coa_retransmissions_total 2" in text


async def test_a_lost_disconnect_request_is_sent_again_and_the_ack_counts(
        tmp_path: Path) -> None:
    async with rig(tmp_path, drop_first=1, otp={"max_lifetime_seconds": 3600},
             accounting={"stale_after_seconds": 7200}) as r:
        await online(r)
        r.clock.advance(3601)
        await r.server.reaper.run_once()
        await r.server.disconnects.join()
        first, again = r.disconnects()
        assert first.raw == again.raw
        assert (await session_row(r.server, "s-1"))["disconnect_answer"] == "ack"


# -- an admin's kick -----------------------------------------------------------------


async def test_sessions_disconnect_prints_the_nak_and_the_session_ends_anyway(
        tmp_path: Path) -> None:
    async with rig(tmp_path, answer="nak", error_cause=503) as r:
        code, _ = await online(r)
        status, out, err = await r.cli("sessions", "list", "--live")
        assert status == 0 and PHONE in out and "online" in out, err
        status, out, err = await r.cli("sessions", "disconnect", "--phone", TYPED)
        assert status == 0, err
        assert "Disconnect-NAK" in out and "503 Session-Context-Not-Found" in out
        assert "Admin-Reset" in out
        row = await session_row(r.server, "s-1")
        assert row["terminate_cause"] == "Admin-Reset"
        assert row["disconnect_answer"] == "nak" and row["disconnect_error_cause"] == 503
        assert await expire_reason(r) == ["admin"]
        assert (await enter(nas_of(r.server), code)).code == REJECT
        status, out, _ = await r.cli("sessions", "list", "--live")
        assert status == 0 and out.strip() == "no live sessions"
        status, out, _ = await r.cli("sessions", "list", "--phone", TYPED)
        assert "Admin-Reset" in out and "Disconnect-NAK" in out
        # Nothing left to kick: one line saying where to look.
        status, _, err = await r.cli("sessions", "disconnect", "--phone", TYPED)
        assert status == 1 and "sessions list --live" in err


async def test_sessions_disconnect_by_id_and_by_nas(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await online(r, session="s-1")
        await online(r, user="8 701 000 00 01", mac=OTHER_MAC, session="s-2",
                     phone="+77010000001")
        sid = (await session_row(r.server, "s-1"))["id"]
        status, out, err = await r.cli("sessions", "disconnect", "--session", str(sid))
        assert status == 0 and "Disconnect-ACK" in out, err
        assert [d.get("Acct-Session-Id") for d in r.disconnects()] == ["s-1"]
        status, out, err = await r.cli("sessions", "disconnect", "--nas", "cafe")
        assert status == 0 and "s-2" in out, err
        assert [d.get("Acct-Session-Id") for d in r.disconnects()] == ["s-1", "s-2"]


async def test_sessions_disconnect_refuses_unclear_input(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        status, _, err = await r.cli("sessions", "disconnect")
        assert status == 2 and "exactly one of --phone" in err
        status, _, err = await r.cli("sessions", "disconnect", "--nas", "nope")
        assert status == 2 and "type one of: cafe" in err
        status, _, err = await r.cli("sessions", "disconnect", "--session", "x1")
        assert status == 2 and "is not a session ID" in err
        assert r.disconnects() == []


# -- a blocked number ----------------------------------------------------------------


async def test_a_blocked_number_is_disconnected_and_gets_no_password_or_sms(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        code, _ = await online(r)
        status, out, err = await r.cli("numbers", "block", TYPED, "--reason", "SMS fraud")
        assert status == 0 and "Disconnect-ACK" in out and "Number-Blocked" in out, err
        assert (await session_row(r.server, "s-1"))["terminate_cause"] == "Number-Blocked"
        radius = nas_of(r.server)
        assert (await enter(radius, code)).code == REJECT
        before = await sms_count(r.server)
        answer = await get_password(radius)
        assert answer.code == REJECT and reply_message(answer) == BLOCKED_EN
        assert await sms_count(r.server) == before
        status, out, _ = await r.cli("numbers", "list")
        assert PHONE in out and "SMS fraud" in out
        status, out, _ = await r.cli("numbers", "unblock", TYPED)
        assert status == 0
        r.clock.advance(120)  # past the resend wait
        await request_code(r.server, radius)
        status, _, err = await r.cli("numbers", "unblock", TYPED)
        assert status == 1 and "not blocked" in err


# -- one session per number ----------------------------------------------------------


async def test_a_new_login_of_the_number_replaces_the_older_session(tmp_path: Path) -> None:
    async with rig(tmp_path, otp={"one_session_per_number": True}) as r:
        first, _ = await online(r, mac=MAC, session="s-a")
        r.clock.advance(120)
        await online(r, mac=OTHER_MAC, session="s-b")
        await r.server.disconnects.join()
        assert [d.get("Acct-Session-Id") for d in r.disconnects()] == ["s-a"]
        assert (await session_row(r.server, "s-a"))["terminate_cause"] == "Replaced"
        assert (await session_row(r.server, "s-b"))["stopped_at"] is None
        assert (await enter(nas_of(r.server), first, mac=MAC)).code == REJECT


async def test_by_default_a_number_may_have_two_sessions(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        first, _ = await online(r, mac=MAC, session="s-a")
        r.clock.advance(120)
        await online(r, mac=OTHER_MAC, session="s-b")
        await r.server.disconnects.join()
        assert r.disconnects() == []
        assert (await enter(nas_of(r.server), first, mac=MAC)).code == ACCEPT


# -- journal close -------------------------------------------------------------------


async def test_journal_close_disconnects_the_voucher_session(tmp_path: Path) -> None:
    async with rig(tmp_path, journal={"vouchers": True}) as r:
        config = r.server.config
        conn = connect_sync(config.database)
        try:
            opened = journal.open_entry(
                conn, r.clock.now(), journal.Person(surname="Ахметова", name="Дана",
                                                    computer="2"), "alice",
                vouchers=journal.VoucherSettings(Sealer.from_config(config.otp),
                                                 config.otp.length, config.otp.language))
        finally:
            conn.close()
        v = opened.voucher
        assert v is not None
        radius = nas_of(r.server)
        assert (await enter(radius, v.password, v.login)).code == ACCEPT
        await acct(radius, "Start", "s-v", user=v.login)
        status, out, err = await r.cli("journal", "close", str(opened.entry.id))
        assert status == 0 and "Journal-Closed" in out and "Disconnect-ACK" in out, err
        (sent,) = r.disconnects()
        assert sent.get("User-Name") == v.login
        assert (await session_row(r.server, "s-v"))["terminate_cause"] == "Journal-Closed"
        assert (await enter(radius, v.password, v.login)).code == REJECT


# -- Rules §8 without accounting -----------------------------------------------------


async def test_without_accounting_each_code_is_good_for_one_login(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with rig(tmp_path) as r:
        radius = nas_of(r.server)
        code, _ = await log_in(r.server, radius)
        assert (await enter(radius, code)).code == ACCEPT  # re-auth within the grace
        r.clock.advance(121)
        await r.server.reaper.run_once()
        assert await expire_reason(r) == ["no_accounting"]
        assert (await enter(radius, code)).code == REJECT
        await log_in(r.server, radius)
        r.clock.advance(121)
        await r.server.reaper.run_once()
        warnings = [m for m in caplog.messages if m.startswith("no accounting from NAS")]
        assert warnings == ["no accounting from NAS cafe: passwords are single-use; "
                            "enable RADIUS accounting"]
        text = metrics.render_disconnects(r.server.disconnector.samples(),
                                          r.server.session_end.no_accounting)
        assert 'radiusd_passwords_without_accounting_total{nas="cafe"} 2' in text
        assert r.disconnects() == []  # no session to name: nothing sent


async def test_a_live_session_keeps_re_authenticating(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        code, klass = await online(r)
        radius = nas_of(r.server)
        for _ in range(3):
            r.clock.advance(200)
            await acct(radius, "Interim-Update", "s-1", user=TYPED, klass=klass)
            await r.server.reaper.run_once()
            assert (await enter(radius, code)).code == ACCEPT


# -- Rules §10: true journal times ---------------------------------------------------


async def _voucher(r: Rig) -> tuple[int, journal.Voucher]:
    config = r.server.config
    conn = connect_sync(config.database)
    try:
        opened = journal.open_entry(
            conn, r.clock.now(), journal.Person(surname="Серікова", name="Айгүл",
                                                computer="5"), "alice",
            vouchers=journal.VoucherSettings(Sealer.from_config(config.otp),
                                             config.otp.length, config.otp.language))
    finally:
        conn.close()
    assert opened.voucher is not None
    return opened.entry.id, opened.voucher


def _entry(r: Rig, entry_id: int) -> journal.Entry:
    conn = connect_sync(r.server.config.database)
    try:
        return journal.get_entry(conn, entry_id)
    finally:
        conn.close()


async def test_a_stale_voucher_session_ends_the_entry_when_last_heard_of(
        tmp_path: Path) -> None:
    async with rig(tmp_path, journal={"vouchers": True}) as r:
        entry_id, v = await _voucher(r)
        radius = nas_of(r.server)
        assert (await enter(radius, v.password, v.login)).code == ACCEPT
        await acct(radius, "Start", "s-v", user=v.login)
        r.clock.advance(300)
        await acct(radius, "Interim-Update", "s-v", user=v.login)
        last_heard = r.clock.now()
        r.clock.advance(r.server.config.accounting.stale_after() + 600)
        await r.server.reaper.run_once()
        assert _entry(r, entry_id).ended_at == pytest.approx(last_heard, abs=0.001)


async def test_a_voucher_never_used_ends_its_entry_at_its_ttl_marked_unused(
        tmp_path: Path) -> None:
    async with rig(tmp_path, journal={"vouchers": True}) as r:
        opened_at = r.clock.now()
        entry_id, _ = await _voucher(r)
        r.clock.advance(journal.VOUCHER_UNCLAIMED_SECONDS + 3600)
        await r.server.reaper.run_once()
        entry = _entry(r, entry_id)
        assert entry.ended_at == pytest.approx(opened_at + journal.VOUCHER_UNCLAIMED_SECONDS,
                                               abs=0.001)
        status, out, err = await r.cli("journal", "show", str(entry_id))
        assert status == 0 and "voucher never used" in out, err


async def test_the_http_api_refuses_a_blocked_number_with_403(tmp_path: Path) -> None:
    import aiohttp

    from radiusd.http import start_http, stop_http

    async with rig(tmp_path) as r:
        r.server.config.http.listen.append("127.0.0.1:0")
        handle = await start_http(r.server)
        assert handle is not None
        try:
            status, _, err = await r.cli("numbers", "block", TYPED)
            assert status == 0, err
            async with aiohttp.ClientSession() as s, \
                    s.post(handle.url("/api/v1/otp"), json={"phone": TYPED}) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"] == "number_blocked"
            assert await sms_count(r.server) == 0
        finally:
            await stop_http(handle)


async def test_a_nas_restart_ends_the_voucher_entry_when_last_heard_of(
        tmp_path: Path) -> None:
    async with rig(tmp_path, journal={"vouchers": True}) as r:
        entry_id, v = await _voucher(r)
        radius = nas_of(r.server)
        assert (await enter(radius, v.password, v.login)).code == ACCEPT
        await acct(radius, "Start", "s-v", user=v.login)
        r.clock.advance(300)
        await acct(radius, "Interim-Update", "s-v", user=v.login)
        last_heard = r.clock.now()
        r.clock.advance(250)
        await acct(radius, "Accounting-On", None, user=None)
        assert _entry(r, entry_id).ended_at == pytest.approx(last_heard, abs=0.001)
        assert (await enter(radius, v.password, v.login)).code == REJECT
