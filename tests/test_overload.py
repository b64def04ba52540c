"""Fast answers or none under overload (issue 11): a request that waited longer than
`[server] max_queue_ms` is dropped unprocessed and counted, and Status-Server is
answered ahead of waiting work.

Behaviour, not timing: the queue is a sans-IO object fed arrival times, and the
server's listeners get an injected clock that the test moves forward while their
only request slot is held by a write the test keeps from committing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncio_dgram
import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.radius.backlog import Backlog
from radiusd.radius.wire import Code
from radiusd.store.sqlite import Op
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import eventually, loopback_config, nas_for, running_server

MAX_WAIT = 0.2  # the default [server] max_queue_ms, in seconds


# -- the queue, sans-IO --------------------------------------------------------------


def backlog(limit: int = 100) -> tuple[Backlog, Counter[str]]:
    shed: Counter[str] = Counter()
    return Backlog(MAX_WAIT, limit, lambda reason, n: shed.update({reason: n})), shed


def test_request_that_waited_longer_than_max_queue_is_dropped_and_counted() -> None:
    queue, shed = backlog()
    queue.push([(10.0, b"old", ("127.0.0.1", 1))])
    queue.push([(10.15, b"recent", ("127.0.0.1", 2))])
    assert queue.pop(10.0 + MAX_WAIT + 0.001)[1] == b"recent"  # type: ignore[index]
    assert queue.pop(10.3) is None
    assert shed == {"queue_timeout": 1}


def test_request_that_waited_exactly_max_queue_is_still_served() -> None:
    queue, shed = backlog()
    queue.push([(10.0, b"a", None)])
    assert queue.pop(10.0 + MAX_WAIT) is not None
    assert not shed


def test_requests_start_in_arrival_order_while_none_is_late() -> None:
    queue, _ = backlog()
    for i in range(3):
        queue.push([(10.0 + i * 0.001, bytes([i]), None)])
    assert [queue.pop(10.005)[1] for _ in range(3)] == [b"\0", b"\1", b"\2"]  # type: ignore[index]


def test_when_the_oldest_is_late_the_newest_is_served_first() -> None:
    """Adaptive LIFO: the answers go to NAS still waiting; the oldest age out."""
    queue, shed = backlog()
    for i in range(5):
        queue.push([(10.0 + i * 0.05, bytes([i]), None)])  # 10.00 .. 10.20
    served = [queue.pop(10.21)[1] for _ in range(2)]  # type: ignore[index]
    assert served == [b"\4", b"\3"]
    assert shed == {"queue_timeout": 1}  # 10.00 had waited 210 ms
    assert queue.pop(10.29)[1] == b"\2"  # type: ignore[index]
    assert queue.pop(10.29) is None
    assert shed == {"queue_timeout": 2}  # 10.05 had waited 240 ms


def test_a_standing_queue_lets_a_request_wait_only_a_quarter_of_max_queue() -> None:
    """Controlled delay: under a flood the queue never empties, and a request older
    than max_queue_ms / 4 is not started (its NAS has retransmitted by then); a
    queue of a few (a stall, not a flood) keeps the whole max_queue_ms (the other
    tests here)."""
    queue, shed = backlog()
    t = 10.0
    for i in range(40):  # 5 ms apart, never emptied: standing after 100 ms
        queue.push([(t + i * 0.005, bytes([i]), None)])
    now = t + 0.195  # the newest waited 0 ms, the oldest 195 ms (< max_queue_ms)
    assert queue.standing(now)
    started = queue.pop(now)
    assert started is not None and started[1] == bytes([39])
    assert shed == {"queue_timeout": 29}  # all that waited > 50 ms: 10.000 .. 10.140
    waited = [now - queue.pop(now)[0] for _ in range(len(queue))]  # type: ignore[index]
    assert max(waited) <= MAX_WAIT / 4 + 1e-9


def test_a_burst_cleared_in_time_keeps_the_whole_max_queue() -> None:
    """A queue that was empty a moment ago is a burst: its requests may wait the full
    max_queue_ms, and the one that waited 150 ms is still served."""
    queue, shed = backlog()
    queue.push([(10.0, b"a", None)])
    assert queue.pop(10.0) is not None  # emptied
    queue.push([(10.05, b"b", None), (10.2, b"c", None)])
    assert not queue.standing(10.2)
    assert [queue.pop(10.2)[1] for _ in range(2)] == [b"c", b"b"]  # type: ignore[index]
    assert not shed


def test_full_queue_makes_room_by_dropping_the_oldest_as_overloaded() -> None:
    queue, shed = backlog(limit=2)
    queue.push([(1.0, b"a", None), (1.0, b"b", None)])
    queue.push([(1.01, b"c", None)])
    assert len(queue) == 2 and shed == {"overloaded": 1}
    assert [queue.pop(1.01)[1] for _ in range(2)] == [b"b", b"c"]  # type: ignore[index]


# -- the server ------------------------------------------------------------------------


class Gate:
    """Holds every store write until opened: the request slot stays busy."""

    def __init__(self, server: Server) -> None:
        self.open = asyncio.Event()
        self.waiting = 0
        real: Callable[[list[Op]], Awaitable[None]] = server.store.write

        async def write(ops: list[Op]) -> None:
            self.waiting += 1
            await self.open.wait()
            await real(ops)

        server.store.write = write  # type: ignore[method-assign]


class Clock:
    """The listeners' monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def busy_server(tmp_path: Path) -> AsyncIterator[tuple[Server, Clock]]:
    """A server with one request slot (max_in_flight = 1) and an injected clock."""
    config = loopback_config(tmp_path, server={"max_in_flight": 1})
    async with running_server(config, ManualClock()) as server:
        clock = Clock()
        for listener in server.listeners:
            listener.clock = clock
        yield server, clock


