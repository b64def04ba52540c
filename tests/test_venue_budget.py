"""Issue 15 item 2: a venue's `sms_daily_budget` is exact. N concurrent "Get password"
presses against B left send exactly min(N, B) SMS, because the budget is reserved by
a conditional UPSERT that guards the press's own transaction (`store.budgets`), on
SQLite and on PostgreSQL, across several stores (nodes) sharing one database."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from otp_support import REJECT, get_password, reply_message, sms_count

from radiusd.clock import ManualClock
from radiusd.store import budgets
from radiusd.store.backend import Backend
from radiusd.store.postgres import PgStore
from radiusd.store.sqlite import Store
from radiusd.testing.server import (
    DATABASE_URL_ENV,
    eventually,
    loopback_config,
    nas_for,
    running_server,
)

UNAVAILABLE_EN = "SMS login is not available here today. Please ask the staff"
DAY = "2026-12-06"


def budget_config(tmp: Path, budget: int, http: bool = False,
                  otp: dict[str, Any] | None = None, **venue: Any) -> Any:
    roomy = {k: 1_000_000 for k in ("per_nas_minute", "per_nas_daily", "global_per_minute",
                                    "global_daily", "per_prefix_daily", "per_device_hourly")}
    return loopback_config(
        tmp,
        server={"max_queue_ms": 60_000},
        clients=[{"name": "cafe", "address": "127.0.0.1", "secret": "testing123"}],
        venues=[{"name": "cafe", "clients": ["cafe"], "sms_daily_budget": budget,
                 "timezone": "Asia/Almaty", **roomy, **venue}],
        **({"http": {"listen": ["127.0.0.1:0"]}} if http else {}),
        **({"otp": otp} if otp else {}),
    )


def number(i: int) -> str:
    return f"+7701{i:07d}"


def mac(i: int) -> str:
    return "AA-BB-" + "-".join(f"{(i >> s) & 0xFF:02X}" for s in (24, 16, 8, 0))


async def press_all(server: Any, presses: int) -> list[str]:
    nas = nas_for(server, timeout=10.0, retries=3)

    async def one(i: int) -> str:
        answer = await get_password(nas, number(i), mac=mac(i))
        assert answer.code == REJECT
        return reply_message(answer)

    return list(await asyncio.gather(*(one(i) for i in range(presses))))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_500_concurrent_presses_against_a_budget_of_100_send_exactly_100(
        tmp_path: Path, clock: ManualClock, backend: str, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    if backend == "postgres":
        monkeypatch.setenv(DATABASE_URL_ENV, request.getfixturevalue("pg_url"))
    caplog.set_level(logging.WARNING, "radiusd.otp")
    async with running_server(budget_config(tmp_path, 100), clock) as server:
        answers = await press_all(server, 500)
        sent = [a for a in answers if a.startswith("Password sent")]
        assert len(sent) == 100
        assert answers.count(UNAVAILABLE_EN) == 400
        assert await sms_count(server) == 100
        assert server.book.limits.refused["sms_daily_budget"] == 400
        spent = [r for r in caplog.records if "sms_daily_budget" in r.getMessage()]
        assert len(spent) == 1, "the operator is told once, not per press"


async def test_the_budget_starts_again_on_the_venues_next_calendar_day(
        tmp_path: Path, clock: ManualClock) -> None:
    # 2026-12-06 18:30 UTC is 23:30 in Almaty (UTC+5): the venue's day ends in 30 min.
    clock.set(1_796_581_800.0)
    async with running_server(budget_config(tmp_path, 2, http=True), clock) as server:
        nas = nas_for(server, timeout=1.0, retries=2)
        for i in range(2):
            assert reply_message(await get_password(nas, number(i), mac=mac(i))).startswith(
                "Password sent")
        assert reply_message(await get_password(nas, number(2), mac=mac(2))) == UNAVAILABLE_EN
        async with aiohttp.ClientSession() as s, s.get(server.http.metrics_url()) as r:
            metrics = await r.text()
        assert 'radiusd_otp_refused_total{cap="sms_daily_budget"} 1' in metrics.splitlines()
        clock.advance(1800)  # midnight in Almaty, 19:00 UTC
        assert reply_message(await get_password(nas, number(2), mac=mac(2))).startswith(
            "Password sent")
        assert await sms_count(server) == 3


async def test_a_refused_press_uses_up_no_other_limit(tmp_path: Path,
                                                      clock: ManualClock) -> None:
    async with running_server(budget_config(tmp_path, 1, per_number_daily=1), clock) as server:
        nas = nas_for(server, timeout=1.0, retries=2)
        assert reply_message(await get_password(nas, number(1), mac=mac(1))).startswith(
            "Password sent")
        for _ in range(3):
            assert reply_message(await get_password(nas, number(2), mac=mac(2))) == \
                UNAVAILABLE_EN
        counted = await server.store.fetchall(
            "SELECT key FROM limit_counts WHERE cap = 'per_number_daily'")
        assert [r[0] for r in counted] == [number(1)]


async def _guarded_presses(stores: list[Backend], presses: int, budget: int) -> int:
    """Each press: reserve one of `budget`, and (guarded) count it under "spent"."""
    async def one(i: int) -> bool:
        store = stores[i % len(stores)]
        got, _ = await store.run([budgets.reserve("cafe", DAY, budget),
                                  budgets.reserve("spent", DAY, 1_000_000)], guard=True)
        return bool(got)

    won = sum(await asyncio.gather(*(one(i) for i in range(presses))))
    assert await budgets.sent(stores[0], "cafe", DAY) == budget
    assert await budgets.sent(stores[0], "spent", DAY) == won
    return won


async def test_the_guard_holds_on_sqlite(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "radiusd.db"))
    await store.open()
    try:
        assert await _guarded_presses([store], 500, 100) == 100
    finally:
        await store.close()


async def test_the_guard_holds_across_two_postgresql_stores(pg_url: str) -> None:
    stores: list[Backend] = [PgStore(pg_url, pool_size=2), PgStore(pg_url, pool_size=2)]
    for s in stores:
        await s.open()
    try:
        assert await _guarded_presses(stores, 500, 100) == 100
    finally:
        for s in stores:
            await s.close()


async def test_a_press_through_the_portal_api_counts_against_the_venue_it_comes_from(
        tmp_path: Path, clock: ManualClock) -> None:
    """A hotspot's users reach the portal through its NAT, from a client's address:
    their presses get that venue's budget and SMS sender."""
    config = budget_config(tmp_path, 1, http=True, sms={"sender": "CAFE"})
    async with running_server(config, clock) as server:
        assert server.http is not None
        answers = []
        async with aiohttp.ClientSession() as s:
            for i in (1, 2):
                async with s.post(server.http.url("/api/v1/otp"),
                                  json={"phone": number(i)}) as r:
                    answers.append((r.status, (await r.json())["message"]))
        assert answers == [(202, "Password sent by SMS to +7 701 *** ** 01"),
                           (429, UNAVAILABLE_EN)]
        await eventually(lambda: (tmp_path / "outbox.jsonl").exists())
        (line,) = (tmp_path / "outbox.jsonl").read_text().splitlines()
        assert json.loads(line)["sender"] == "CAFE"


async def test_two_servers_on_one_postgresql_send_exactly_the_budget(
        tmp_path: Path, clock: ManualClock, pg_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes, 250 presses each at once, one budget of 100 between them."""
    monkeypatch.setenv(DATABASE_URL_ENV, pg_url)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key = {"key_file": str(tmp_path / "radiusd.key")}  # one key for both (docs/keys.md)
    config_a = budget_config(tmp_path / "a", 100, otp=key)
    config_b = budget_config(tmp_path / "b", 100, otp=key)
    async with running_server(config_a, clock) as a, running_server(config_b, clock) as b:
        nas_a, nas_b = (nas_for(s, timeout=10.0, retries=3) for s in (a, b))

        async def one(i: int) -> str:
            nas = nas_a if i % 2 else nas_b
            return reply_message(await get_password(nas, number(i), mac=mac(i)))

        answers = await asyncio.gather(*(one(i) for i in range(500)))
        assert sum(a.startswith("Password sent") for a in answers) == 100
        assert answers.count(UNAVAILABLE_EN) == 400
        assert await sms_count(a) == 100
