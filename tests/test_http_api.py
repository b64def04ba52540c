"""The HTTP API against the real server on loopback: "Get password" (Rules §4-§6) with
the same rules, limits and messages as RADIUS, health, metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.http import HttpHandle, start_http, stop_http
from radiusd.testing.server import loopback_config, nas_for, running_server

PHONE = "8 701 234 56 78"


@pytest.fixture
async def http(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[Server, HttpHandle]]:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"], "per_ip_per_minute": 3})
    async with running_server(config, clock) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            yield server, handle
        finally:
            await stop_http(handle)


async def _post(handle: HttpHandle, body: Any, **headers: str) -> tuple[int, dict[str, Any],
                                                                         aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as s, \
            s.post(handle.url("/api/v1/otp"), json=body, headers=headers) as r:
        return r.status, await r.json(), r


async def _get(handle: HttpHandle, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as s, s.get(handle.url(path)) as r:
        return r.status, await r.text(), r


async def test_get_password_returns_202_and_queues_the_sms(http: tuple[Server, HttpHandle]
                                                           ) -> None:
    server, handle = http
    status, body, _ = await _post(handle, {"phone": PHONE})
    assert status == 202
    assert body == {"status": "sent", "phone": "+7 701 *** ** 78",
                    "message": "Password sent by SMS to +7 701 *** ** 78"}
    rows = await server.store.fetchall("SELECT recipient FROM sms_outbox")
    assert [r["recipient"] for r in rows] == ["+77012345678"]


@pytest.mark.parametrize(("phone", "reason"), [
    ("hello", "not_a_number"),
    ("+1 202 555 0100", "region_not_allowed"),
    ("8 727 258 58 58", "not_mobile"),  # an Almaty landline
    ("", "no_login"),
])
async def test_bad_number_is_400_with_the_radius_message(
        http: tuple[Server, HttpHandle], phone: str, reason: str) -> None:
    _, handle = http
    status, body, r = await _post(handle, {"phone": phone})
    assert status == 400
    assert body["error"] == reason
    assert body["message"]
    assert "Retry-After" not in r.headers


async def test_second_request_too_soon_is_429_with_retry_after(
        http: tuple[Server, HttpHandle], clock: ManualClock) -> None:
    _, handle = http
    assert (await _post(handle, {"phone": PHONE}))[0] == 202
    clock.advance(15)
    status, body, r = await _post(handle, {"phone": PHONE}, **{"Accept-Language": "ru"})
    assert status == 429
    assert r.headers["Retry-After"] == "45"
    assert body == {"error": "resend_wait", "retry_after": 45,
                    "message": "Новый пароль можно запросить через 45 с"}
    clock.advance(45)
    assert (await _post(handle, {"phone": PHONE}))[0] == 202


async def test_one_client_ip_is_limited_across_numbers(http: tuple[Server, HttpHandle],
                                                       clock: ManualClock) -> None:
    _, handle = http
    for n in range(3):
        assert (await _post(handle, {"phone": f"8 701 234 56 7{n}"}))[0] == 202
    status, body, r = await _post(handle, {"phone": "8 701 234 56 79"})
    assert status == 429
    assert body["error"] == "ip_limit"
    assert r.headers["Retry-After"] == "60"
    clock.advance(61)
    assert (await _post(handle, {"phone": "8 701 234 56 79"}))[0] == 202


async def test_language_from_body_then_accept_language(http: tuple[Server, HttpHandle]
                                                       ) -> None:
    _, handle = http
    _, body, _ = await _post(handle, {"phone": "x"}, **{"Accept-Language": "kk-KZ, ru;q=0.5"})
    assert body["message"].startswith("Бұл телефон нөмірі емес")
    _, body, _ = await _post(handle, {"phone": "x", "language": "ru"},
                             **{"Accept-Language": "kk"})
    assert body["message"].startswith("Это не номер телефона")


async def test_not_json_is_400(http: tuple[Server, HttpHandle]) -> None:
    _, handle = http
    async with aiohttp.ClientSession() as s, \
            s.post(handle.url("/api/v1/otp"), data=b"phone=1") as r:
        assert r.status == 400
        assert (await r.json())["error"] == "bad_request"
    assert (await _post(handle, ["not", "an", "object"]))[0] == 400


async def test_cors_preflight_lets_an_external_portal_call(http: tuple[Server, HttpHandle]
                                                           ) -> None:
    _, handle = http
    async with aiohttp.ClientSession() as s, s.options(handle.url("/api/v1/otp"), headers={
            "Origin": "https://portal.example", "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_healthz_reports_store_and_sms_worker(http: tuple[Server, HttpHandle]) -> None:
    server, handle = http
    status, text, _ = await _get(handle, "/healthz")
    import json

    body = json.loads(text)
    assert body["checks"]["store"] == "ok"
    if server.sms is not None:
        assert status == 200 and body == {"status": "ok",
                                          "checks": {"store": "ok", "sms": "ok"}}
        for task in server.background:
            if task.get_name() == "sms-outbox":
                task.cancel()
        await _settle(server)
        status, text, _ = await _get(handle, "/healthz")
        assert status == 503
        assert json.loads(text)["checks"]["sms"] == "stopped"
    else:
        assert status == 503


async def _settle(server: Server) -> None:
    import asyncio
    import contextlib

    for task in server.background:
        if task.cancelled() or task.done():
            continue
        if task.get_name() == "sms-outbox":
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_metrics_count_radius_http_passwords_and_sms(
        http: tuple[Server, HttpHandle]) -> None:
    server, handle = http
    nas = nas_for(server, timeout=1.0, retries=0)
    reply = await nas.send(nas.access_request(PHONE, ""))  # "Get password" over RADIUS
    assert reply.code == 3
    await nas.send_raw(b"\x01\x02junk", wait=0.05)
    await _post(handle, {"phone": "hello"})
    status, text, r = await _get(handle, "/metrics")
    assert status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    lines = set(text.splitlines())
    assert 'radiusd_radius_requests_total{port="auth",client="localhost",code="access_reject"} 1' \
        in lines
    assert 'radiusd_radius_sent_total{port="auth",code="access_reject"} 1' in lines
    assert 'radiusd_radius_received_total{port="auth"} 2' in lines
    assert any(x.startswith('radiusd_radius_dropped_total{reason="malformed.') for x in lines)
    assert 'radiusd_radius_request_duration_seconds_count{port="auth"} 1' in lines
    assert 'radiusd_radius_request_duration_seconds_bucket{port="auth",le="+Inf"} 1' in lines
    assert 'radiusd_passwords_issued_total 1' in lines
    assert 'radiusd_passwords_used_total 0' in lines
    assert any(x.startswith('radiusd_sms_messages{state="queued"}') for x in lines)
    assert 'radiusd_http_otp_requests_total{outcome="not_a_number"} 1' in lines
    assert 'radiusd_http_requests_total{route="/api/v1/otp",status="400"} 1' in lines
    assert 'radiusd_up{component="store"} 1' in lines
    for line in text.splitlines():  # every sample parses as "name{labels} number"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


async def test_openapi_document_describes_the_otp_call(http: tuple[Server, HttpHandle]
                                                       ) -> None:
    _, handle = http
    async with aiohttp.ClientSession() as s, s.get(handle.url("/api/v1/openapi.json")) as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/api/v1/otp"]["post"]
    assert set(post["responses"]) == {"202", "400", "429"}
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["phone"]


async def test_http_is_off_unless_listen_is_set(tmp_path: Path) -> None:
    async with running_server(loopback_config(tmp_path)) as server:
        assert await start_http(server) is None


async def test_start_http_is_idempotent(http: tuple[Server, HttpHandle]) -> None:
    server, handle = http
    assert await start_http(server) is handle
    assert server.http is handle


async def test_typos_do_not_use_up_the_ip_budget(http: tuple[Server, HttpHandle]) -> None:
    _, handle = http
    for _ in range(5):
        assert (await _post(handle, {"phone": "8 701"}))[0] == 400
    assert (await _post(handle, {"phone": PHONE}))[0] == 202


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    from types import SimpleNamespace

    from radiusd.http.api import client_ip

    req: Any = SimpleNamespace(remote="127.0.0.1",
                               headers={"X-Forwarded-For": "10.9.9.9, 10.0.0.7"})
    assert client_ip(req, []) == "127.0.0.1"
    assert client_ip(req, ["127.0.0.1"]) == "10.0.0.7"
    assert client_ip(req, ["127.0.0.1", "10.0.0.7"]) == "10.9.9.9"