async def occupy_the_only_slot(server: Server, nas: SimulatedNAS) -> tuple[Gate, Any]:
    """An Accounting Start whose write is held: it is in flight until the gate opens."""
    gate = Gate(server)
    start = nas.accounting_request("Start", user="+77011234567",
                                   session_id=nas.new_session_id())
    pending = asyncio.ensure_future(nas.send(start))
    await eventually(lambda: len(server.in_flight) == 1 and gate.waiting > 0)
    return gate, pending


async def test_status_server_is_answered_while_every_request_slot_is_busy(
        busy_server: tuple[Server, Clock]) -> None:
    server, _ = busy_server
    nas = nas_for(server, timeout=2.0, retries=0)
    gate, start = await occupy_the_only_slot(server, nas)
    stream = await asyncio_dgram.connect(nas.auth_address)
    try:
        await stream.send(nas.encode(nas.access_request("bench", "x")))  # must wait
        status = await nas.send(nas.status_server())  # goes ahead of it
        assert status.code == Code.ACCESS_ACCEPT
        assert len(server.listeners[0].backlog) == 1  # the Access-Request still waits
    finally:
        stream.close()
        gate.open.set()
    assert (await start).code == Code.ACCOUNTING_RESPONSE


async def test_request_that_waited_past_max_queue_ms_is_dropped_unprocessed(
        busy_server: tuple[Server, Clock]) -> None:
    """Its NAS has given up on it: no work, no answer, counted; the NAS's
    retransmission is a new arrival and is answered."""
    server, clock = busy_server
    nas = nas_for(server, timeout=2.0, retries=0)
    gate, start = await occupy_the_only_slot(server, nas)
    request = nas.encode(nas.access_request("bench", "x"))
    stream = await asyncio_dgram.connect(nas.auth_address)
    try:
        await stream.send(request)
        await eventually(lambda: len(server.listeners[0].backlog) == 1)
        clock.now += MAX_WAIT + 0.05  # it has waited 250 ms for the busy slot
        gate.open.set()
        assert (await start).code == Code.ACCOUNTING_RESPONSE
        await eventually(lambda: server.stats.dropped["queue_timeout"] == 1)
        assert server.stats.counts["auth.sent.access_reject"] == 0  # never processed
        await stream.send(request)  # the NAS retransmits
        reply, _ = await asyncio.wait_for(stream.recv(), 5)
        assert reply[0] == Code.ACCESS_REJECT and reply[1] == request[1]
    finally:
        stream.close()
        gate.open.set()
    assert server.stats.dropped["queue_timeout"] == 1


async def test_time_spent_in_the_socket_buffer_counts_as_waiting(
        tmp_path: Path) -> None:
    """The kernel's receive timestamp is the arrival: a request that sat 250 ms in the
    socket buffer (the server busy or descheduled) is as late as one that sat in the
    queue. Here the wall clock the stamps are read against is moved instead."""
    async with running_server(loopback_config(tmp_path), ManualClock()) as server:
        listener = next(ls for ls in server.listeners if ls.endpoint.port == "auth")
        if not listener.kernel_stamps:
            pytest.skip("no kernel receive timestamps on this system (Linux only)")
        nas = nas_for(server, timeout=2.0, retries=0)
        request = nas.encode(nas.access_request("bench", "x"))
        real_wall = listener.wall
        listener.wall = lambda: real_wall() + MAX_WAIT + 0.05
        stream = await asyncio_dgram.connect(nas.auth_address)
        try:
            await stream.send(request)
            await eventually(lambda: server.stats.dropped["queue_timeout"] == 1)
            assert server.stats.counts["auth.sent.access_reject"] == 0
            listener.wall = real_wall
            await stream.send(request)  # the NAS retransmits; this one is on time
            reply, _ = await asyncio.wait_for(stream.recv(), 5)
            assert reply[0] == Code.ACCESS_REJECT and reply[1] == request[1]
        finally:
            stream.close()
