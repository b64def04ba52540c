"""Issue 15: several venues on one server, each with its own SMS (provider, sender,
text), language, limits and session profile, chosen by the client a request comes
from. Driven through the real server on loopback: each client is a loopback address
of its own (127.0.0.1, .2, .3), the simulated NAS sends from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from otp_support import (
    ACCEPT,
    REJECT,
    acct,
    enter,
    get_password,
    reply_message,
    sms_code,
    sms_count,
)

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.config import ConfigError, load
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import eventually, loopback_config, nas_for, running_server
from radiusd.venues import rate_attributes

CAFE, AIRPORT, LOUNGE = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def venue_config(tmp: Path, **venue_overrides: Any) -> Any:
    """Two venues: a café (Russian, the top-level provider, MikroTik) and an airport
    (English, its own provider, a CoovaChilli and a WISPr NAS)."""
    cafe = {"name": "cafe", "clients": ["cafe-mikrotik"], "language": "ru",
            "sms": {"sender": "CAFE", "templates": {"ru": "Кафе, пароль Wi-Fi: {code}"}},
            "session_timeout_seconds": 1800, "rate_limit": "2M/8M"}
    airport = {"name": "airport", "clients": ["airport-chilli", "lounge-wispr"],
               "language": "en", "resend_after_seconds": 0, "per_number_daily": 1,
               "sms": {"provider": "airport", "sender": "AIRPORT",
                       "templates": {"en": "Airport Wi-Fi code {code}"}},
               "idle_timeout_seconds": 600, "rate_limit": "512k/1M",
               **venue_overrides}
    return loopback_config(
        tmp,
        clients=[
            {"name": "cafe-mikrotik", "address": CAFE, "secret": "testing123",
             "vendor": "mikrotik"},
            {"name": "airport-chilli", "address": AIRPORT, "secret": "testing123",
             "vendor": "coovachilli"},
            {"name": "lounge-wispr", "address": LOUNGE, "secret": "testing123",
             "vendor": "wispr"},
        ],
        sms={"providers": {"airport": {"provider": "file",
                                       "file": {"path": str(tmp / "airport.jsonl")}}}},
        venues=[cafe, airport],
    )


def nas_at(server: Server, source: str) -> SimulatedNAS:
    return nas_for(server, source=source, timeout=1.0, retries=2)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_each_venue_sends_its_own_sms_in_its_own_language(
        tmp_path: Path, clock: ManualClock) -> None:
    async with running_server(venue_config(tmp_path), clock) as server:
        cafe, airport = nas_at(server, CAFE), nas_at(server, AIRPORT)

        answer = await get_password(cafe, "8 701 234 56 78")
        assert answer.code == REJECT
        assert reply_message(answer) == "Пароль отправлен по SMS на +7 701 *** ** 78"
        answer = await get_password(airport, "8 701 765 43 21")
        assert reply_message(answer) == "Password sent by SMS to +7 701 *** ** 21"

        await eventually(lambda: lines(tmp_path / "outbox.jsonl") != []
                         and lines(tmp_path / "airport.jsonl") != [])
        (at_cafe,) = lines(tmp_path / "outbox.jsonl")
        (at_airport,) = lines(tmp_path / "airport.jsonl")
        assert at_cafe["to"] == "+77012345678" and at_cafe["sender"] == "CAFE"
        assert at_cafe["text"].startswith("Кафе, пароль Wi-Fi: ")
        assert at_airport["to"] == "+77017654321" and at_airport["sender"] == "AIRPORT"
        assert at_airport["text"].startswith("Airport Wi-Fi code ")


async def test_each_client_gets_its_venue_profile_in_its_vendor_attributes(
        tmp_path: Path, clock: ManualClock) -> None:
    async with running_server(venue_config(tmp_path), clock) as server:
        for source, user, phone in ((CAFE, "8 701 111 11 11", "+77011111111"),
                                    (AIRPORT, "8 701 222 22 22", "+77012222222"),
                                    (LOUNGE, "8 701 333 33 33", "+77013333333")):
            nas = nas_at(server, source)
            assert (await get_password(nas, user)).code == REJECT
            answer = await enter(nas, await sms_code(server, phone), user)
            assert answer.code == ACCEPT, reply_message(answer)
            if source == CAFE:
                assert answer.get("Session-Timeout") == 1800
                assert answer.get("Mikrotik-Rate-Limit") == "2M/8M"
                assert answer.get("Idle-Timeout") is None
            elif source == AIRPORT:
                assert answer.get("Idle-Timeout") == 600
                assert answer.get("ChilliSpot-Bandwidth-Max-Up") == 512
                assert answer.get("ChilliSpot-Bandwidth-Max-Down") == 1000
                assert answer.get("Mikrotik-Rate-Limit") is None
            else:
                assert answer.get("WISPr-Bandwidth-Max-Up") == 512_000
                assert answer.get("WISPr-Bandwidth-Max-Down") == 1_000_000


async def test_each_venue_applies_its_own_limits(tmp_path: Path, clock: ManualClock) -> None:
    async with running_server(venue_config(tmp_path), clock) as server:
        airport, lounge, cafe = (nas_at(server, a) for a in (AIRPORT, LOUNGE, CAFE))
        user = "8 701 444 44 44"
        assert reply_message(await get_password(airport, user)).startswith("Password sent")
        # The airport's per_number_daily = 1 holds at its other NAS too...
        assert reply_message(await get_password(lounge, user, mac="AA-BB-CC-DD-EE-07")) == \
            "Too many passwords for this number. Try again later"
        # ...while the café keeps the top-level ones (10 a day), in its language.
        assert reply_message(await get_password(cafe, user)).startswith("Пароль отправлен")


async def test_a_client_in_no_venue_keeps_the_top_level_settings(
        tmp_path: Path, clock: ManualClock) -> None:
    config = loopback_config(
        tmp_path,
        clients=[{"name": "lobby", "address": CAFE, "secret": "testing123",
                  "vendor": "mikrotik"},
                 {"name": "cafe", "address": AIRPORT, "secret": "testing123"}],
        venues=[{"name": "cafe", "clients": ["cafe"], "language": "ru",
                 "rate_limit": "1M/1M"}])
    async with running_server(config, clock) as server:
        nas = nas_at(server, CAFE)
        answer = await get_password(nas, "8 701 234 56 78")
        assert reply_message(answer) == "Password sent by SMS to +7 701 *** ** 78"
        answer = await enter(nas, await sms_code(server, "+77012345678"), "8 701 234 56 78")
        assert answer.code == ACCEPT
        assert answer.get("Mikrotik-Rate-Limit") is None
        await eventually(lambda: lines(tmp_path / "outbox.jsonl") != [])
        assert "sender" not in lines(tmp_path / "outbox.jsonl")[0]


def test_rate_limit_units_per_vendor() -> None:
    rate = (2_000_000, 8_000_000)
    assert rate_attributes("mikrotik", rate) == [("Mikrotik-Rate-Limit", "2M/8M")]
    assert rate_attributes("wispr", rate) == [("WISPr-Bandwidth-Max-Up", 2_000_000),
                                              ("WISPr-Bandwidth-Max-Down", 8_000_000)]
    assert rate_attributes("coovachilli", rate) == [("ChilliSpot-Bandwidth-Max-Up", 2000),
                                                    ("ChilliSpot-Bandwidth-Max-Down", 8000)]
    assert rate_attributes("none", rate) == []
    assert rate_attributes("mikrotik", (1_500, 64_000)) == [("Mikrotik-Rate-Limit",
                                                             "1500/64k")]


@pytest.mark.parametrize(("venues", "message"), [
    ('[[venues]]\nname = "a"\nclients = ["nope"]\n',
     "venues[0].clients: 'nope' is not the name of a [[clients]] table"),
    ('[[venues]]\nname = "a"\nclients = ["hotspot"]\n'
     '[[venues]]\nname = "b"\nclients = ["hotspot"]\n',
     "venues[1].clients: client 'hotspot' is already in venue 'a'; a client belongs "
     "to one venue"),
    ('[[venues]]\nname = "a"\n[[venues]]\nname = "a"\n',
     "venues[1].name: venue 'a' is listed twice"),
    ('[[venues]]\nname = "a"\nsms = { provider = "x" }\n',
     "venues[0].sms.provider: 'x' is not a [sms.providers.x] section"),
    ('[[venues]]\nname = "a"\nrate_limit = "fast"\n',
     "venues[0].rate_limit: 'fast': write UP/DOWN in bit/s with k, M or G, e.g. \"2M/8M\""),
    ('[[venues]]\nname = "a"\ntimezone = "Mars/Base"\n',
     "venues[0].timezone: 'Mars/Base' is not a time zone name such as \"Asia/Almaty\""),
    ('[[venues]]\nname = "a"\nsms_daily_budget = 0\n',
     "venues[0].sms_daily_budget: must be greater than or equal to 1"),
    ('[[venues]]\nname = "a"\nper_number_dayly = 3\n',
     "venues[0].per_number_dayly: unknown key"),
])
def test_venue_config_errors_name_the_key(tmp_path: Path, venues: str, message: str) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text('[[clients]]\nname = "hotspot"\naddress = "10.0.0.0/24"\n'
                    'secret = "a-long-enough-secret-1"\n' + venues)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert f"{path}: {message}" in str(raised.value).splitlines()[0]


async def test_daily_time_is_what_is_left_today_and_refused_when_used_up(
        tmp_path: Path, clock: ManualClock) -> None:
    # 2026-12-06 04:00 UTC is 09:00 in Almaty: the venue's day has 15 hours left.
    clock.set(1_796_529_600.0)
    config = loopback_config(
        tmp_path,
        clients=[{"name": "library", "address": CAFE, "secret": "testing123"}],
        venues=[{"name": "library", "clients": ["library"], "daily_time_seconds": 3600,
                 "timezone": "Asia/Almaty"}])
    user, phone, used_up = "8 701 234 56 78", "+77012345678", \
        "Your Wi-Fi time for today is used up. Come back tomorrow"
    async with running_server(config, clock) as server:
        nas = nas_at(server, CAFE)

        async def session(expect_timeout: int, online: int) -> None:
            assert (await get_password(nas, user)).code == REJECT
            answer = await enter(nas, await sms_code(server, phone), user)
            assert answer.code == ACCEPT, reply_message(answer)
            assert answer.get("Session-Timeout") == expect_timeout
            sid = nas.new_session_id()
            klass = answer.get("Class")
            await acct(nas, "Start", sid, user=phone, klass=klass)
            clock.advance(online)
            await acct(nas, "Stop", sid, user=phone, klass=klass, Acct_Session_Time=online)
            clock.advance(60)  # the resend wait

        await session(3600, 1000)
        await session(2600, 2600)
        answer = await get_password(nas, user)
        assert reply_message(answer) == used_up
        assert await sms_count(server) == 2, "no SMS for a login that would be refused"
        clock.advance(15 * 3600)  # past midnight in Almaty
        await session(3600, 10)


def test_check_config_warns_when_a_rate_limit_reaches_no_vendor(tmp_path: Path) -> None:
    config = loopback_config(
        tmp_path,
        clients=[{"name": "plain", "address": CAFE, "secret": "testing123"}],
        venues=[{"name": "cafe", "clients": ["plain"], "rate_limit": "2M/8M"}])
    assert "venues (cafe): rate_limit '2M/8M' is not sent to client plain: set its " \
           'vendor = "mikrotik", "coovachilli" or "wispr"' in config.warnings()
