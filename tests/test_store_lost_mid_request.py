"""A request whose database goes away while it is being answered (issue 12 item 5):
no answer, counted as `store_failing` like the requests after it, not as a policy
error logged per request; an error while the store is well is still the policy's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from radiusd.clock import ManualClock
from radiusd.dispatch import Dispatcher
from radiusd.health import Health
from radiusd.radius.message import Drop
from radiusd.radius.wire import Code


class LosesTheStore:
    """A policy whose read fails because PostgreSQL went away (the store reports it
    to Health before the error reaches the caller, as PgStore does)."""

    def __init__(self, health: Health, lose: bool) -> None:
        self.health, self.lose = health, lose

    async def authorize(self, request: Any, now: float) -> object:
        if self.lose:
            self.health.failed("store", "connection to PostgreSQL lost", now)
        raise ConnectionError("connection was closed in the middle of operation")

    def preacct(self, request: Any, now: float) -> object:
        return object()

    async def accounting(self, request: Any, record: object, now: float) -> object:
        return await self.authorize(request, now)


@pytest.mark.parametrize("code", [Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST])
async def test_a_request_that_loses_the_store_is_dropped_as_store_failing(code: int) -> None:
    health = Health()
    policy = LosesTheStore(health, lose=True)
    dispatcher = Dispatcher(policy, policy, ManualClock(), health)  # type: ignore[arg-type]
    outcome = await dispatcher(SimpleNamespace(code=code), "auth")  # type: ignore[arg-type]
    assert isinstance(outcome, Drop) and outcome.reason == "store_failing"


async def test_an_error_while_the_store_is_well_is_still_the_policys() -> None:
    health = Health()
    policy = LosesTheStore(health, lose=False)
    dispatcher = Dispatcher(policy, policy, ManualClock(), health)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await dispatcher(SimpleNamespace(code=Code.ACCESS_REQUEST), "auth")  # type: ignore[arg-type]
