"""The portal page without a browser: what it reads from a controller's redirect, how
it is served, and the controller templates it ships."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from radiusd.clock import ManualClock
from radiusd.http import STATIC, start_http, stop_http
from radiusd.http.language import pick_language
from radiusd.http.portal import UI, chap_bytes_hex, controller, render
from radiusd.testing.server import loopback_config, running_server
from tests.portal_support import TEMPLATES, mikrotik_render


def _data(html: str) -> dict[str, object]:
    m = re.search(r'<script id="portal-data" type="application/json">(.*?)</script>', html)
    assert m is not None
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def test_mikrotik_octal_chap_values_become_bytes() -> None:
    assert chap_bytes_hex("\\001") == "01"
    assert chap_bytes_hex("\\357\\021\\000") == "ef1100"
    assert chap_bytes_hex("a1b2") == "a1b2"
    assert chap_bytes_hex("") == ""


def test_mikrotik_redirect_is_read() -> None:
    t = controller({"link-login-only": "http://10.5.50.1/login", "link-orig": "http://x/",
                    "chap-id": "\\042", "chap-challenge": "\\001\\002", "error": "Wrong password",
                    "username": "8701", "mac": "AA:BB:CC:DD:EE:FF"}, [])
    assert t == {"kind": "mikrotik", "url": "http://10.5.50.1/login", "dst": "http://x/",
                 "chap_id": "22", "chap_challenge": "0102", "error": "Wrong password",
                 "username": "8701", "mac": "AA:BB:CC:DD:EE:FF"}


def test_coovachilli_redirect_is_read() -> None:
    t = controller({"res": "failed", "uamip": "10.1.0.1", "uamport": "3990",
                    "challenge": "00ff" * 8, "reply": "Wrong password", "uid": "8701",
                    "userurl": "http://x/"}, [])
    assert t["kind"] == "chilli"
    assert t["url"] == "http://10.1.0.1:3990/logon"
    assert t["error"] == "Wrong password"
    assert t["challenge"] == "00ff" * 8
    assert controller({"res": "success", "uamip": "10.1.0.1"}, [])["connected"] is True


def test_generic_form_mode_and_allowed_hosts() -> None:
    t = controller({"login_url": "https://wifi.example/auth", "user_field": "user"}, [])
    assert (t["kind"], t["user_field"], t["pass_field"]) == ("form", "user", "password")
    refused = controller({"login_url": "https://evil.example/steal"}, ["wifi.example"])
    assert refused["kind"] == "" and refused["bad_target"] is True
    assert controller({"login_url": "javascript:alert(1)"}, [])["kind"] == ""


def test_page_escapes_what_the_controller_sends() -> None:
    html = render("en", {"link-login-only": "http://10.5.50.1/login",
                         "error": "<img src=x onerror=alert(1)></script>",
                         "username": '"><script>'}, [])
    assert "<img src=x" not in html
    assert "</script><" not in html.split('type="application/json">', 1)[1].split("</script>")[0]
    assert _data(html)["target"]["error"] == "<img src=x onerror=alert(1)></script>"  # type: ignore[index]


def test_every_ui_text_exists_in_three_languages() -> None:
    for key, texts in UI.items():
        assert set(texts) == {"kk", "ru", "en"}, key
        assert all(texts.values()), key


def test_language_choice() -> None:
    assert pick_language(None, "ru-RU,ru;q=0.9,en;q=0.8", "en") == "ru"
    assert pick_language(None, "de, en;q=0.1, kk;q=0.5", "ru") == "kk"
    assert pick_language("en", "ru", "kk") == "en"
    assert pick_language(None, "de-DE", "kk") == "kk"
    assert pick_language(None, None, "ru") == "ru"


async def test_page_and_assets_are_served_from_here(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]})
    async with running_server(config, ManualClock()) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(handle.url("/?lang=kk"),
                                 headers={"Accept-Language": "ru"}) as r:
                    html = await r.text()
                    assert r.headers["Content-Language"] == "kk"
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                assert '<html lang="kk">' in html
                assert '<label for="phone">' in html and '<label for="code">' in html
                assert "http://" not in html.replace('href="?', "") \
                    and "https://" not in html  # no external assets
                for asset in ("portal.css", "portal.js", "md5.js"):
                    async with s.get(handle.url(f"/static/{asset}")) as r:
                        assert r.status == 200
                        assert (await r.read()) == (STATIC / asset).read_bytes()
        finally:
            await stop_http(handle)


def test_template_md5_js_is_the_portals() -> None:
    ours = (STATIC / "md5.js").read_bytes()
    assert (TEMPLATES / "mikrotik" / "md5.js").read_bytes() == ours
    assert (TEMPLATES / "coovachilli" / "md5.js").read_bytes() == ours


def test_mikrotik_login_html_uses_the_hotspot_variables() -> None:
    page = (TEMPLATES / "mikrotik" / "login.html").read_text()
    for var in ("$(link-login-only)", "$(chap-id)", "$(chap-challenge)", "$(error)",
                "$(username)", "$(link-orig)"):
        assert var in page
    pap = mikrotik_render(page, {"link-login-only": "http://r/login", "error": "Wrong password"})
    assert "hexMD5(" not in pap and 'name="sendin"' not in pap  # http-pap: no CHAP
    assert "Wrong password" in pap
    assert "$(" not in pap
