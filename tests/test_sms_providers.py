"""The small providers (log, file, http), Kannel's answer mapping, and build_provider."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from radiusd.config import ConfigError, SmsConfig, SmsHttpConfig, SmsKannelConfig
from radiusd.sms import build_provider, mask
from radiusd.sms.file import FileProvider
from radiusd.sms.http import HttpProvider
from radiusd.sms.kannel import KannelProvider
from radiusd.sms.log import LogProvider

TO = "+77011234578"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_gateway() -> AsyncIterator[tuple[list[dict[str, Any]], Callable[..., str]]]:
    """A loopback HTTP endpoint answering as told and recording what it got."""
    seen: list[dict[str, Any]] = []
    answer: dict[str, Any] = {"status": 200, "body": "{}"}

    async def handle(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "query": dict(request.query),
                     "headers": dict(request.headers), "body": await request.text()})
        return web.Response(status=answer["status"], text=answer["body"])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def configure(status: int = 200, body: str = "{}") -> str:
        answer.update(status=status, body=body)
        return f"http://127.0.0.1:{port}"

    yield seen, configure
    await runner.cleanup()


def test_mask_keeps_prefix_and_last_two_digits() -> None:
    assert mask("+77011234578") == "+7701***78"


async def test_log_provider_warns_loudly_and_logs_the_text(caplog) -> None:
    caplog.set_level(logging.INFO, "radiusd.sms")
    p = LogProvider()
    result = await p.send(TO, "Код 482913")
    assert result.status == "sent"
    assert any(r.levelno == logging.WARNING and "trials only" in r.getMessage()
               for r in caplog.records)
    assert any("+7701***78" in r.getMessage() and "Код 482913" in r.getMessage()
               for r in caplog.records)
    assert all(TO not in r.getMessage() for r in caplog.records)


async def test_file_provider_appends_json_lines_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sms" / "outbox.jsonl"
    p = FileProvider(str(path))
    assert (await p.send(TO, "Код 1")).status == "sent"
    assert (await p.send(TO, 'say "2"')).status == "sent"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [{"to": TO, "text": "Код 1"}, {"to": TO, "text": 'say "2"'}]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_file_provider_unwritable_path_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    assert (await FileProvider(str(tmp_path / "dir")).send(TO, "x")).status == "retry"


async def test_http_json_body_is_filled_safely_and_headers_sent(fake_gateway) -> None:
    seen, configure = fake_gateway
    url = configure(200, '{"result": {"ok": true, "id": "A1"}}')
    p = HttpProvider(SmsHttpConfig(
        url=url + "/send", headers={"Authorization": "Bearer T0KEN"},
        body='{"msisdn": "{to}", "message": "{text}", "from": "{sender}"}',
        success_field="result.id"))
    try:
        result = await p.send(TO, 'Код "482913"\n')
    finally:
        await p.close()
    assert (result.status, result.ref) == ("sent", "A1")
    (req,) = seen
    assert req["method"] == "POST" and req["headers"]["Authorization"] == "Bearer T0KEN"
    assert json.loads(req["body"]) == {"msisdn": TO, "message": 'Код "482913"\n', "from": "WiFi"}


async def test_http_form_get_puts_fields_in_the_query(fake_gateway) -> None:
    seen, configure = fake_gateway
    p = HttpProvider(SmsHttpConfig(url=configure(200, "OK") + "/sms", method="GET",
                                   body="login=me&pass=secret&phone={to}&text={text}",
                                   body_format="form"))
    try:
        assert (await p.send(TO, "Код & 1")).status == "sent"
    finally:
        await p.close()
    assert seen[0]["query"] == {"login": "me", "pass": "secret", "phone": TO, "text": "Код & 1"}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (500, "oops", "retry"), (503, "", "retry"), (429, "", "retry"),
    (400, "bad number", "failed"), (401, "", "failed"),
    (200, '{"result": {"ok": false}}', "failed"), (200, "not json", "failed"),
])
async def test_http_answers_map_to_outcomes(fake_gateway, status, body, expected) -> None:
    _, configure = fake_gateway
    p = HttpProvider(SmsHttpConfig(url=configure(status, body), success_field="result.ok"))
    try:
        assert (await p.send(TO, "x")).status == expected
    finally:
        await p.close()


async def test_http_unreachable_is_temporary_and_secrets_never_logged(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    p = HttpProvider(SmsHttpConfig(url="http://127.0.0.1:9/send?key=SECRETKEY",
                                   headers={"X-Api-Key": "SECRETHDR"}, timeout_seconds=2))
    try:
        result = await p.send(TO, "Код 482913")
    finally:
        await p.close()
    assert result.status == "retry"
    text = caplog.text + result.detail
    assert "SECRET" not in text and "482913" not in text


def test_http_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sms\.http\.url"):
        HttpProvider(SmsHttpConfig())
    with pytest.raises(ConfigError, match=r"sms\.http\.body"):
        HttpProvider(SmsHttpConfig(url="http://x", body="{to}"))


def test_kannel_parameters_follow_sendsms() -> None:
    p = KannelProvider(SmsKannelConfig(username="u", password="p", sender="WiFi"))
    assert p.params(TO, "code 1") == {"username": "u", "password": "p", "from": "WiFi",
                                      "to": TO, "text": "code 1"}
    assert p.params(TO, "Код 1") | {} == {"username": "u", "password": "p", "from": "WiFi",
                                           "to": TO, "text": "Код 1", "coding": "2",
                                           "charset": "UTF-8"}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (202, "0: Accepted for delivery", "sent"), (202, "3: Queued for later delivery", "sent"),
    (503, "Temporal failure, try again later.", "retry"), (500, "", "retry"),
    (403, "Authorization failed for sendsms", "failed"), (400, "Missing receiver", "failed"),
])
async def test_kannel_answers_map_to_outcomes(fake_gateway, status, body, expected) -> None:
    _, configure = fake_gateway
    p = KannelProvider(SmsKannelConfig(url=configure(status, body) + "/cgi-bin/sendsms"))
    try:
        assert (await p.send(TO, "x")).status == expected
    finally:
        await p.close()


async def test_kannel_refused_connection_is_temporary() -> None:
    p = KannelProvider(SmsKannelConfig(url="http://127.0.0.1:9/cgi-bin/sendsms"))
    try:
        assert (await p.send(TO, "x")).status == "retry"
    finally:
        await p.close()


@pytest.mark.parametrize("kind", ["log", "file", "kannel", "http", "smpp"])
def test_build_provider_picks_the_configured_one(kind: str) -> None:
    cfg = SmsConfig.model_validate({"provider": kind, "http": {"url": "http://127.0.0.1/x"}})
    assert build_provider(cfg).name == kind
