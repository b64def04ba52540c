"""Rules §7: the password from the SMS logs the user in (issue 4 items 3–5):
PAP and CHAP, the Access-Accept's attributes, binding to one device, re-auth while the
session lives, TTL, superseding and burning after too many wrong tries."""

from pathlib import Path

import pytest
from otp_support import (
    ACCEPT,
    EXPIRED_EN,
    MAC_HEX,
    OTHER_MAC,
    PHONE,
    REJECT,
    enter,
    get_password,
    log_in,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    request_code,
    sms_code,
    sms_rows,
)

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import SimulatedNAS


def _wrong(code: str) -> str:
    return "".join(str((int(c) + 1) % 10) for c in code)


@pytest.mark.parametrize(("chap", "chap_challenge"), [
    (False, True), (True, True), (True, False),
], ids=["pap", "chap-with-challenge", "chap-request-authenticator"])
async def test_password_from_sms_logs_in_with_class_interim_and_session_timeout(
        server: Server, nas: SimulatedNAS, chap: bool, chap_challenge: bool) -> None:
    code = await request_code(server, nas)
    answer = await enter(nas, code, chap=chap, chap_challenge=chap_challenge)
    assert answer.code == ACCEPT
    klass = answer.get("Class")
    assert isinstance(klass, bytes) and klass.startswith(b"rd1.")
    assert answer.get("Acct-Interim-Interval") == 300
    assert answer.get("Session-Timeout") == 86400  # the password's max lifetime
    assert answer.get("Idle-Timeout") is None
    (pw,) = await password_rows(server)
    assert pw["state"] == "active"
    assert pw["device"] == MAC_HEX
    assert pw["nas"] == "localhost"
    assert pw["class_token"] == klass.decode()
    assert pw["claimed_at"] == pw["issued_at"]  # the clock did not move


async def test_wrong_chap_response_is_rejected(server: Server, nas: SimulatedNAS) -> None:
    code = await request_code(server, nas)
    answer = await enter(nas, _wrong(code), chap=True)
    assert answer.code == REJECT
    assert reply_message(answer) == "Wrong password"


async def test_configured_timeouts_are_sent_and_capped_by_max_lifetime(
        tmp_path: Path, clock: ManualClock) -> None:
    otp = {"session_timeout_seconds": 3600, "idle_timeout_seconds": 600,
           "max_lifetime_seconds": 7200}
    async with otp_server(tmp_path, clock, otp=otp, accounting={
            "interim_interval_seconds": 120}) as server:
        nas = nas_of(server)
        code = await request_code(server, nas)
        answer = await enter(nas, code)
        assert answer.get("Session-Timeout") == 3600
        assert answer.get("Idle-Timeout") == 600
        assert answer.get("Acct-Interim-Interval") == 120
        clock.advance(5400)  # 1800 s of the password's life left
        answer = await enter(nas, code)
        assert answer.code == ACCEPT
        assert answer.get("Session-Timeout") == 1800


async def test_calling_station_id_formats_are_one_device(
        server: Server, nas: SimulatedNAS) -> None:
    code = await request_code(server, nas, mac="AA:BB:CC:DD:EE:FF")
    for written in ("aa-bb-cc-dd-ee-ff", "aabb.ccdd.eeff", "AA:BB:CC:DD:EE:FF", "AABBCCDDEEFF"):
        answer = await enter(nas, code, mac=written)
        assert answer.code == ACCEPT, (written, reply_message(answer))
    (pw,) = await password_rows(server)
    assert pw["device"] == "aabbccddeeff"
    answer = await enter(nas, code, mac="11:22:33:44:55:66")
    assert answer.code == REJECT
    assert reply_message(answer) == "Wrong password"  # no hint that the code was right


