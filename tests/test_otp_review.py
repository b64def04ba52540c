"""Regressions for an independent review (RADIUS and security): spoofed requests
cannot buy SMS (since issue 11 their wrong codes count like any other), Stop finds
the password whatever the NAS writes, device binding never fails open, a lost Stop
under a reused session id ends the old password, and a failed expiry is written again
when the NAS retransmits."""

from __future__ import annotations

from pathlib import Path

import pytest

from radiusd.clock import ManualClock
from radiusd.testing.nas import BadReply, NoReply
from tests.otp_support import (
    ACCEPT,
    PHONE,
    REJECT,
    TYPED,
    enter,
    get_password,
    log_in,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    request_code,
    sms_count,
)


def clients(require: object = "auto", address: object = ("127.0.0.1", "::1")) -> list[dict]:
    return [{"name": "hotspot", "address": list(address), "secret": "testing123",
             "require_message_authenticator": require}]


async def test_unsigned_get_password_without_the_secret_sends_no_sms(
        tmp_path: Path, clock: ManualClock) -> None:
    """H1: CHAP over "" and "no password" prove nothing about the shared secret."""
    async with otp_server(tmp_path, clock, clients=clients("auto")) as server:
        nas = nas_of(server, message_authenticator=False)
        spoofer = nas_of(server, message_authenticator=False, secret=b"not-the-secret")
        for sender in (nas, spoofer):
            for kwargs in ({"chap": True}, {}):
                pkt = sender.access_request(TYPED, "" if kwargs else None, **kwargs)
                try:
                    answer = await sender.send(pkt)
                except BadReply:
                    continue  # the spoofer cannot check our reply; what matters is no SMS
                assert answer.code == REJECT
                assert "sign" in reply_message(answer)
        assert await sms_count(server) == 0


async def test_unsigned_pap_get_password_proves_the_secret(
        tmp_path: Path, clock: ManualClock) -> None:
    """An all-zero PAP block can only be made with the secret: old RouterOS 6 works."""
    async with otp_server(tmp_path, clock, clients=clients("auto")) as server:
        nas = nas_of(server, message_authenticator=False)
        answer = await get_password(nas)
        assert reply_message(answer).startswith("Password sent by SMS")
        assert await sms_count(server) == 1


async def test_operator_vouched_nas_may_get_password_unsigned_with_chap(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, clients=clients(False)) as server:
        nas = nas_of(server, message_authenticator=False)
        answer = await get_password(nas, chap=True)
        assert reply_message(answer).startswith("Password sent by SMS")


async def test_unsigned_wrong_codes_count_even_from_a_sender_without_the_secret(
        tmp_path: Path, clock: ManualClock) -> None:
    """Issue 11: an unsigned request proves nothing, so it is no free oracle either:
    its wrong code counts like any other (a burned code costs its owner one press;
    an uncounted guess would cost them their account)."""
    async with otp_server(tmp_path, clock, clients=clients("auto"),
                          otp={"max_attempts": 2}) as server:
        nas = nas_of(server, message_authenticator=False)
        code = await request_code(server, nas)
        spoofer = nas_of(server, message_authenticator=False, secret=b"not-the-secret")
        for chap in (True, False):
            with pytest.raises(BadReply):
                await spoofer.send(spoofer.access_request(TYPED, "111111", chap=chap))
        (pw,) = await password_rows(server)
        assert (pw["state"], pw["expire_reason"], pw["attempts"]) == ("expired", "attempts", 2)
        answer = await enter(nas, code)
        assert answer.code == REJECT


async def test_stop_without_class_finds_the_password_of_a_typed_number(
        tmp_path: Path, clock: ManualClock) -> None:
    """H2: the NAS echoes User-Name as typed ("8 701 ...") and no Class."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code, _ = await log_in(server, nas)
        sid = nas.new_session_id()
        for status in ("Start", "Stop"):
            await nas.send(nas.accounting_request(status, user=TYPED, session_id=sid))
        answer = await enter(nas, code)
        assert answer.code == REJECT
        assert reply_message(answer) == 'This password is no longer valid. Press "Get password"'
        row = await server.store.fetchone("SELECT login FROM sessions WHERE acct_session_id=?",
                                          (sid,))
        assert row["login"] == PHONE


async def test_binding_without_a_mac_never_means_any_device(
        tmp_path: Path, clock: ManualClock) -> None:
    """M2: a Calling-Station-Id that is an IP address binds as it is."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code = await request_code(server, nas, mac="10.0.0.5")
        assert (await enter(nas, code, mac="10.0.0.5")).code == ACCEPT
        assert (await enter(nas, code, mac="10.0.0.5")).code == ACCEPT
        assert (await enter(nas, code, mac="AA-BB-CC-00-00-01")).code == REJECT
        assert (await enter(nas, code, mac="10.0.0.6")).code == REJECT


async def test_auto_latches_for_the_whole_client_network(
        tmp_path: Path, clock: ManualClock) -> None:
    """M3: FreeRADIUS 3.2.5 latches per client, so a neighbour address cannot spoof."""
    async with otp_server(tmp_path, clock, ipv6=True,
                          clients=clients("auto", ("127.0.0.0/8", "::1"))) as server:
        signed = nas_of(server)
        await get_password(signed)
        unsigned6 = nas_of(server, family=6, message_authenticator=False, retries=0,
                           timeout=0.3)
        with pytest.raises(NoReply):
            await unsigned6.send(unsigned6.access_request(TYPED, ""))
        assert server.stats.dropped["missing_message_authenticator"] == 1


