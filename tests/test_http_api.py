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
from radiusd.config import ClientConfig
from radiusd.http import HttpHandle, start_http, stop_http
from radiusd.http.api import IpLimits, limit_key
from radiusd.radius.clients import ClientTable
from radiusd.testing.server import loopback_config, nas_for, running_server

PHONE = "8 701 234 56 78"


@pytest.fixture
async def http(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[Server, HttpHandle]]:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"], "per_ip_per_minute": 3,
                                             "allowed_origins": ["https://portal.example"]})
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
    server, handle = http
    # A caller that is not one of our NAS (a NAS's NAT gets NAS_FACTOR times more).
    server.clients = ClientTable([ClientConfig(name="far", address="192.0.2.1",
                                               secret="sixteen-chars-ok")])
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


async def test_not_json_is_refused(http: tuple[Server, HttpHandle]) -> None:
    """Form and text/plain bodies are what other sites can send without a preflight."""
    server, handle = http
    for ctype in ("application/x-www-form-urlencoded", "text/plain"):
        async with aiohttp.ClientSession() as s, s.post(
                handle.url("/api/v1/otp"), data=b'{"phone": "8 701 234 56 78"}',
                headers={"Content-Type": ctype}) as r:
            assert r.status == 415
            assert (await r.json())["message"] == "send Content-Type: application/json"
    assert (await _post(handle, ["not", "an", "object"]))[0] == 400
    assert await server.store.fetchall("SELECT id FROM sms_outbox") == []


async def test_other_websites_cannot_make_browsers_send_sms(
        http: tuple[Server, HttpHandle]) -> None:
    server, handle = http
    status, body, r = await _post(handle, {"phone": "8 701 234 56 78"},
                                  Origin="https://evil.example")
    assert status == 403 and body["error"] == "forbidden_origin"
    assert "Access-Control-Allow-Origin" not in r.headers
    status, _, r = await _post(handle, {"phone": "8 701 234 56 78"},
                               Origin="https://portal.example")
    assert status == 202 and r.headers["Access-Control-Allow-Origin"] == "https://portal.example"
    assert len(await server.store.fetchall("SELECT id FROM sms_outbox")) == 1  # only the listed


async def test_a_nas_address_gets_a_larger_ip_budget(http: tuple[Server, HttpHandle]) -> None:
    """The hotspot's browsers come through its NAT (127.0.0.1 is the localhost client)."""
    _, handle = http
    for n in range(10):
        assert (await _post(handle, {"phone": f"8 701 234 56 {n:02d}"}))[0] == 202


def test_ipv6_clients_are_counted_per_64() -> None:
    limits = IpLimits(per_minute=2, per_hour=100)
    assert limits.check("2001:db8:1:2::1", 0.0) == 0
    assert limits.check("2001:db8:1:2::ffff", 0.0) == 0
    assert limits.check("2001:db8:1:2:abcd::9", 0.0) > 0  # same /64: limited
    assert limits.check("2001:db8:1:3::1", 0.0) == 0  # another /64
    assert limit_key("::ffff:192.0.2.7") == "192.0.2.7"


async def test_cors_preflight_lets_an_external_portal_call(http: tuple[Server, HttpHandle]
                                                           ) -> None:
    _, handle = http
    async with aiohttp.ClientSession() as s, s.options(handle.url("/api/v1/otp"), headers={
            "Origin": "https://portal.example", "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://portal.example"
    async with aiohttp.ClientSession() as s, s.options(handle.url("/api/v1/otp"), headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers


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
    assert set(post["responses"]) == {"202", "400", "403", "429", "503"}  # 503: no database
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


async def test_the_api_has_its_own_budget_below_the_global_one(
        tmp_path: Path, clock: ManualClock) -> None:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"], "api_per_minute": 2})
    async with running_server(config, clock) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            for n in range(2):
                assert (await _post(handle, {"phone": f"8 701 234 56 7{n}"}))[0] == 202
            status, body, _ = await _post(handle, {"phone": "8 701 234 56 79"})
            assert (status, body["error"]) == (429, "busy")
            # RADIUS "Get password" still has the rest of [otp] global_per_minute.
            nas = nas_for(server, timeout=1, retries=1)
            answer = await nas.send(nas.access_request("8 701 234 56 79", ""))
            assert answer.get("Reply-Message").startswith("Password sent by SMS")
        finally:
            await stop_http(handle)
