"""Abuse limits on "Get password" (issue 4 item 9): every refusal says why in a
Reply-Message and sends no SMS. Time moves with the injected clock."""

from pathlib import Path
from typing import Any

import pytest
from otp_support import (
    PHONE,
    REJECT,
    SENT_EN,
    get_password,
    nas_of,
    otp_server,
    reply_message,
    sms_count,
)

from radiusd.clock import ManualClock

NUMBER_LIMIT = "Too many passwords for this number. Try again later"
DEVICE_LIMIT = "Too many requests from this device. Try again later"
BUSY = "The service is busy. Try again in a minute"


def _number(i: int) -> str:
    return f"8 701 000 {i // 100:02d} {i % 100:02d}"


async def _press(nas: Any, user: str = "8 701 234 56 78", mac: str = "AA-BB-CC-DD-EE-01") -> str:
    answer = await get_password(nas, user, mac=mac)
    assert answer.code == REJECT
    return reply_message(answer)


async def test_resend_cooldown_tells_how_long_to_wait(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        assert await _press(nas) == SENT_EN
        assert await _press(nas) == "You can ask for a new password in 60 s"
        clock.advance(45)
        assert await _press(nas) == "You can ask for a new password in 15 s"
        # Another way of typing the same number is the same number.
        assert await _press(nas, "+7 (701) 234-56-78") == "You can ask for a new password in 15 s"
        assert await sms_count(server) == 1
        clock.advance(15)
        assert await _press(nas) == SENT_EN
        assert await sms_count(server) == 2


async def test_resend_cooldown_follows_config(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"resend_after_seconds": 120}) as server:
        nas = nas_of(server)
        await _press(nas)
        clock.advance(60)
        assert await _press(nas) == "You can ask for a new password in 60 s"
        clock.advance(60)
        assert await _press(nas) == SENT_EN


async def test_per_number_hourly_cap(tmp_path: Path, clock: ManualClock) -> None:
    otp = {"resend_after_seconds": 0, "per_number_hourly": 3}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        for i in range(3):
            assert await _press(nas, mac=f"AA-BB-CC-DD-EE-{i:02d}") == SENT_EN
            clock.advance(60)
        assert await _press(nas, mac="AA-BB-CC-DD-EE-99") == NUMBER_LIMIT
        assert await sms_count(server) == 3
        clock.advance(3600 - 180)  # the first one leaves the window
        assert await _press(nas) == SENT_EN
        assert await _press(nas) == NUMBER_LIMIT
        assert await sms_count(server) == 4


async def test_per_number_daily_cap(tmp_path: Path, clock: ManualClock) -> None:
    otp = {"resend_after_seconds": 0, "per_number_hourly": 2, "per_number_daily": 3}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        assert await _press(nas) == SENT_EN
        assert await _press(nas) == SENT_EN
        assert await _press(nas) == NUMBER_LIMIT  # hourly
        clock.advance(3600)
        assert await _press(nas) == SENT_EN
        assert await _press(nas) == NUMBER_LIMIT  # the day is full (3)
        clock.advance(3600)
        assert await _press(nas) == NUMBER_LIMIT  # hours later, still full
        assert await sms_count(server) == 3
        clock.advance(86400 - 7200)
        assert await _press(nas) == SENT_EN
        assert await sms_count(server) == 4


async def test_per_device_cap_across_numbers(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"per_device_hourly": 2}) as server:
        nas = nas_of(server)
        assert await _press(nas, _number(1), mac="AA:BB:CC:DD:EE:01") == \
            "Password sent by SMS to +7 701 *** ** 01"
        assert await _press(nas, _number(2), mac="aabb.ccdd.ee01") == \
            "Password sent by SMS to +7 701 *** ** 02"
        # Same device written another way.
        assert await _press(nas, _number(3), mac="aa-bb-cc-dd-ee-01") == DEVICE_LIMIT
        # Another device is not limited.
        assert (await _press(nas, _number(3), mac="AA-BB-CC-DD-EE-02")).startswith("Password sent")
        assert await sms_count(server) == 3
        clock.advance(3600)
        assert (await _press(nas, _number(4), mac="AA-BB-CC-DD-EE-01")).startswith(
            "Password sent")


async def test_per_nas_cap_per_minute(tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"per_nas_minute": 3}) as server:
        nas = nas_of(server)
        for i in range(3):
            assert (await _press(nas, _number(i), mac=f"AA-BB-CC-DD-EE-{i:02d}")).startswith(
                "Password sent")
        assert await _press(nas, _number(9), mac="AA-BB-CC-DD-EE-09") == BUSY
        assert await sms_count(server) == 3
        clock.advance(60)
        assert (await _press(nas, _number(9), mac="AA-BB-CC-DD-EE-09")).startswith(
            "Password sent")


async def test_global_budget_per_minute_across_nas(tmp_path: Path, clock: ManualClock) -> None:
    clients = [
        {"name": "venue-a", "address": "127.0.0.1", "secret": "testing123"},
        {"name": "venue-b", "address": "::1", "secret": "testing123"},
    ]
    otp = {"per_nas_minute": 2, "global_per_minute": 3}
    async with otp_server(tmp_path, clock, ipv6=True, clients=clients, otp=otp) as server:
        nas_a, nas_b = nas_of(server), nas_of(server, family=6)
        assert (await _press(nas_a, _number(1), mac="AA-BB-CC-DD-EE-01")).startswith("Password")
        assert (await _press(nas_a, _number(2), mac="AA-BB-CC-DD-EE-02")).startswith("Password")
        assert await _press(nas_a, _number(3), mac="AA-BB-CC-DD-EE-03") == BUSY  # per NAS
        assert (await _press(nas_b, _number(4), mac="AA-BB-CC-DD-EE-04")).startswith("Password")
        assert await _press(nas_b, _number(5), mac="AA-BB-CC-DD-EE-05") == BUSY  # global
        assert await sms_count(server) == 3
        clock.advance(60)
        assert (await _press(nas_b, _number(5), mac="AA-BB-CC-DD-EE-05")).startswith("Password")


@pytest.mark.parametrize("chap", [False, True], ids=["pap", "chap"])
async def test_refusals_do_not_touch_the_live_password(
        tmp_path: Path, clock: ManualClock, chap: bool) -> None:
    """A refused press must not supersede or otherwise change the code already sent."""
    from otp_support import ACCEPT, enter, sms_code

    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        await _press(nas)
        code = await sms_code(server, PHONE)
        answer = await get_password(nas, chap=chap)
        assert reply_message(answer).startswith("You can ask for a new password")
        assert (await enter(nas, code, chap=chap)).code == ACCEPT
        assert await sms_count(server) == 1


async def test_limits_survive_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    otp = {"resend_after_seconds": 0, "per_number_hourly": 2}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        assert await _press(nas) == SENT_EN
        assert await _press(nas) == SENT_EN
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        assert await _press(nas) == NUMBER_LIMIT
        assert await sms_count(server) == 2
