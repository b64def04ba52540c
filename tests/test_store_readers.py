"""A RADIUS answer never waits behind a long read (issue 18 item 3): the store's
reads run on several connections, and the reads no answer waits for (`slow=True`:
outbox rounds, /metrics, health checks, bulk reads) never hold the last one.

The long reads are real SQLite statements held inside SQLite by a function that
waits on an event the test controls; what is asserted is which reads complete
while they are held, not how long anything takes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from radiusd.store import sessions
from radiusd.store import sqlite as sqlite_store
from radiusd.store.sqlite import Store

BOUND = 10.0  # seconds: a read that needs more than this is stuck, not slow


class Held:
    """`SELECT held()` blocks inside SQLite until `release`; `entered` counts them.
    `SELECT started()` only says it ran (for statements long by themselves)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.started = threading.Event()
        self.running = 0
        self._lock = threading.Lock()

    def start(self) -> int:
        self.started.set()
        return 1

    def __call__(self) -> int:
        with self._lock:
            self.running += 1
        self.entered.release()
        self.release.wait(BOUND * 3)
        return 1

    async def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.entered.acquire, True, BOUND), \
                "the long read never started"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    """Every reader connection the store opens knows `held()` and `started()`."""
    h = Held()
    connect = sqlite_store.connect_reader

    def connect_reader(path: str) -> sqlite3.Connection:
        conn = connect(path)
        conn.create_function("held", 0, h)
        conn.create_function("started", 0, h.start)
        return conn

    monkeypatch.setattr(sqlite_store, "connect_reader", connect_reader)
    try:
        yield h
    finally:
        h.release.set()


@pytest.fixture
async def store(tmp_path: Path, held: Held) -> AsyncIterator[Store]:
    s = Store(str(tmp_path / "radiusd.db"))
    await s.open()
    try:
        await s.write([sessions.record(
            unique_id="u1", login="+77011234567", device="aabbccddeeff", nas="nas",
            nas_address="10.0.0.1", acct_session_id="s1", framed_ip=None, started_at=0.0,
            updated_at=0.0, stopped_at=None, session_time=0, input_octets=0,
            output_octets=0, input_packets=0, output_packets=0, terminate_cause=None,
            class_token="rd1.x")])
        yield s
    finally:
        held.release.set()
        await s.close()


async def test_start_lost_stop_check_completes_while_a_slow_read_is_held(
        store: Store, held: Held) -> None:
    slow = asyncio.create_task(store.fetchall("SELECT held()", slow=True))
    await held.wait_entered()
    found = await asyncio.wait_for(sessions.open_session(store, "u1"), BOUND)
    assert found is not None and found.class_token == "rd1.x"
    assert not slow.done()  # answered while the long read was still inside SQLite
    held.release.set()
    assert [tuple(r) for r in await slow] == [(1,)]


async def test_unmarked_long_read_leaves_the_others_free(store: Store, held: Held) -> None:
    """A long read not marked slow still holds one connection only."""
    long = asyncio.create_task(store.fetchone("SELECT held()"))
    await held.wait_entered()
    assert await asyncio.wait_for(sessions.open_session(store, "u1"), BOUND) is not None
    assert not long.done()
    held.release.set()
    row = await long
    assert row is not None and row[0] == 1


async def test_slow_reads_never_hold_the_last_connection(store: Store, held: Held) -> None:
    slow = [asyncio.create_task(store.fetchone("SELECT held()", slow=True))
            for _ in range(store.readers + 2)]
    await held.wait_entered(store.readers - 1)
    found = await asyncio.wait_for(sessions.open_session(store, "u1"), BOUND)
    assert found is not None
    assert held.running == store.readers - 1  # the others wait for a slow slot
    assert not any(t.done() for t in slow)
    held.release.set()
    assert all(r is not None and r[0] == 1 for r in await asyncio.gather(*slow))
    assert held.running == store.readers + 2


async def test_reads_side_by_side_see_each_commit(store: Store, held: Held) -> None:
    """A write acknowledged is seen by the next read on any connection."""
    slow = asyncio.create_task(store.fetchall("SELECT held()", slow=True))
    await held.wait_entered()
    await store.write([sessions.close_lost_stop("u1")])
    for _ in range(store.readers * 2):
        assert await asyncio.wait_for(sessions.open_session(store, "u1"), BOUND) is None
    held.release.set()
    await slow


async def test_close_interrupts_a_read_still_running(tmp_path: Path, held: Held) -> None:
    s = Store(str(tmp_path / "radiusd.db"))
    await s.open()
    endless = asyncio.create_task(s.fetchone(
        "WITH RECURSIVE c(x) AS (SELECT started() UNION ALL SELECT x + 1 FROM c)"
        " SELECT COUNT(*) FROM c"))
    assert await asyncio.to_thread(held.started.wait, BOUND)
    await asyncio.wait_for(s.close(), BOUND)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        await endless
    with pytest.raises(RuntimeError, match="not open"):
        await s.fetchone("SELECT 1")
