"""Accounting and Rules §8–§9 (issue 4 items 6–8): sessions are stored, the Class
ties them to the login, and the password dies with the session: Stop,
Accounting-On/Off, the reaper (stale sessions, max lifetime). Dead is dead forever."""

import itertools
from pathlib import Path

import pytest
from otp_support import (
    ACCEPT,
    EXPIRED_EN,
    MAC,
    MAC_HEX,
    OTHER_MAC,
    PHONE,
    REJECT,
    acct,
    enter,
    log_in,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    request_code,
    session_row,
)

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import SimulatedNAS

GIGA = 1 << 32
OTHER_PHONE, OTHER_TYPED = "+77471234567", "8 747 123 45 67"


async def test_start_interim_stop_are_stored_with_gigawords_and_cause(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    _, klass = await log_in(server, nas)
    sid = nas.new_session_id()
    t0 = clock.now()
    await acct(nas, "Start", sid, klass=klass, extra=[("Framed-IP-Address", "10.5.0.23")])
    row = await session_row(server, sid)
    assert (row["login"], row["device"], row["nas"], row["nas_address"]) == (
        PHONE, MAC_HEX, "localhost", "127.0.0.1")
    assert row["framed_ip"] == "10.5.0.23"
    assert row["started_at"] == t0 and row["stopped_at"] is None
    assert row["class_token"] == klass.decode()

    clock.advance(300)
    await acct(nas, "Interim-Update", sid, klass=klass, Acct_Session_Time=300,
               Acct_Input_Octets=5000, Acct_Input_Gigawords=2, Acct_Output_Octets=7000,
               Acct_Output_Gigawords=1, Acct_Input_Packets=40, Acct_Output_Packets=50)
    row = await session_row(server, sid)
    assert row["input_octets"] == 2 * GIGA + 5000
    assert row["output_octets"] == GIGA + 7000
    assert (row["input_packets"], row["output_packets"]) == (40, 50)
    assert row["updated_at"] == t0 + 300 and row["stopped_at"] is None
    assert (await enter(nas, await _code(server))).code == ACCEPT  # still alive

    clock.advance(100)
    await acct(nas, "Stop", sid, klass=klass, Acct_Session_Time=400,
               Acct_Input_Octets=6000, Acct_Input_Gigawords=2, Acct_Output_Octets=9000,
               Acct_Output_Gigawords=1, Acct_Input_Packets=45, Acct_Output_Packets=60,
               Acct_Terminate_Cause=4)  # Idle-Timeout
    row = await session_row(server, sid)
    assert row["stopped_at"] == t0 + 400
    assert row["session_time"] == 400
    assert row["input_octets"] == 2 * GIGA + 6000
    assert row["output_octets"] == GIGA + 9000
    assert row["terminate_cause"] == "Idle-Timeout"
    assert row["started_at"] == t0
    (sessions,) = await server.store.fetchall("SELECT COUNT(*) AS n FROM sessions")
    assert sessions["n"] == 1


async def _code(server: Server, phone: str = PHONE) -> str:
    from otp_support import sms_code

    return await sms_code(server, phone)


@pytest.mark.parametrize("echo_class", [True, False], ids=["class-echoed", "no-class"])
async def test_stop_expires_the_password_and_it_is_rejected_forever(
        server: Server, nas: SimulatedNAS, clock: ManualClock, echo_class: bool) -> None:
    code, klass = await log_in(server, nas)
    sid = nas.new_session_id()
    await acct(nas, "Start", sid, klass=klass if echo_class else None)
    clock.advance(120)
    await acct(nas, "Stop", sid, klass=klass if echo_class else None, Acct_Session_Time=120,
               Acct_Terminate_Cause=1)
    (pw,) = await password_rows(server)
    assert pw["state"] == "expired" and pw["expire_reason"] == "stop"
    assert pw["expired_at"] == clock.now()
    # Rules §9: the same device, PAP or CHAP, now or a day later: rejected.
    for advance in (0, 60, 86400 * 2):
        clock.advance(advance)
        for chap in (False, True):
            answer = await enter(nas, code, chap=chap)
            assert answer.code == REJECT
            assert reply_message(answer) == EXPIRED_EN
    await server.reaper.run_once()
    assert (await enter(nas, code)).code == REJECT


async def test_new_get_password_after_stop_sends_a_different_code(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    codes = []
    for _ in range(5):
        code, klass = await log_in(server, nas)
        codes.append(code)
        sid = nas.new_session_id()
        await acct(nas, "Start", sid, klass=klass)
        clock.advance(61)
        await acct(nas, "Stop", sid, klass=klass, Acct_Session_Time=61)
        assert (await enter(nas, code)).code == REJECT
    assert all(a != b for a, b in itertools.pairwise(codes))
    rows = await password_rows(server)
    assert [r["state"] for r in rows] == ["expired"] * 5


async def test_stop_with_acct_delay_time_expires_at_the_real_stop_time(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    _, klass = await log_in(server, nas)
    sid = nas.new_session_id()
    await acct(nas, "Start", sid, klass=klass)
    clock.advance(600)
    await acct(nas, "Stop", sid, klass=klass, Acct_Session_Time=500, Acct_Delay_Time=100)
    row = await session_row(server, sid)
    assert row["stopped_at"] == clock.now() - 100
    (pw,) = await password_rows(server)
    assert pw["expired_at"] == clock.now() - 100


async def test_stop_of_one_device_keeps_the_other_devices_password(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    code1, class1 = await log_in(server, nas, mac=MAC)
    clock.advance(60)
    code2, class2 = await log_in(server, nas, mac=OTHER_MAC)
    s1, s2 = nas.new_session_id(), nas.new_session_id()
    await acct(nas, "Start", s1, klass=class1, mac=MAC)
    await acct(nas, "Start", s2, klass=class2, mac=OTHER_MAC)
    await acct(nas, "Stop", s1, klass=class1, mac=MAC)
    assert (await enter(nas, code1, mac=MAC)).code == REJECT
    assert (await enter(nas, code2, mac=OTHER_MAC)).code == ACCEPT


async def test_late_stop_of_an_old_session_keeps_the_new_sessions_password(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    """A Stop that arrives again (new Acct-Delay-Time, so not a duplicate) for a
    session whose password is already dead must not kill the password of the
    same user's new session on the same device."""
    code1, class1 = await log_in(server, nas)
    s1 = nas.new_session_id()
    await acct(nas, "Start", s1, klass=class1)
    await acct(nas, "Stop", s1, klass=class1, Acct_Session_Time=30)
    clock.advance(60)
    code2, class2 = await log_in(server, nas)
    s2 = nas.new_session_id()
    await acct(nas, "Start", s2, klass=class2)
    await acct(nas, "Stop", s1, klass=class1, Acct_Session_Time=30, Acct_Delay_Time=40)
    assert (await enter(nas, code2)).code == ACCEPT
    assert (await enter(nas, code1)).code == REJECT


@pytest.mark.parametrize("status", ["Accounting-On", "Accounting-Off"])
async def test_accounting_on_off_expires_every_password_of_that_nas(
        tmp_path: Path, clock: ManualClock, status: str) -> None:
    clients = [
        {"name": "venue-a", "address": "127.0.0.1", "secret": "testing123"},
        {"name": "venue-b", "address": "::1", "secret": "testing123"},
    ]
    async with otp_server(tmp_path, clock, ipv6=True, clients=clients) as server:
        nas_a, nas_b = nas_of(server), nas_of(server, family=6)
        code1, class1 = await log_in(server, nas_a, mac=MAC)
        code2, class2 = await log_in(server, nas_a, OTHER_TYPED, OTHER_PHONE, mac=OTHER_MAC)
        code3, class3 = await log_in(server, nas_b, "8 700 123 45 67", "+77001234567",
                                     mac="AA-BB-CC-DD-EE-03")
        s1, s2 = nas_a.new_session_id(), nas_a.new_session_id()
        s3 = "venue-b-" + nas_b.new_session_id()  # each NAS counts from 1
        await acct(nas_a, "Start", s1, klass=class1, mac=MAC)
        await acct(nas_a, "Start", s2, user=OTHER_PHONE, klass=class2, mac=OTHER_MAC)
        await acct(nas_b, "Start", s3, user="+77001234567", klass=class3,
                   mac="AA-BB-CC-DD-EE-03")
        clock.advance(30)
        await acct(nas_a, status, None, user=None)
        assert (await enter(nas_a, code1, mac=MAC)).code == REJECT
        assert (await enter(nas_a, code2, OTHER_TYPED, mac=OTHER_MAC)).code == REJECT
        for sid in (s1, s2):
            row = await session_row(server, sid)
            assert row["stopped_at"] == clock.now()
            assert row["terminate_cause"] == "NAS-Reboot"
        reasons = {r["login"]: (r["state"], r["expire_reason"]) for r in
                   await server.store.fetchall("SELECT * FROM passwords")}
        assert reasons[PHONE] == ("expired", "nas-" + status.lower())
        assert reasons[OTHER_PHONE] == ("expired", "nas-" + status.lower())
        # The other venue's NAS did not restart: its user stays online.
        assert reasons["+77001234567"] == ("active", None)
        assert (await session_row(server, s3))["stopped_at"] is None
        answer = await enter(nas_b, code3, "8 700 123 45 67", mac="AA-BB-CC-DD-EE-03")
        assert answer.code == ACCEPT


async def test_accounting_on_expires_passwords_when_nas_ip_differs_from_source(
        tmp_path: Path, clock: ManualClock) -> None:
    """A NAS names itself with NAS-IP-Address (its LAN address, or behind NAT): the
    login and its Accounting-On must be matched the same way."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server, nas_ip="192.0.2.10")
        code, klass = await log_in(server, nas)
        sid = nas.new_session_id()
        await acct(nas, "Start", sid, klass=klass)
        await acct(nas, "Accounting-On", None, user=None)
        assert (await session_row(server, sid))["terminate_cause"] == "NAS-Reboot"
        assert (await enter(nas, code)).code == REJECT


async def test_reaper_closes_stale_sessions_and_expires_their_passwords(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    code, klass = await log_in(server, nas)
    sid = nas.new_session_id()
    await acct(nas, "Start", sid, klass=klass)
    t_update = clock.now()
    stale = server.config.accounting.stale_after()
    assert stale == 3 * 300 + 60
    clock.advance(stale - 1)
    assert await server.reaper.run_once() == 0
    assert (await enter(nas, code)).code == ACCEPT
    clock.advance(2)
    assert await server.reaper.run_once() > 0
    row = await session_row(server, sid)
    assert row["stopped_at"] == t_update
    assert row["terminate_cause"] == "Stale"
    (pw,) = await password_rows(server)
    assert (pw["state"], pw["expire_reason"]) == ("expired", "stale_session")
    answer = await enter(nas, code)
    assert answer.code == REJECT
    assert reply_message(answer) == EXPIRED_EN


async def test_reaper_leaves_sessions_with_recent_interim_updates(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    code, klass = await log_in(server, nas)
    sid = nas.new_session_id()
    await acct(nas, "Start", sid, klass=klass)
    for minute in range(1, 6):
        clock.advance(300)
        await acct(nas, "Interim-Update", sid, klass=klass, Acct_Session_Time=300 * minute)
        await server.reaper.run_once()
    assert (await session_row(server, sid))["stopped_at"] is None
    assert (await enter(nas, code)).code == ACCEPT


async def test_reaper_honours_stale_after_seconds(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, accounting={"stale_after_seconds": 100}) as server:
        nas = nas_of(server)
        code, klass = await log_in(server, nas)
        sid = nas.new_session_id()
        await acct(nas, "Start", sid, klass=klass)
        clock.advance(101)
        await server.reaper.run_once()
        assert (await session_row(server, sid))["terminate_cause"] == "Stale"
        assert (await enter(nas, code)).code == REJECT


async def test_reaper_expires_passwords_past_max_lifetime_even_with_a_live_session(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"max_lifetime_seconds": 3600}) as server:
        nas = nas_of(server)
        code, klass = await log_in(server, nas)
        assert (await enter(nas, code)).get("Session-Timeout") == 3600
        sid = nas.new_session_id()
        await acct(nas, "Start", sid, klass=klass)
        for _ in range(12):
            clock.advance(300)
            await acct(nas, "Interim-Update", sid, klass=klass)
        await server.reaper.run_once()
        (pw,) = await password_rows(server)
        assert (pw["state"], pw["expire_reason"]) == ("expired", "max_lifetime")
        assert (await enter(nas, code)).code == REJECT


async def test_max_lifetime_is_enforced_at_login_without_the_reaper(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"max_lifetime_seconds": 3600}) as server:
        nas = nas_of(server)
        code, _ = await log_in(server, nas)
        clock.advance(3600)
        answer = await enter(nas, code)
        assert answer.code == REJECT
        assert reply_message(answer) == EXPIRED_EN


async def test_reaper_expires_unclaimed_passwords_past_ttl(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    code = await request_code(server, nas)
    clock.advance(299)
    await server.reaper.run_once()
    assert (await password_rows(server))[0]["state"] == "issued"
    clock.advance(1)
    await server.reaper.run_once()
    (pw,) = await password_rows(server)
    assert (pw["state"], pw["expire_reason"]) == ("expired", "ttl")
    clock.advance(-100)
    assert (await enter(nas, code)).code == REJECT


async def test_accounting_for_unknown_session_is_stored_and_answered(
        server: Server, nas: SimulatedNAS) -> None:
    sid = nas.new_session_id()
    await acct(nas, "Interim-Update", sid, user=PHONE, mac=MAC, Acct_Session_Time=10)
    row = await session_row(server, sid)
    assert row["login"] == PHONE and row["stopped_at"] is None


async def test_session_id_reused_after_nas_reboot_is_a_new_session(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    """MikroTik restarts its Acct-Session-Id counter on reboot: keyed like FreeRADIUS's
    Acct-Unique-Session-Id, the old closed session is kept beside the new one."""
    _, class1 = await log_in(server, nas)
    await acct(nas, "Start", "81a00001", klass=class1)
    await acct(nas, "Stop", "81a00001", klass=class1, Acct_Session_Time=50,
               Acct_Input_Octets=111)
    clock.advance(3600)
    code2, class2 = await log_in(server, nas)
    await acct(nas, "Start", "81a00001", klass=class2)
    rows = await server.store.fetchall(
        "SELECT * FROM sessions WHERE acct_session_id = '81a00001' ORDER BY id")
    assert len(rows) == 2
    assert rows[0]["stopped_at"] is not None and rows[0]["input_octets"] == 111
    assert rows[1]["stopped_at"] is None and rows[1]["class_token"] == class2.decode()
    assert (await enter(nas, code2)).code == ACCEPT


async def test_same_session_id_at_two_nas_is_two_sessions(
        tmp_path: Path, clock: ManualClock) -> None:
    clients = [
        {"name": "venue-a", "address": "127.0.0.1", "secret": "testing123"},
        {"name": "venue-b", "address": "::1", "secret": "testing123"},
    ]
    async with otp_server(tmp_path, clock, ipv6=True, clients=clients) as server:
        nas_a, nas_b = nas_of(server), nas_of(server, family=6)
        await acct(nas_a, "Start", "00000001", user=PHONE)
        await acct(nas_b, "Start", "00000001", user=OTHER_PHONE, mac=OTHER_MAC)
        await acct(nas_a, "Stop", "00000001", user=PHONE, Acct_Session_Time=5)
        rows = await server.store.fetchall(
            "SELECT nas, login, stopped_at FROM sessions ORDER BY nas")
        assert [(r["nas"], r["login"], r["stopped_at"] is None) for r in rows] == [
            ("venue-a", PHONE, False), ("venue-b", OTHER_PHONE, True)]