async def test_same_device_reauthenticates_while_the_session_lives(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    """pfSense re-authenticates every minute; Session-Timeout re-auth does too."""
    code, klass = await log_in(server, nas)
    for _ in range(10):
        clock.advance(60)
        answer = await enter(nas, code, chap=True)
        assert answer.code == ACCEPT
        assert answer.get("Class") == klass  # one login, one Class
    clock.advance(3600)  # far beyond the unclaimed TTL: bound passwords do not use it
    assert (await enter(nas, code)).code == ACCEPT
    (pw,) = await password_rows(server)
    assert pw["state"] == "active"


async def test_other_device_is_rejected_and_does_not_hurt_the_owner(
        server: Server, nas: SimulatedNAS) -> None:
    code, _ = await log_in(server, nas)
    for chap in (False, True):
        answer = await enter(nas, code, mac=OTHER_MAC, chap=chap)
        assert answer.code == REJECT
        # The same answer as a wrong code: a guesser learns nothing (Rules §7-§8).
        assert reply_message(answer) == "Wrong password"
    assert (await enter(nas, code)).code == ACCEPT


async def test_wrong_password_is_rejected(server: Server, nas: SimulatedNAS) -> None:
    code = await request_code(server, nas)
    answer = await enter(nas, _wrong(code))
    assert answer.code == REJECT
    assert reply_message(answer) == "Wrong password"
    assert (await enter(nas, code)).code == ACCEPT


async def test_login_without_any_password_requested_says_get_one(
        server: Server, nas: SimulatedNAS) -> None:
    answer = await enter(nas, "123456")
    assert answer.code == REJECT
    assert reply_message(answer) == EXPIRED_EN


async def test_unclaimed_password_expires_after_ttl(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    code = await request_code(server, nas)
    clock.advance(300)  # [otp] ttl_seconds default
    answer = await enter(nas, code)
    assert answer.code == REJECT
    assert reply_message(answer) == EXPIRED_EN
    (pw,) = await password_rows(server)
    assert pw["state"] == "expired"
    assert pw["expire_reason"] == "ttl"
    clock.advance(-200)  # even if the clock steps back, it stays dead (Rules §9)
    assert (await enter(nas, code)).code == REJECT


async def test_password_claimed_just_before_ttl_works(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"ttl_seconds": 120}) as server:
        nas = nas_of(server)
        code = await request_code(server, nas)
        clock.advance(119)
        assert (await enter(nas, code)).code == ACCEPT
        clock.advance(1000)  # once bound, the TTL no longer applies
        assert (await enter(nas, code)).code == ACCEPT


async def test_new_request_supersedes_the_unclaimed_one(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    old = await request_code(server, nas)
    clock.advance(60)  # [otp] resend_after_seconds default
    new = await request_code(server, nas)
    assert new != old
    assert len(await sms_rows(server, PHONE)) == 2
    answer = await enter(nas, old)
    assert answer.code == REJECT
    first, second = await password_rows(server)
    assert first["state"] == "expired" and first["expire_reason"] == "superseded"
    assert second["state"] == "issued"
    assert (await enter(nas, new)).code == ACCEPT


async def test_max_attempts_burns_the_password(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"max_attempts": 3}) as server:
        nas = nas_of(server)
        code = await request_code(server, nas)
        for expected in ("Wrong password", "Wrong password",
                         "Too many wrong tries. Ask for a new password"):
            answer = await enter(nas, _wrong(code), chap=True)
            assert answer.code == REJECT
            assert reply_message(answer) == expected
        answer = await enter(nas, code)  # the right one, too late
        assert answer.code == REJECT
        assert reply_message(answer) == EXPIRED_EN
        (pw,) = await password_rows(server)
        assert pw["state"] == "expired"
        assert pw["expire_reason"] == "attempts"
        assert pw["attempts"] == 3
        # A new password can be asked for (after the cooldown) and works.
        clock.advance(60)
        fresh = await request_code(server, nas)
        assert fresh != code
        assert (await enter(nas, fresh)).code == ACCEPT


async def test_default_max_attempts_is_five(server: Server, nas: SimulatedNAS) -> None:
    code = await request_code(server, nas)
    messages = [reply_message(await enter(nas, _wrong(code))) for _ in range(5)]
    assert messages == ["Wrong password"] * 4 + ["Too many wrong tries. Ask for a new password"]


async def test_code_length_follows_config(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"length": 8}) as server:
        nas = nas_of(server)
        code = await request_code(server, nas)
        assert len(code) == 8 and code.isdigit()
        assert (await enter(nas, code, chap=True)).code == ACCEPT


async def test_get_password_while_logged_in_issues_a_new_one_and_keeps_the_session(
        server: Server, nas: SimulatedNAS, clock: ManualClock) -> None:
    code, _ = await log_in(server, nas)
    clock.advance(60)
    assert (await get_password(nas)).code == REJECT
    fresh = await sms_code(server, PHONE)
    assert fresh != code
    assert (await enter(nas, code)).code == ACCEPT  # the live session's password
    assert (await enter(nas, fresh, mac=OTHER_MAC)).code == ACCEPT  # a second device
    assert {r["device"] for r in await password_rows(server)} == {MAC_HEX, "aabbccddee02"}
