"""The kannel provider against a real Kannel (bearerbox + smsbox + fakesmsc, Debian
kannel and kannel-extras) on loopback, and the outbox through a gateway outage."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from radiusd.clock import SystemClock
from radiusd.config import SmsKannelConfig
from radiusd.sealing import Sealer
from radiusd.sms.kannel import KannelProvider
from radiusd.sms.outbox import OutboxWorker
from radiusd.store.sqlite import Store
from tests.conftest import require_peer
from tests.peers import kannel as k

pytestmark = pytest.mark.interop

TO = "+77011234578"


@pytest.fixture
def kannel(tmp_path: Path) -> Iterator[k.Kannel]:
    require_peer(k.BEARERBOX, "kannel")
    require_peer(k.SMSBOX, "kannel")
    require_peer(k.FAKESMSC, "kannel-extras")
    peer = k.Kannel(tmp_path / "kannel")
    peer.start()
    yield peer
    peer.stop_all()


def provider_for(peer: k.Kannel, **kw: object) -> KannelProvider:
    return KannelProvider(SmsKannelConfig(url=peer.url, username=k.USERNAME,
                                          password=k.PASSWORD, sender="WiFi",
                                          timeout_seconds=5, **kw))  # type: ignore[arg-type]


async def test_latin_text_arrives_as_gsm7(kannel: k.Kannel) -> None:
    p = provider_for(kannel)
    try:
        result = await p.send(TO, "WiFi code: 482913")
    finally:
        await p.close()
    assert result.status == "sent", result
    assert result.detail.startswith("HTTP 202: 0: Accepted")
    (got,) = kannel.wait_received(1)
    assert got == k.Received("WiFi", TO, "text", "WiFi code: 482913")


async def test_cyrillic_and_kazakh_text_arrives_as_ucs2(kannel: k.Kannel) -> None:
    p = provider_for(kannel)
    try:
        ru = await p.send(TO, "Код для Wi-Fi: 482913")
        kk = await p.send(TO, "Wi-Fi құпия сөзі: 482913")
    finally:
        await p.close()
    assert ru.status == kk.status == "sent"
    got = kannel.wait_received(2)
    assert [(g.coding, g.text) for g in got] == [
        ("ucs-2", "Код для Wi-Fi: 482913"), ("ucs-2", "Wi-Fi құпия сөзі: 482913")]


async def test_wrong_credentials_are_a_permanent_failure(kannel: k.Kannel) -> None:
    p = KannelProvider(SmsKannelConfig(url=kannel.url, username=k.USERNAME,
                                       password="wrong", timeout_seconds=5))
    try:
        result = await p.send(TO, "code 1")
    finally:
        await p.close()
    assert result.status == "failed"
    assert "403" in result.detail
    assert "wrong" not in result.detail


async def test_gateway_down_then_up_delivers_each_sms_once(kannel: k.Kannel,
                                                           tmp_path: Path) -> None:
    kannel.stop("smsbox")  # the gateway is down when the users press "Get password"
    store = Store(str(tmp_path / "radiusd.db"))
    await store.open()
    sealer = Sealer(os.urandom(32))
    clock = SystemClock()
    now = clock.now()
    await store.write([
        ("INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, "
         "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?)",
         (i, i, TO, sealer.seal(f"Код {i:06d}".encode(), aad=b"sms"), now, now))
        for i in range(1, 6)])
    worker = OutboxWorker(store, provider_for(kannel), sealer, clock, 600, lambda _p, _n: [],
                          backoff_base=0.2, backoff_max=0.4, rng=random.Random(3))
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(100):  # every row has failed at least once: refused connection
            rows = await store.fetchall("SELECT attempts, state FROM sms_outbox")
            if all(r["attempts"] >= 1 and r["state"] == "queued" for r in rows):
                break
            await asyncio.sleep(0.05)
        assert all(r["state"] == "queued" for r in rows)
        kannel.start_smsbox()
        for _ in range(200):
            rows = await store.fetchall("SELECT state FROM sms_outbox")
            if all(r["state"] == "sent" for r in rows):
                break
            await asyncio.sleep(0.05)
        assert [r["state"] for r in rows] == ["sent"] * 5
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()
    got = kannel.wait_received(5)
    await asyncio.sleep(0.3)  # nothing more trickles in
    assert sorted(g.text for g in kannel.received()) == [f"Код {i:06d}" for i in range(1, 6)]
    assert len(got) == 5