async def test_lost_stop_under_a_reused_session_id_ends_the_old_password(
        tmp_path: Path, clock: ManualClock) -> None:
    """M5: MikroTik reuses Acct-Session-Id after a reboot and the Stop was lost."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        old_code, old_class = await log_in(server, nas)
        sid = "81000001"
        await nas.send(nas.accounting_request("Start", user=PHONE, session_id=sid,
                                              extra=[("Class", old_class)]))
        clock.advance(120)
        new_code, new_class = await log_in(server, nas, mac="AA-BB-CC-DD-EE-09")
        await nas.send(nas.accounting_request("Start", user=PHONE, session_id=sid,
                                              mac="AA-BB-CC-DD-EE-09",
                                              extra=[("Class", new_class)]))
        assert (await enter(nas, old_code)).code == REJECT
        assert (await enter(nas, new_code, mac="AA-BB-CC-DD-EE-09")).code == ACCEPT
        rows = await server.store.fetchall(
            "SELECT terminate_cause, stopped_at FROM sessions WHERE acct_session_id=? "
            "ORDER BY id", (sid,))
        assert [r["terminate_cause"] for r in rows] == ["Lost-Stop", None]


async def test_huge_counters_are_stored_clamped_and_stop_still_kills(
        tmp_path: Path, clock: ManualClock) -> None:
    """M4: Gigawords of 2^31 overflowed SQLite INTEGER and lost the Stop."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code, klass = await log_in(server, nas)
        sid = nas.new_session_id()
        await nas.send(nas.accounting_request(
            "Stop", user=PHONE, session_id=sid, extra=[("Class", klass)],
            Acct_Output_Gigawords=2**31, Acct_Output_Octets=5))
        (pw,) = await password_rows(server)
        assert pw["state"] == "expired"
        assert (await enter(nas, code)).code == REJECT


async def test_repeated_stop_rewrites_an_expiry_the_database_missed(
        tmp_path: Path, clock: ManualClock) -> None:
    """M4: memory says expired, the database does not (a failed write): the next Stop
    carrying our Class writes the expiry again."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        _, klass = await log_in(server, nas)
        sid = nas.new_session_id()
        await nas.send(nas.accounting_request("Stop", user=PHONE, session_id=sid,
                                              extra=[("Class", klass)]))
        await server.store.write([("UPDATE passwords SET state='active'", ())])  # the miss
        await nas.send(nas.accounting_request("Stop", user=PHONE, session_id=sid,
                                              extra=[("Class", klass)], Acct_Session_Time=9))
        (pw,) = await password_rows(server)
        assert pw["state"] == "expired"


async def test_refused_requests_do_not_grow_the_rate_limit_tables(
        tmp_path: Path, clock: ManualClock) -> None:
    """M6: a refused "Get password" allocates nothing."""
    async with otp_server(tmp_path, clock, otp={"global_per_minute": 1}) as server:
        nas = nas_of(server)
        await get_password(nas)
        counters = ("SELECT COUNT(*) FROM limit_counts WHERE cap = ?")
        before = (await server.store.fetchone(counters, ("per_number_hourly",)))[0]
        for i in range(20):
            answer = await get_password(nas, f"8 701 555 00 {i:02d}",
                                        mac=f"AA-BB-CC-DD-00-{i:02d}")
            assert reply_message(answer) == "The service is busy. Try again in a minute"
        assert (await server.store.fetchone(counters, ("per_number_hourly",)))[0] == before
        assert (await server.store.fetchone(counters, ("per_device_hourly",)))[0] == 1


async def test_other_accounting_types_are_acknowledged(
        tmp_path: Path, clock: ManualClock) -> None:
    """L2: Failed (15) and Tunnel-* get an Accounting-Response, as from FreeRADIUS."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        pkt = nas.accounting_request("Start", user=PHONE, session_id="x1")
        pkt["Acct-Status-Type"] = 15
        assert (await nas.send(pkt)).code == 5


async def test_challenge_state_must_be_ours_and_for_this_login(
        tmp_path: Path, clock: ManualClock) -> None:
    """L3: the State of our Access-Challenge is checked and good once."""
    cl = clients()
    cl[0]["otp_request"] = "challenge"
    async with otp_server(tmp_path, clock, clients=cl) as server:
        nas = nas_of(server)
        answer = await get_password(nas)
        assert answer.code == 11
        state = answer.get("State")
        code = await request_code_from_outbox(server)
        forged = await enter(nas, code, extra=[("State", b"rdc.forged")])
        assert forged.code == REJECT
        ok = await enter(nas, code, extra=[("State", state)])
        assert ok.code == ACCEPT
        replay = await enter(nas, code, extra=[("State", state)])
        assert replay.code == REJECT


async def request_code_from_outbox(server: object) -> str:
    from tests.otp_support import sms_code

    return await sms_code(server, PHONE)  # type: ignore[arg-type]
