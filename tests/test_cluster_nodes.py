"""Issue 12 item 6: two real `radiusd serve` processes (node A and node B) on one
PostgreSQL database, as a NAS with a primary and a secondary server sees them. Each
node has its own ports, log and SMS file (provider `file`: what the phone would
receive); they share the database and the sealing key file, nothing else.

What a user sees: a code issued through A logs in through B, a Stop received by B
ends it for A, 200 presses for one number over both nodes send one SMS, the two
outbox workers never send one message twice, and no acknowledged Accounting-Start is
lost when a node is SIGKILLed or PostgreSQL restarts under load (the nodes answer
again by themselves)."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from radiusd.testing.nas import NoReply, SimulatedNAS
from radiusd.testing.server import eventually
from tests.otp_support import (
    ACCEPT,
    EXPIRED_EN,
    OTHER_MAC,
    PHONE,
    REJECT,
    SENT_EN,
    acct,
    enter,
    get_password,
    reply_message,
)
from tests.pg import PgServer
from tests.test_postgres import PgServeProcess
from tests.test_serve_process import SECRET

WRONG_EN = "Wrong password"
_CODE = re.compile(r"\d{4,12}")


class Node(PgServeProcess):
    """`radiusd serve` on PostgreSQL in a directory of its own, with the cluster's
    sealing key file and `[server] workers`."""

    def __init__(self, tmp: Path, url: str, key: Path, workers: int = 1) -> None:
        self.key = key
        self.workers = workers
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp, url)

    def write_config(self) -> None:
        super().write_config()
        text = self.config.read_text()
        text = re.sub(r'(?m)^key_file = .*$', f'key_file = "{self.key}"', text)
        text = text.replace("[server]\n", f"[server]\nworkers = {self.workers}\n", 1)
        self.config.write_text(text)

    def nas(self, timeout: float = 2.0, retries: int = 2) -> SimulatedNAS:
        return SimulatedNAS(auth_address=self.auth4, acct_address=self.acct4,
                            secret=SECRET.encode(), timeout=timeout, retries=retries)

    def delivered(self) -> list[dict[str, Any]]:
        """What this node's SMS provider handed over: one JSON line per SMS."""
        path = self.tmp / "outbox.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    key = tmp_path / "cluster.key"  # A makes it on its first start, B reads it
    a = Node(tmp_path / "a", pg_url, key).start()
    b = Node(tmp_path / "b", pg_url, key)
    try:
        b.start()
        yield a, b
    finally:
        for node in (a, b):  # SIGTERM both, then wait: no node outlives the test
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in (a, b):
            if node.proc is not None:
                try:
                    node.proc.wait(15)
                except subprocess.TimeoutExpired:
                    node.kill()
    for node in (a, b):
        assert "Traceback" not in node.log, node.log


def delivered(*nodes: Node) -> list[dict[str, Any]]:
    return [sms for node in nodes for sms in node.delivered()]


async def code_for(phone: str, *nodes: Node) -> str:
    """The code in the SMS the phone received, from whichever node sent it."""
    await eventually(lambda: any(s["to"] == phone for s in delivered(*nodes)), limit=30)
    (text,) = [s["text"] for s in delivered(*nodes) if s["to"] == phone]
    (code,) = _CODE.findall(text)
    return code


