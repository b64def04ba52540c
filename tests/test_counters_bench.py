"""bench/counters.py (issue 12, migration 14), small: under each design of the
counter triggers (schema 13's, radiusd's now, the cure not taken), one statement over
many passwords and the per-request statements leave the `/metrics` counters equal to
the rows."""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest

from tests import benches


def counters() -> ModuleType:
    return benches.load("counters", "counters_bench")


@pytest.mark.parametrize("variant", ["row", "statement", "pending"])
def test_each_trigger_design_keeps_the_counters_equal_to_the_rows(
        pg_url: str, variant: str) -> None:
    bench = counters()
    result = asyncio.run(bench.one_run(pg_url, variant, [30, 60], 40))
    assert set(result) == {f"{k}@{n}" for n in (30, 60)
                           for k in ("insert_s", "accounting_on_s", "delete_s")} | {
        "seen_found_batch_ms", "seen_none_batch_ms", "supersede_none_batch_ms",
        "stop_expire_batch_ms"}
    assert all(v > 0 for v in result.values())


def test_the_check_fails_when_a_counter_is_off(pg_url: str) -> None:
    bench = counters()

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(pg_url)
        try:
            await bench.schema(conn, "row")
            await conn.execute(bench._FILL, 1, "nas-x", "c-", 5)
            await conn.execute("UPDATE passwords SET state = 'expired', "
                               "expire_reason = 'stop' WHERE id = (SELECT MIN(id) FROM passwords)")
            await bench.check(conn)  # the triggers counted it
            await conn.execute("UPDATE counters SET value = value - 1 "
                               "WHERE name = 'passwords' AND label = 'expired' AND value > 0")
            with pytest.raises(SystemExit, match="counters disagree"):
                await bench.check(conn)
        finally:
            await conn.close()

    asyncio.run(run())
