"""The smpp provider against an SMSC we did not write: tests/peers/smsc.pl, built on
Net::SMPP (Debian libnet-smpp-perl), which decodes our PDUs with its own code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from radiusd.config import SmsSmppConfig
from radiusd.sms.smpp import SmppProvider
from radiusd.sms.text import gsm7_decode
from tests.conftest import require_peer
from tests.peers.smsc import PerlSmsc

pytestmark = pytest.mark.interop

TO = "+77011234578"


@pytest.fixture
def smsc_factory(tmp_path: Path) -> Iterator[Callable[..., PerlSmsc]]:
    perl = require_peer("perl", "perl")
    try:
        import subprocess

        subprocess.run([perl, "-MNet::SMPP", "-e1"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        require_peer("/nonexistent/Net-SMPP", "libnet-smpp-perl")
    started: list[PerlSmsc] = []

    def make(*args: str) -> PerlSmsc:
        s = PerlSmsc(perl, tmp_path, "--system-id", "radiusd", "--password", "pw", *args)
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
async def closing() -> AsyncIterator[list[SmppProvider]]:
    providers: list[SmppProvider] = []
    yield providers
    for p in providers:
        await p.close()


def provider(smsc: PerlSmsc, closing: list[SmppProvider], **kw: object) -> SmppProvider:
    opts: dict[str, object] = {"port": smsc.port, "system_id": "radiusd", "password": "pw"}
    opts |= {k: v for k, v in kw.items() if k in SmsSmppConfig.model_fields}
    extra = {k: v for k, v in kw.items() if k not in SmsSmppConfig.model_fields}
    p = SmppProvider(SmsSmppConfig(**opts), response_timeout=3, **extra)  # type: ignore[arg-type]
    closing.append(p)
    return p


def payload(event: dict[str, object]) -> bytes:
    return bytes.fromhex(str(event["short_message"]))


async def test_latin_text_is_submitted_as_gsm7_after_bind_transmitter(smsc_factory, closing):
    smsc = smsc_factory()
    p = provider(smsc, closing)
    result = await p.send(TO, "WiFi code: 482913")
    assert result.status == "sent" and result.ref == "M1000"
    (bind,) = smsc.events("bind")
    assert (bind["mode"], bind["system_id"], bind["ok"]) == ("transmitter", "radiusd", True)
    assert bind["interface_version"] == 0x34
    (sm,) = smsc.events("submit_sm")
    assert (sm["data_coding"], sm["esm_class"], sm["registered_delivery"]) == (0, 0, 0)
    assert (sm["destination_addr"], sm["dest_addr_ton"], sm["dest_addr_npi"]) == (
        "77011234578", 1, 1)
    assert (sm["source_addr"], sm["source_addr_ton"]) == ("WiFi", 5)
    assert gsm7_decode(payload(sm)) == "WiFi code: 482913"


async def test_cyrillic_and_kazakh_text_is_submitted_as_ucs2(smsc_factory, closing):
    smsc = smsc_factory()
    p = provider(smsc, closing)
    assert (await p.send(TO, "Код для Wi-Fi: 482913")).status == "sent"
    assert (await p.send(TO, "Wi-Fi құпия сөзі: 482913")).status == "sent"
    ru, kk = smsc.events("submit_sm")
    assert ru["data_coding"] == kk["data_coding"] == 8
    assert payload(ru).decode("utf-16-be") == "Код для Wi-Fi: 482913"
    assert payload(kk).decode("utf-16-be") == "Wi-Fi құпия сөзі: 482913"


async def test_long_text_is_split_with_concatenation_udh(smsc_factory, closing):
    smsc = smsc_factory()
    p = provider(smsc, closing)
    text = "Ваш код для Wi-Fi: 482913. " * 6  # 162 UCS-2 characters: three parts
    result = await p.send(TO, text)
    assert result.status == "sent" and result.ref == "M1000,M1001,M1002"
    parts = smsc.events("submit_sm")
    assert [e["esm_class"] for e in parts] == [0x40] * 3
    udhs = [payload(e)[:6] for e in parts]
    assert {u[:4] for u in udhs} == {udhs[0][:4]} and udhs[0][:3] == b"\x05\x00\x03"
    assert [(u[4], u[5]) for u in udhs] == [(3, 1), (3, 2), (3, 3)]
    assert "".join(payload(e)[6:].decode("utf-16-be") for e in parts) == text


async def test_throttled_submit_is_retried_later_and_then_accepted(smsc_factory, closing):
    smsc = smsc_factory("--throttle", "1")
    p = provider(smsc, closing, throttle_pause=0.1)
    first = await p.send(TO, "code 1")
    assert (first.status, first.detail) == ("retry", "submit_sm status 0x00000058")
    assert (await p.send(TO, "code 1")).status == "sent"
    assert len(smsc.events("throttled")) == 1 and len(smsc.events("submit_sm")) == 1


async def test_window_limits_submits_awaiting_response(smsc_factory, closing):
    smsc = smsc_factory()
    p = provider(smsc, closing, window=2)
    results = await asyncio.gather(*(p.send(TO, f"code {i}") for i in range(10)))
    assert [r.status for r in results] == ["sent"] * 10
    assert len({r.ref for r in results}) == 10
    assert p._window._value == 2  # all slots returned


async def test_transceiver_gets_delivery_receipts(smsc_factory, closing):
    smsc = smsc_factory("--receipts")
    seen: list[tuple[str, str]] = []
    p = provider(smsc, closing, bind="transceiver", on_receipt=lambda r, s: seen.append((r, s)))
    result = await p.send(TO, "code 1")
    assert result.status == "sent"
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen == [(result.ref, "DELIVRD")]
    (sm,) = smsc.events("submit_sm")
    assert sm["registered_delivery"] == 1
    assert (await smsc.events_soon("deliver_sm_resp", 1))[0]["status"] == 0


async def test_enquire_link_keeps_the_session_alive(smsc_factory, closing):
    smsc = smsc_factory()
    p = provider(smsc, closing, enquire_link_seconds=0.1)
    assert (await p.send(TO, "code 1")).status == "sent"
    assert len(await smsc.events_soon("enquire_link", 3, timeout=5)) >= 3
    assert (await p.send(TO, "code 2")).status == "sent"
    assert len(smsc.events("bind")) == 1


async def test_wrong_password_is_retried_not_sent(smsc_factory, closing):
    smsc = smsc_factory()
    p = SmppProvider(SmsSmppConfig(port=smsc.port, system_id="radiusd", password="bad"))
    closing.append(p)
    result = await p.send(TO, "code 1")
    assert result.status == "retry" and "bind refused" in result.detail
    assert smsc.events("submit_sm") == []


async def test_smsc_restart_reconnects_with_backoff(smsc_factory, closing):
    smsc = smsc_factory()
    p = provider(smsc, closing, max_reconnect_delay=0.2)
    assert (await p.send(TO, "code 1")).status == "sent"
    smsc.stop()
    down = await p.send(TO, "code 2")
    assert down.status == "retry"
    smsc.start()  # same port
    for _ in range(100):
        result = await p.send(TO, "code 2")
        if result.status == "sent":
            break
        await asyncio.sleep(0.05)
    assert result.status == "sent"
    assert [payload(e) for e in smsc.events("submit_sm")][-1] == b"code 2"
    assert len(smsc.events("bind")) == 2
