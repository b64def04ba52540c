"""SMS spend is bounded by default (issue 11 item 2): per NAS and server-wide daily
caps, a cap per range of numbers against pumping, one for other countries; the same
budgets for the HTTP API; a refused abuser uses up nobody else's budget; a cap that
protects cost is logged once and counted. Time moves with the injected clock."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.config import OtpConfig
from radiusd.http import HttpHandle, start_http, stop_http
from radiusd.testing.server import loopback_config, running_server
from tests.otp_support import REJECT, get_password, nas_of, otp_server, reply_message, sms_count

UNAVAILABLE = "SMS login is not available here today. Please ask the staff"
NUMBER_LIMIT = "Too many passwords for this number. Try again later"
BUSY = "The service is busy. Try again in a minute"


OPERATORS = ("700", "701", "702", "705", "706", "707", "708", "747", "771", "775")


def _number(i: int) -> str:
    """A Kazakh mobile number of another operator (another range) for each i < 10."""
    return f"8 {OPERATORS[i]} 123 45 67"


def _mac(i: int) -> str:
    return f"02-00-00-{i // 10000:02d}-{i // 100 % 100:02d}-{i % 100:02d}"


async def _press(nas: object, user: str, i: int) -> str:
    answer = await get_password(nas, user, mac=_mac(i))  # type: ignore[arg-type]
    assert answer.code == REJECT
    return reply_message(answer)


def test_defaults_bound_what_sms_may_cost_a_day() -> None:
    cfg = OtpConfig()
    assert (cfg.per_nas_daily, cfg.global_daily) == (2000, 10000)
    assert (cfg.per_prefix_daily, cfg.foreign_daily) == (50, 200)


async def test_per_nas_daily_cap_logged_once_counted_and_freed_after_a_day(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    async with otp_server(tmp_path, clock, otp={"per_nas_daily": 3}) as server:
        nas = nas_of(server)
        caplog.set_level(logging.WARNING, "radiusd.otp")
        for i in range(3):
            assert (await _press(nas, _number(i), i)).startswith("Password sent")
            clock.advance(60)
        for i in range(3, 6):
            assert await _press(nas, _number(i), i) == UNAVAILABLE
        assert await sms_count(server) == 3
        lines = [r.getMessage() for r in caplog.records
                 if r.name == "radiusd.otp" and "per_nas_daily" in r.getMessage()]
        assert len(lines) == 1 and "nas localhost" in lines[0]
        assert server.book.limits.refused["per_nas_daily"] == 3
        clock.advance(86400 - 180)
        assert (await _press(nas, _number(9), 9)).startswith("Password sent")


async def test_per_nas_daily_cap_holds_across_a_restart(tmp_path: Path,
                                                       clock: ManualClock) -> None:
    otp = {"per_nas_daily": 2}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        for i in range(2):
            assert (await _press(nas, _number(i), i)).startswith("Password sent")
    async with otp_server(tmp_path, clock, otp=otp) as server:
        assert await _press(nas_of(server), _number(5), 5) == UNAVAILABLE


async def test_global_daily_cap_counts_every_nas(tmp_path: Path, clock: ManualClock) -> None:
    clients = [{"name": "cafe", "address": "127.0.0.1", "secret": "testing123"},
               {"name": "library", "address": "::1", "secret": "testing123"}]
    async with otp_server(tmp_path, clock, ipv6=True, clients=clients,
                          otp={"global_daily": 3}) as server:
        cafe, library = nas_of(server), nas_of(server, family=6)
        assert (await _press(cafe, _number(1), 1)).startswith("Password sent")
        assert (await _press(library, _number(2), 2)).startswith("Password sent")
        assert (await _press(library, _number(3), 3)).startswith("Password sent")
        assert await _press(cafe, _number(4), 4) == UNAVAILABLE
        assert await _press(library, _number(5), 5) == UNAVAILABLE
        assert await sms_count(server) == 3


async def test_pumping_a_number_range_from_rotating_macs_leaves_the_nas_to_everyone_else(
        tmp_path: Path, clock: ManualClock) -> None:
    """Finding: rotating MACs defeated the per-device cap, and while someone pumped,
    every other user of that NAS was told "busy" (shipped defaults otherwise)."""
    async with otp_server(tmp_path, clock) as server:
        nas = nas_of(server)
        answers = [await _press(nas, f"+7 701 555 {i // 100:02d} {i % 100:02d}", i)
                   for i in range(70)]
        assert answers.count(NUMBER_LIMIT) == 20  # per_prefix_daily = 50 took the rest
        assert BUSY not in answers
        # Somebody else at the same NAS, the same minute: their SMS goes out.
        assert (await _press(nas, "8 777 123 45 67", 999)).startswith("Password sent")
        assert await sms_count(server) == 51
        assert server.book.limits.refused["per_prefix_daily"] == 20


async def test_foreign_numbers_have_a_daily_cap_of_their_own(tmp_path: Path,
                                                           clock: ManualClock) -> None:
    otp = {"allowed_regions": ["KZ", "UZ"], "foreign_daily": 2}
    async with otp_server(tmp_path, clock, otp=otp) as server:
        nas = nas_of(server)
        for i in range(2):
            assert (await _press(nas, f"+998 90 123 45 6{i}", i)).startswith("Password sent")
        assert await _press(nas, "+998 91 765 43 21", 3) == NUMBER_LIMIT
        assert server.book.limits.refused["foreign_daily"] == 1
        assert (await _press(nas, "8 701 123 45 67", 4)).startswith("Password sent")


@asynccontextmanager
async def with_http(tmp_path: Path, clock: ManualClock,
                    **otp: int) -> AsyncIterator[tuple[Server, HttpHandle]]:
    """The server on loopback with its HTTP side, `[otp]` overridden."""
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]}, otp=otp)
    async with running_server(config, clock) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            yield server, handle
        finally:
            await stop_http(handle)


async def test_the_http_api_spends_from_the_same_daily_budget(tmp_path: Path,
                                                            clock: ManualClock) -> None:
    async with with_http(tmp_path, clock, global_daily=2) as (server, handle):
        nas = nas_of(server)
        assert (await _press(nas, _number(1), 1)).startswith("Password sent")
        async with aiohttp.ClientSession() as s:
            async with s.post(handle.url("/api/v1/otp"), json={"phone": _number(2)}) as r:
                assert r.status == 202
            async with s.post(handle.url("/api/v1/otp"), json={"phone": _number(3)}) as r:
                assert r.status == 429
                assert (await r.json())["message"] == UNAVAILABLE
        assert await _press(nas, _number(4), 4) == UNAVAILABLE
        assert await sms_count(server) == 2


async def test_metrics_count_refusals_by_cap(tmp_path: Path, clock: ManualClock) -> None:
    async with with_http(tmp_path, clock, per_nas_daily=1) as (server, handle):
        nas = nas_of(server)
        assert (await _press(nas, _number(1), 1)).startswith("Password sent")
        assert await _press(nas, _number(2), 2) == UNAVAILABLE
        async with aiohttp.ClientSession() as s, s.get(handle.url("/metrics")) as r:
            text = await r.text()
        assert 'radiusd_otp_refused_total{cap="per_nas_daily"} 1' in text
        assert 'radiusd_otp_refused_total{cap="global_daily"} 0' in text
        assert 'radiusd_otp_refused_total{cap="wrong_per_nas_hourly"} 0' in text
