"""The SMS outbox (Rules §6): one press, one SMS; failures void the password.

Time moves with ManualClock; a fake provider answers as told."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from radiusd.clock import ManualClock
from radiusd.sealing import Sealer
from radiusd.sms import SendResult
from radiusd.sms.outbox import OutboxWorker
from radiusd.store.sqlite import Op, Store

TO = "+77011234578"


class FakeProvider:
    name = "fake"

    def __init__(self, *answers: SendResult | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str]] = []
        self.calls = 0
        self.closed = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None

    async def send(self, to: str, text: str) -> SendResult:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            answer = self.answers.pop(0) if self.answers else SendResult("sent", "ok", "ref-1")
            if isinstance(answer, Exception):
                raise answer
            if answer.status == "sent":
                self.sent.append((to, text))
            return answer
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(str(tmp_path / "radiusd.db"))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(os.urandom(32))


def give_up(password_id: int, now: float) -> list[Op]:
    return [("UPDATE passwords SET state = 'expired', expired_at = ?, "
             "expire_reason = 'sms_failed' WHERE id = ?", (now, password_id))]


async def press(store: Store, sealer: Sealer, clock: ManualClock, n: int = 1,
                text: str = "Код: 123456") -> list[int]:
    """What the OTP side does: password and SMS row in one transaction."""
    ids = []
    rows = await store.fetchall("SELECT COALESCE(MAX(id), 0) FROM passwords")
    first = rows[0][0] + 1
    for i in range(first, first + n):
        now = clock.now()
        await store.write([
            ("INSERT INTO passwords (id, login, state, secret, language, issued_at, "
             "unclaimed_until) VALUES (?, ?, 'issued', x'00', 'ru', ?, ?)",
             (i, TO, now, now + 300)),
            ("INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, "
             "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?)",
             (i, i, TO, sealer.seal(f"{text} #{i}".encode(), aad=b"sms"), now, now)),
        ])
        ids.append(i)
    return ids


def worker(store: Store, provider: FakeProvider, sealer: Sealer, clock: ManualClock,
           **kw: object) -> OutboxWorker:
    return OutboxWorker(store, provider, sealer, clock, 600.0, give_up,
                        rng=random.Random(7), **kw)  # type: ignore[arg-type]


async def row(store: Store, sms_id: int) -> dict[str, object]:
    r = await store.fetchone("SELECT * FROM sms_outbox WHERE id = ?", (sms_id,))
    assert r is not None
    return dict(r)


async def password_state(store: Store, pid: int) -> str:
    r = await store.fetchone("SELECT state FROM passwords WHERE id = ?", (pid,))
    assert r is not None
    return str(r[0])


async def test_queued_sms_is_sent_once_with_its_text_and_reference(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    provider = FakeProvider(SendResult("sent", "ok", "msg-77"))
    w = worker(store, provider, sealer, clock)
    assert await w.run_once() == 1
    assert provider.sent == [(TO, "Код: 123456 #1")]
    r = await row(store, sid)
    assert (r["state"], r["provider_ref"], r["attempts"]) == ("sent", "msg-77", 1)
    assert r["sent_at"] == clock.now()
    assert await w.run_once() == 0
    assert provider.calls == 1


async def test_temporary_failure_is_retried_after_backoff_not_before(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    provider = FakeProvider(SendResult("retry", "HTTP 503"))
    w = worker(store, provider, sealer, clock)
    await w.run_once()
    r = await row(store, sid)
    assert r["state"] == "queued" and r["last_error"] == "HTTP 503"
    delay = float(r["next_attempt_at"]) - clock.now()  # type: ignore[arg-type]
    assert 1.0 <= delay <= 2.0  # base 2 s, equal jitter
    clock.advance(delay - 0.01)
    assert await w.run_once() == 0 and provider.calls == 1
    clock.advance(0.02)
    assert await w.run_once() == 1
    r = await row(store, sid)
    assert (r["state"], r["attempts"]) == ("sent", 2)
    assert len(provider.sent) == 1
    assert await password_state(store, 1) == "issued"


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap():
    w = OutboxWorker(None, FakeProvider(), None, ManualClock(), 600, give_up,  # type: ignore[arg-type]
                     rng=random.Random(1))
    for attempts, full in [(1, 2), (2, 4), (3, 8), (4, 16), (6, 60), (20, 60)]:
        delays = [w.backoff(attempts) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # really jittered


async def test_permanent_failure_marks_failed_and_voids_password(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    w = worker(store, FakeProvider(SendResult("failed", "HTTP 403: bad credentials")),
               sealer, clock)
    await w.run_once()
    r = await row(store, sid)
    assert (r["state"], r["last_error"]) == ("failed", "HTTP 403: bad credentials")
    assert await password_state(store, 1) == "expired"


async def test_gives_up_when_retries_would_pass_max_age(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    provider = FakeProvider(*[SendResult("retry", "connection refused")] * 100)
    w = worker(store, provider, sealer, clock)
    for _ in range(100):
        await w.run_once()
        r = await row(store, sid)
        if r["state"] != "queued":
            break
        clock.set(float(r["next_attempt_at"]))  # type: ignore[arg-type]
    assert r["state"] == "failed"
    assert str(r["last_error"]).startswith("max_age")
    assert clock.now() - float(r["created_at"]) < 600  # type: ignore[arg-type]
    assert 5 <= provider.calls <= 20
    assert await password_state(store, 1) == "expired"


async def test_sms_older_than_max_age_is_never_sent(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    clock.advance(601)  # radiusd was down for ten minutes
    provider = FakeProvider()
    w = worker(store, provider, sealer, clock)
    await w.run_once()
    assert provider.calls == 0
    assert (await row(store, sid))["state"] == "failed"
    assert await password_state(store, 1) == "expired"


async def test_restart_sends_queued_rows_once(store, sealer, clock):
    ids = await press(store, sealer, clock, n=3)
    first = FakeProvider(SendResult("sent", "", "a"))
    first.answers += [SendResult("retry", "down")] * 2
    await worker(store, first, sealer, clock, concurrency=1).run_once()
    clock.advance(10)
    again = FakeProvider()
    await worker(store, again, sealer, clock).run_once()  # a new process
    assert len(first.sent) + len(again.sent) == 3
    assert sorted(t for _, t in first.sent + again.sent) == [f"Код: 123456 #{i}" for i in ids]
    assert {(await row(store, i))["state"] for i in ids} == {"sent"}


async def test_row_left_sending_by_a_dead_process_is_never_resent(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    # The previous process claimed the row and died before recording the answer.
    await store.write([("UPDATE sms_outbox SET state = 'sending', attempts = 1, "
                        "next_attempt_at = ? WHERE id = ?", (clock.now() + 60, sid))])
    provider = FakeProvider()
    w = worker(store, provider, sealer, clock)
    assert await w.run_once() == 0  # lease still running: maybe another node's
    assert (await row(store, sid))["state"] == "sending"
    clock.advance(60)
    assert await w.run_once() == 1
    r = await row(store, sid)
    assert r["state"] == "failed" and "delivery unknown" in str(r["last_error"])
    assert provider.calls == 0
    assert await password_state(store, 1) == "expired"


async def test_claim_is_committed_before_the_provider_is_called(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    provider = FakeProvider()
    provider.gate = asyncio.Event()
    w = worker(store, provider, sealer, clock)
    task = asyncio.create_task(w.run_once())
    while provider.calls == 0:
        await asyncio.sleep(0)
    r = await row(store, sid)  # what a crash right now would leave behind
    assert (r["state"], r["attempts"]) == ("sending", 1)
    provider.gate.set()
    await task
    assert (await row(store, sid))["state"] == "sent"


async def test_provider_exception_counts_as_temporary(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    w = worker(store, FakeProvider(RuntimeError("bug")), sealer, clock)
    await w.run_once()
    r = await row(store, sid)
    assert r["state"] == "queued" and r["last_error"] == "provider error: RuntimeError"


async def test_provider_that_hangs_times_out_as_temporary(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    provider = FakeProvider()
    provider.gate = asyncio.Event()  # never set
    w = worker(store, provider, sealer, clock, send_timeout=0.05, lease_seconds=1)
    await w.run_once()
    r = await row(store, sid)
    assert r["state"] == "queued" and "no answer" in str(r["last_error"])


async def test_body_sealed_with_another_key_fails_without_sending(store, sealer, clock):
    (sid,) = await press(store, sealer, clock)
    provider = FakeProvider()
    await worker(store, provider, Sealer(os.urandom(32)), clock).run_once()
    assert provider.calls == 0
    assert (await row(store, sid))["state"] == "failed"
    assert await password_state(store, 1) == "expired"


async def test_sends_at_most_concurrency_at_once(store, sealer, clock):
    await press(store, sealer, clock, n=20)
    provider = FakeProvider()
    provider.gate = asyncio.Event()
    w = worker(store, provider, sealer, clock, concurrency=4)
    task = asyncio.create_task(w.run_once())
    while provider.calls < 4:
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert provider.in_flight == 4
    provider.gate.set()
    assert await task == 20
    assert provider.max_in_flight == 4 and len(provider.sent) == 20


async def test_run_delivers_on_wake_and_stops_cleanly(store, sealer, clock):
    provider = FakeProvider()
    w = worker(store, provider, sealer, clock, idle_poll=30)
    task = asyncio.create_task(w.run())
    await asyncio.sleep(0.05)
    (sid,) = await press(store, sealer, clock)
    w.wake()
    for _ in range(200):  # bounded polling for real delivery, no time passes on the clock
        if provider.sent:
            break
        await asyncio.sleep(0.01)
    assert provider.sent
    # Cancel in the middle of a send: the send finishes and is recorded first.
    provider.gate = asyncio.Event()
    await press(store, sealer, clock)
    w.wake()
    for _ in range(500):  # bounded: the second send starts within a few loop turns
        if provider.calls >= 2:
            break
        await asyncio.sleep(0.01)
    assert provider.calls >= 2
    task.cancel()
    await asyncio.sleep(0.01)
    provider.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.closed
    states = {r[0] for r in await store.fetchall("SELECT state FROM sms_outbox")}
    assert states == {"sent"}
    assert (await row(store, sid))["state"] == "sent"


async def test_sms_of_a_password_that_died_unsent_is_cancelled_not_sent(store, sealer, clock):
    """A newer press superseded it (or its TTL ran out) before delivery: the code is
    useless, so the SMS is not paid for."""
    provider = FakeProvider()
    old, new = await press(store, sealer, clock, n=2)
    await store.write([("UPDATE passwords SET state = 'expired' WHERE id = ?", (old,))])
    w = worker(store, provider, sealer, clock)
    assert await w.run_once() == 2
    assert [to for to, _ in provider.sent] == [TO]
    assert (await row(store, old))["state"] == "cancelled"
    assert (await row(store, new))["state"] == "sent"
    assert w.counts["cancelled"] == 1


async def test_delivery_receipt_is_recorded_on_its_row(store, sealer, clock):
    provider = FakeProvider(SendResult("sent", "ok", "msg-77"))
    (sid,) = await press(store, sealer, clock)
    w = worker(store, provider, sealer, clock)
    await w.run_once()
    clock.advance(4)
    w.receipt("msg-77", "DELIVRD")
    for _ in range(200):  # bounded: the receipt is written by a background task
        if (await row(store, sid))["delivery_state"]:
            break
        await asyncio.sleep(0.005)
    r = await row(store, sid)
    assert (r["delivery_state"], r["delivered_at"]) == ("DELIVRD", clock.now())


async def test_receipt_for_one_part_of_a_long_text_is_recorded(store, sealer, clock):
    provider = FakeProvider(SendResult("sent", "ok", "M10,M11"))
    (sid,) = await press(store, sealer, clock)
    w = worker(store, provider, sealer, clock)
    await w.run_once()
    w.receipt("M11", "UNDELIV")
    w.receipt("M1", "DELIVRD")  # a prefix of M10/M11, names no row
    for _ in range(200):  # bounded: written by a background task
        if (await row(store, sid))["delivery_state"]:
            break
        await asyncio.sleep(0.005)
    assert (await row(store, sid))["delivery_state"] == "UNDELIV"
