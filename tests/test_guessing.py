"""Every wrong guess counts (issue 11 item 1): whatever the request proves, from the
bound device or not, against an issued code or one already logged in; and the guess
budget per device and per NAS is bounded. Time moves with the injected clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from radiusd.clock import ManualClock
from tests.otp_support import (
    ACCEPT,
    OTHER_MAC,
    PHONE,
    REJECT,
    enter,
    log_in,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    request_code,
)

TOO_MANY = "Too many wrong tries. Ask for a new password"
WRONG = "Wrong password"


def _wrong(code: str) -> str:
    """A code that is not ``code``, of the same length."""
    return "0" * len(code) if code != "0" * len(code) else "1" * len(code)


def unsigned_client() -> list[dict[str, object]]:
    """RouterOS 6 with http-chap: the NAS never signs (`auto` never latches)."""
    return [{"name": "hotspot", "address": ["127.0.0.1", "::1"], "secret": "testing123",
             "require_message_authenticator": "auto"}]


async def test_unsigned_chap_guesses_are_counted_and_burn_the_code(
        tmp_path: Path, clock: ManualClock) -> None:
    """Finding: 5,000 wrong unsigned CHAP codes, then the right one was accepted."""
    async with otp_server(tmp_path, clock, clients=unsigned_client()) as server:
        nas = nas_of(server, message_authenticator=False)
        code = await request_code(server, nas)  # an all-zero PAP block proves the secret
        answers = [reply_message(await enter(nas, _wrong(code), chap=True)) for _ in range(5)]
        assert answers == [WRONG] * 4 + [TOO_MANY]
        answer = await enter(nas, code, chap=True)
        assert answer.code == REJECT
        (pw,) = await password_rows(server)
        assert (pw["state"], pw["expire_reason"], pw["attempts"]) == ("expired", "attempts", 5)


async def test_a_logged_in_code_is_burned_by_wrong_guesses_from_its_own_device(
        tmp_path: Path, clock: ManualClock) -> None:
    """Finding: a code already logged in had no attempt limit from its bound device."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code, _ = await log_in(server, nas)
        answers = [reply_message(await enter(nas, _wrong(code))) for _ in range(5)]
        assert answers == [WRONG] * 4 + [TOO_MANY]
        assert (await enter(nas, code)).code == REJECT  # re-authentication ends too
        (pw,) = await password_rows(server)
        assert (pw["state"], pw["expire_reason"]) == ("expired", "attempts")


async def test_without_calling_station_id_another_user_cannot_guess_a_live_code(
        tmp_path: Path, clock: ManualClock) -> None:
    """Finding: a NAS that sends no Calling-Station-Id makes all its users one device,
    so any of them could guess another user's live code without limit."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        code = await request_code(server, nas, mac="")
        assert (await enter(nas, code, mac="")).code == ACCEPT
        guesses = [f"{n:06d}" for n in range(5) if f"{n:06d}" != code][:4]
        for guess in guesses:  # another person at the same NAS, naming the victim
            assert reply_message(await enter(nas, guess, mac="")) == WRONG
        assert reply_message(await enter(nas, _wrong(code), mac="")) == TOO_MANY
        # The right code no longer opens anything: the 6th guess would have been blind.
        assert (await enter(nas, code, mac="")).code == REJECT


async def test_wrong_codes_from_another_device_count_against_a_live_code(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"max_attempts": 3}) as server:
        nas = nas_of(server)
        code, _ = await log_in(server, nas)
        # From another device even the right code is refused, and it counts.
        for guess in (code, _wrong(code)):
            assert reply_message(await enter(nas, guess, mac=OTHER_MAC)) == WRONG
        assert (await enter(nas, code)).code == ACCEPT  # its own device: still in
        assert reply_message(await enter(nas, _wrong(code), mac=OTHER_MAC)) == TOO_MANY
        assert (await enter(nas, code)).code == REJECT


async def test_a_wrong_code_counts_against_the_issued_and_the_logged_in_code(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"resend_after_seconds": 0}) as server:
        nas = nas_of(server)
        first, _ = await log_in(server, nas)
        second = await request_code(server, nas, mac=OTHER_MAC)
        wrong = next(f"{n:06d}" for n in range(10) if f"{n:06d}" not in (first, second))
        assert reply_message(await enter(nas, wrong, mac=OTHER_MAC)) == WRONG
        rows = await password_rows(server)
        assert [r["attempts"] for r in rows] == [1, 1]


async def test_guesses_per_device_are_capped_then_refused_without_comparing(
        tmp_path: Path, clock: ManualClock) -> None:
    otp = {"wrong_per_device_hourly": 3, "resend_after_seconds": 0}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        code = await request_code(server, nas)
        for n in range(3):  # numbers with no code at all count as well
            answer = await enter(nas, "123456", user=f"8 701 000 00 {n:02d}")
            assert reply_message(answer) == 'This password is no longer valid. Press "Get password"'
        # The right code, from the device that used up its budget: not compared.
        answer = await enter(nas, code)
        assert answer.code == REJECT
        assert reply_message(answer) == \
            "Too many wrong passwords from this device. Try again in 60 min"
        (pw,) = await password_rows(server)
        assert pw["attempts"] == 0  # nothing was compared, nothing counted
        # Another device is not limited.
        other = await request_code(server, nas, mac=OTHER_MAC)
        assert (await enter(nas, other, mac=OTHER_MAC)).code == ACCEPT
        clock.advance(3600)
        fresh = await request_code(server, nas)
        assert (await enter(nas, fresh)).code == ACCEPT


async def test_guesses_per_nas_are_capped_logged_once_and_logged_in_users_stay(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    otp = {"wrong_per_nas_hourly": 4, "wrong_per_device_hourly": 100}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        code, _ = await log_in(server, nas)
        caplog.set_level(logging.WARNING, "radiusd.otp")
        for n in range(4):  # a guesser rotating MACs
            await enter(nas, "123456", user="8 701 000 00 01", mac=f"02-00-00-00-00-{n:02d}")
        for n in range(3):
            answer = await enter(nas, "123456", user="8 701 000 00 01",
                                 mac=f"02-00-00-00-01-{n:02d}")
            assert reply_message(answer) == \
                "Too many wrong passwords at this access point. Try again in 60 min"
        capped = [r for r in caplog.records
                  if r.name == "radiusd.otp" and "wrong_per_nas_hourly" in r.getMessage()]
        assert len(capped) == 1
        assert "wrong_per_nas_hourly" in server.book.guesses.refused
        # A user already online re-authenticates as before.
        assert (await enter(nas, code)).code == ACCEPT
        (pw,) = await password_rows(server, PHONE)
        assert pw["state"] == "active"