async def query(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def all_sent(url: str, count: int) -> None:
    """Until the outbox holds `count` rows, every one delivered (state 'sent')."""
    async def check() -> bool:
        rows = await query(url, "SELECT state FROM sms_outbox")
        return len(rows) == count and all(r["state"] == "sent" for r in rows)

    for _ in range(600):  # bounded: polling two real processes, at most ~30 s
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(await query(url, "SELECT recipient, state FROM sms_outbox"))


async def test_a_code_issued_through_node_a_logs_in_through_node_b(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    at_a, at_b = a.nas(), b.nas()
    answer = await get_password(at_a)
    assert answer.code == REJECT and reply_message(answer) == SENT_EN
    code = await code_for(PHONE, a, b)
    assert (await enter(at_b, code)).code == ACCEPT  # claimed through B: bound to MAC
    other = await enter(at_a, code, mac=OTHER_MAC)
    assert other.code == REJECT and reply_message(other) == WRONG_EN
    assert (await enter(at_a, code)).code == ACCEPT  # the bound device, through A


async def test_a_stop_received_by_node_b_ends_the_password_for_node_a(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    at_a, at_b = a.nas(), b.nas()
    await get_password(at_a)
    code = await code_for(PHONE, a, b)
    answer = await enter(at_a, code)
    assert answer.code == ACCEPT
    klass = answer.get("Class")
    assert isinstance(klass, bytes)
    await acct(at_b, "Start", "s1", klass=klass)
    assert (await enter(at_a, code)).code == ACCEPT  # re-authentication through A
    await acct(at_b, "Stop", "s1", klass=klass)
    dead = await enter(at_a, code)
    assert dead.code == REJECT and reply_message(dead) == EXPIRED_EN


async def test_200_presses_for_one_number_over_both_nodes_send_exactly_one_sms(
        nodes: tuple[Node, Node], pg_url: str) -> None:
    a, b = nodes
    nases = [(a if i % 2 else b).nas(timeout=5.0) for i in range(200)]
    answers = await asyncio.gather(*(get_password(n) for n in nases))
    messages = collections.Counter(
        "sent" if reply_message(x) == SENT_EN else
        "wait" if reply_message(x).startswith("You can ask for a new password in") else
        reply_message(x) for x in answers)
    assert messages == {"sent": 1, "wait": 199}
    await all_sent(pg_url, 1)
    assert [s["to"] for s in delivered(a, b)] == [PHONE]


async def test_outbox_workers_on_both_nodes_never_send_a_message_twice(
        nodes: tuple[Node, Node], pg_url: str) -> None:
    a, b = nodes
    phones = [f"+7701555{i:04d}" for i in range(1, 41)]
    answers = await asyncio.gather(*(
        get_password((a if i % 2 else b).nas(timeout=5.0), phone, mac=f"AA-BB-CC-00-00-{i:02X}")
        for i, phone in enumerate(phones)))
    assert all(reply_message(x).startswith("Password sent by SMS") for x in answers), \
        {reply_message(x) for x in answers}
    await all_sent(pg_url, len(phones))
    received = collections.Counter(s["to"] for s in delivered(a, b))
    assert received == dict.fromkeys(phones, 1)  # each phone one SMS, none twice


class Load:
    """A NAS sending Accounting-Start after Accounting-Start to one node from a
    thread, keeping the session ids the node acknowledged."""

    def __init__(self, node: Node, tag: str) -> None:
        self.nas = node.nas(timeout=0.3, retries=0)
        self.tag = tag
        self.acknowledged: list[str] = []
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            sid = f"{self.tag}-{n}"
            try:
                await self.nas.send(self.nas.accounting_request(
                    "Start", user=PHONE, session_id=sid))
            except NoReply:
                self.unanswered += 1
            else:
                self.acknowledged.append(sid)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def until(condition: Callable[[], bool], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit}s"
        time.sleep(0.05)  # polling real processes, not waiting for time to pass


def stored_sessions(url: str) -> set[str]:
    rows = asyncio.run(query(url, "SELECT acct_session_id FROM sessions"))
    return {r[0] for r in rows}


def test_sigkill_of_one_node_during_accounting_loses_no_acknowledged_record(
        nodes: tuple[Node, Node], pg_url: str) -> None:
    a, b = nodes
    with Load(a, "a") as at_a, Load(b, "b") as at_b:
        until(lambda: len(at_a.acknowledged) >= 20 and len(at_b.acknowledged) >= 20)
        assert b.proc is not None
        b.proc.kill()  # SIGKILL: no shutdown, whatever B had in flight is cut
        b.proc.wait(10)
        killed_at = len(at_a.acknowledged)
        until(lambda: len(at_a.acknowledged) >= killed_at + 20)  # A carries on
    acknowledged = set(at_a.acknowledged) | set(at_b.acknowledged)
    missing = acknowledged - stored_sessions(pg_url)
    assert not missing, sorted(missing)


def test_restarting_postgresql_during_load_loses_nothing_and_both_nodes_recover(
        nodes: tuple[Node, Node], pg_server: PgServer, pg_url: str) -> None:
    a, b = nodes
    with Load(a, "a") as at_a, Load(b, "b") as at_b:
        until(lambda: len(at_a.acknowledged) >= 20 and len(at_b.acknowledged) >= 20)
        before = len(at_a.acknowledged), len(at_b.acknowledged)
        pg_server.restart()  # pg_ctl restart -m fast: every connection cut
        # Both answer again by themselves: nobody restarts them.
        until(lambda: len(at_a.acknowledged) >= before[0] + 20
              and len(at_b.acknowledged) >= before[1] + 20)
    until(lambda: a.healthz()[0] == 200 and b.healthz()[0] == 200)
    for node in (a, b):  # the outage is logged once per episode, without tracebacks
        assert "Traceback" not in node.log, node.log
    acknowledged = set(at_a.acknowledged) | set(at_b.acknowledged)
    missing = acknowledged - stored_sessions(pg_url)
    assert not missing, sorted(missing)
