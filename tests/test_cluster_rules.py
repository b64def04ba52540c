"""Issue 12 item 3: every rule holds across nodes because the database enforces it.

Two "nodes" are two complete servers (each its own store connections, policy objects
and memory) in one process, sharing one database file and one clock, each with its
own UDP ports: what one does, the other sees and enforces. (SQLite stays one
process in production; two stacks on one file prove the rules are the database's,
not a node's memory, which is what the PostgreSQL backend relies on.)
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.sealing import Sealer
from radiusd.sms import SendResult
from radiusd.sms.outbox import OutboxWorker
from radiusd.store.sqlite import Op, Store
from radiusd.testing.nas import NoReply
from radiusd.testing.server import loopback_config, running_server
from tests.otp_support import (
    ACCEPT,
    CHALLENGE,
    EXPIRED_EN,
    MAC,
    OTHER_MAC,
    PHONE,
    REJECT,
    TYPED,
    acct,
    enter,
    get_password,
    nas_of,
    password_rows,
    reply_message,
    request_code,
    sms_code,
    sms_rows,
)

WRONG_EN = "Wrong password"


@asynccontextmanager
async def two_nodes(tmp_path: Path, clock: ManualClock,
                    **sections: Any) -> AsyncIterator[tuple[Server, Server]]:
    """Node A and node B on one database file (and one sealing key, as a cluster
    shares it)."""
    config = loopback_config(tmp_path, **sections)
    async with running_server(config, clock) as a, running_server(config, clock) as b:
        assert a.store is not b.store and a.book is not b.book
        yield a, b


def wrong_code(code: str) -> str:
    return "".join(str((int(d) + 1) % 10) for d in code)


async def test_a_code_issued_at_one_node_logs_in_at_the_other_and_is_bound_there(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        at_a, at_b = nas_of(a), nas_of(b)
        code = await request_code(a, at_a)
        assert (await enter(at_b, code)).code == ACCEPT  # claimed through B
        other = await enter(at_a, code, mac=OTHER_MAC)  # A knows it is bound to MAC
        assert other.code == REJECT and reply_message(other) == WRONG_EN
        assert (await enter(at_a, code)).code == ACCEPT  # the bound device, at A
        (pw,) = await password_rows(a)
        assert pw["state"] == "active" and pw["device"] == "aabbccddee01"


async def test_a_stop_through_one_node_is_seen_by_the_other_at_once(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        at_a, at_b = nas_of(a), nas_of(b)
        code = await request_code(a, at_a)
        answer = await enter(at_a, code)
        assert answer.code == ACCEPT
        klass = answer.get("Class")
        assert isinstance(klass, bytes)
        await acct(at_b, "Start", "s1", klass=klass)
        assert (await enter(at_a, code)).code == ACCEPT  # re-authentication at A
        await acct(at_b, "Stop", "s1", klass=klass)
        dead = await enter(at_a, code)
        assert dead.code == REJECT and reply_message(dead) == EXPIRED_EN


async def test_a_nas_reboot_told_to_one_node_ends_the_passwords_claimed_at_the_other(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        at_a, at_b = nas_of(a), nas_of(b)
        code = await request_code(a, at_a)
        assert (await enter(at_a, code)).code == ACCEPT
        await acct(at_b, "Accounting-On", None, user=None)
        assert (await enter(at_a, code)).code == REJECT


async def test_an_unclaimed_code_past_its_ttl_is_dead_at_both_nodes(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        code = await request_code(a, nas_of(a))
        clock.advance(a.config.otp.ttl_seconds + 1)
        await b.reaper.run_once()
        (pw,) = await password_rows(a)
        assert pw["state"] == "expired" and pw["expire_reason"] == "ttl"
        assert (await enter(nas_of(a), code)).code == REJECT


async def test_200_presses_for_one_number_split_over_two_nodes_queue_one_sms(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        nases = [nas_of(a if i % 2 else b, timeout=5.0) for i in range(200)]
        answers = await asyncio.gather(*(get_password(n) for n in nases))
        sent = [x for x in answers if reply_message(x).startswith("Password sent")]
        assert len(sent) == 1
        waits = [x for x in answers
                 if reply_message(x).startswith("You can ask for a new password in")]
        assert len(waits) == 199, {reply_message(x) for x in answers}
        assert len(await sms_rows(a, PHONE)) == 1
        assert len(await password_rows(b)) == 1


async def test_wrong_guesses_through_both_nodes_add_up_and_burn_the_code(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        at_a, at_b = nas_of(a), nas_of(b)
        code = await request_code(a, at_a)
        tries = a.config.otp.max_attempts
        answers = [await enter(at_a if i % 2 else at_b, wrong_code(code))
                   for i in range(tries)]
        assert [reply_message(x) for x in answers[:-1]] == [WRONG_EN] * (tries - 1)
        assert reply_message(answers[-1]) != WRONG_EN  # the last one burned it
        assert (await enter(at_a, code)).code == REJECT
        assert (await enter(at_b, code)).code == REJECT
        (pw,) = await password_rows(a)
        assert pw["state"] == "expired" and pw["expire_reason"] == "attempts"
        assert pw["attempts"] == tries


async def test_a_challenge_from_one_node_is_answered_at_the_other_once(
        tmp_path: Path, clock: ManualClock) -> None:
    clients = [{"name": "chilli", "address": ["127.0.0.1", "::1"], "secret": "testing123",
                "otp_request": "challenge"}]
    async with two_nodes(tmp_path, clock, clients=clients) as (a, b):
        at_a, at_b = nas_of(a), nas_of(b)
        challenge = await get_password(at_a)
        assert challenge.code == CHALLENGE
        state = challenge.get("State")
        code = await sms_code(a, PHONE)
        assert (await enter(at_b, code, extra=[("State", state)])).code == ACCEPT
        replay = await enter(at_a, code, extra=[("State", state)])
        assert replay.code == REJECT and reply_message(replay) == EXPIRED_EN


async def test_the_auto_latch_survives_a_restart_and_reaches_the_other_node(
        tmp_path: Path, clock: ManualClock) -> None:
    clients = [{"name": "hotspot", "address": ["127.0.0.1", "::1"], "secret": "testing123",
                "require_message_authenticator": "auto"}]
    config = loopback_config(tmp_path, clients=clients)
    async with running_server(config, clock) as a:
        await get_password(nas_of(a))  # signed: the client latches
        row = await a.store.fetchone("SELECT client FROM client_latches")
        for _ in range(200):  # the latch is written in the background
            if row is not None:
                break
            await asyncio.sleep(0.005)
            row = await a.store.fetchone("SELECT client FROM client_latches")
        assert row is not None and row["client"] == "hotspot"
    async with running_server(config, clock) as restarted:
        unsigned = nas_of(restarted, message_authenticator=False, retries=0, timeout=0.3)
        with pytest.raises(NoReply):
            await unsigned.send(unsigned.access_request(TYPED, ""))
        assert restarted.stats.dropped["missing_message_authenticator"] == 1


class CountingProvider:
    name = "counting"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, to: str, text: str) -> SendResult:
        await asyncio.sleep(0)  # let the other worker run between claim and answer
        self.sent.append(text)
        return SendResult("sent", "ok", f"ref-{len(self.sent)}")

    async def close(self) -> None:
        pass


def no_give_up(password_id: int, now: float) -> list[Op]:
    return []


async def test_two_outbox_workers_never_send_the_same_sms(
        tmp_path: Path, clock: ManualClock) -> None:
    path = str(tmp_path / "radiusd.db")
    sealer = Sealer(os.urandom(32))
    one, two = Store(path), Store(path)
    await one.open()
    await two.open()
    try:
        now = clock.now()
        ops: list[Op] = []
        for i in range(1, 41):
            ops += [
                ("INSERT INTO passwords (id, login, state, secret, language, issued_at, "
                 "unclaimed_until) VALUES (?, ?, 'issued', x'00', 'ru', ?, ?)",
                 (i, PHONE, now, now + 300)),
                ("INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, "
                 "state, attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?)",
                 (i, i, PHONE, sealer.seal(f"sms {i}".encode(), aad=b"sms"), now, now)),
            ]
        await one.write(ops)
        providers = [CountingProvider(), CountingProvider()]
        workers = [OutboxWorker(store, provider, sealer, clock, 600.0, no_give_up,
                                batch=16, rng=random.Random(1))  # type: ignore[arg-type]
                   for store, provider in zip((one, two), providers, strict=True)]
        # One round each in turn: the second finds the first's claims taken and sends
        # others; then rounds at the same time, racing for the rest.
        await workers[0].run_once()
        await workers[1].run_once()
        assert providers[0].sent and providers[1].sent
        assert not set(providers[0].sent) & set(providers[1].sent)
        for _ in range(3):
            await asyncio.gather(*(w.run_once() for w in workers))
        texts = providers[0].sent + providers[1].sent
        assert sorted(texts) == sorted(f"sms {i}" for i in range(1, 41))  # none twice
        left = await one.fetchone("SELECT COUNT(*) FROM sms_outbox WHERE state != 'sent'")
        assert left is not None and left[0] == 0
    finally:
        await one.close()
        await two.close()


async def test_two_reapers_close_a_stale_session_once(
        tmp_path: Path, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, clock) as (a, b):
        at_a = nas_of(a)
        code = await request_code(a, at_a)
        answer = await enter(at_a, code)
        klass = answer.get("Class")
        assert isinstance(klass, bytes)
        await acct(at_a, "Start", "s1", klass=klass)
        clock.advance(a.config.accounting.stale_after() + 1)
        done = await asyncio.gather(a.reaper.run_once(), b.reaper.run_once())
        assert sorted(done)[0] == 0 < sorted(done)[1]  # one of them closed it
        row = await a.store.fetchone(
            "SELECT terminate_cause FROM sessions WHERE acct_session_id = 's1'")
        assert row is not None and row["terminate_cause"] == "Stale"
        ended = await a.store.fetchone(
            "SELECT value FROM counters WHERE name = 'passwords_expired' "
            "AND label = 'stale_session'")
        assert ended is not None and ended[0] == 1
        assert (await enter(nas_of(b), code, mac=MAC)).code == REJECT
