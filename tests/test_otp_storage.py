"""The password at rest and across restarts (issue 4 items 3 and 11): sealed in the
database, never in a log, and a live session's password survives `radiusd serve`
restarting on the same database and key."""

import logging
import os
import stat
from pathlib import Path

import pytest
from otp_support import (
    ACCEPT,
    EXPIRED_EN,
    OTHER_MAC,
    PHONE,
    REJECT,
    acct,
    enter,
    get_password,
    log_in,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    request_code,
    session_row,
    sms_code,
    sms_rows,
)

from radiusd.clock import ManualClock
from radiusd.sealing import Sealer
from radiusd.testing.server import loopback_config


async def test_code_is_sealed_in_database_and_never_logged(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code, klass = await log_in(server, nas)
        await enter(nas, code, chap=True)
        await enter(nas, code, mac=OTHER_MAC)
        sid = nas.new_session_id()
        await acct(nas, "Start", sid, klass=klass)
        await acct(nas, "Stop", sid, klass=klass)
        await enter(nas, code)
        await server.reaper.run_once()

        (pw,) = await password_rows(server)
        (sms,) = await sms_rows(server, PHONE)
        for blob in (pw["secret"], sms["body"]):
            assert isinstance(blob, bytes)
            assert code.encode() not in blob
            assert code.encode("utf-16-be") not in blob
        # They open with the server's key, and only for their own purpose.
        assert server.sealer.open(pw["secret"], b"otp") == code.encode()
        assert code in server.sealer.open(sms["body"], b"sms").decode()
        with pytest.raises(ValueError):
            server.sealer.open(pw["secret"], b"sms")
        with pytest.raises(ValueError):
            Sealer(os.urandom(32)).open(pw["secret"], b"otp")
        # No text column holds it either.
        for table in ("passwords", "sms_outbox", "sessions"):
            for row in await server.store.fetchall(f"SELECT * FROM {table}"):
                for value in tuple(row):
                    if isinstance(value, str):
                        assert code not in value, (table, value)
    # Nor the database files (with WAL) once everything is flushed.
    for path in tmp_path.glob("radiusd.db*"):
        assert code.encode() not in path.read_bytes(), path.name
    assert "listening for auth" in caplog.text  # the server's log was captured
    assert code not in caplog.text
    for record in caplog.records:
        assert code not in str(record.args or "")


async def test_key_file_is_generated_private(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock):
        pass
    mode = stat.S_IMODE((tmp_path / "radiusd.key").stat().st_mode)
    assert mode == 0o600
    db_mode = stat.S_IMODE((tmp_path / "radiusd.db").stat().st_mode)
    assert db_mode & 0o077 == 0


async def test_live_session_survives_restart_and_still_dies_at_stop(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code, klass = await log_in(server, nas)
        sid = nas.new_session_id()
        await acct(nas, "Start", sid, klass=klass)

    clock.advance(120)
    # A brand-new Server with a fresh config object on the same database and key file.
    from radiusd.testing.server import running_server

    async with running_server(loopback_config(tmp_path), clock) as server:
        nas2 = nas_of(server)
        answer = await enter(nas2, code)
        assert answer.code == ACCEPT
        assert answer.get("Class") == klass
        assert (await enter(nas2, code, chap=True)).code == ACCEPT
        assert (await enter(nas2, code, mac=OTHER_MAC)).code == REJECT
        await acct(nas2, "Interim-Update", sid, klass=klass, Acct_Session_Time=120)
        await acct(nas2, "Stop", sid, klass=klass, Acct_Session_Time=180)
        row = await session_row(server, sid)
        assert row["stopped_at"] is not None
        (pw,) = await password_rows(server)
        assert (pw["state"], pw["expire_reason"]) == ("expired", "stop")
        answer = await enter(nas2, code)
        assert answer.code == REJECT
        assert reply_message(answer) == EXPIRED_EN

    # And it stays dead after yet another restart (Rules §9).
    async with running_server(loopback_config(tmp_path), clock) as server:
        assert (await enter(nas_of(server), code)).code == REJECT


async def test_unclaimed_password_survives_restart_with_its_ttl(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock) as server:
        code = await request_code(server, nas_of(server))
    clock.advance(30)
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        # The cooldown is remembered too: no second SMS, the first code stays valid.
        answer = await get_password(nas)
        assert reply_message(answer) == "You can ask for a new password in 30 s"
        assert len(await sms_rows(server, PHONE)) == 1
        assert (await enter(nas, code)).code == ACCEPT


async def test_unclaimed_password_expires_across_restart(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock) as server:
        code = await request_code(server, nas_of(server))
    clock.advance(300)
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        assert (await enter(nas, code)).code == REJECT
        assert await sms_code(server, PHONE) == code  # it is still the only SMS


async def test_database_is_wal_and_migrated(tmp_path: Path, clock: ManualClock) -> None:
    from radiusd.store.migrations import MIGRATIONS

    async with otp_server(tmp_path, clock) as server:
        (mode,) = await server.store.fetchall("PRAGMA journal_mode")
        assert mode[0] == "wal"
        (version,) = await server.store.fetchall("SELECT MAX(version) FROM schema_version")
        assert version[0] == len(MIGRATIONS)
