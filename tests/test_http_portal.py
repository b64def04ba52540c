"""The portal page without a browser: what it reads from a controller's redirect, how
it is served, and the controller templates it ships."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import aiohttp
import pytest

from radiusd.clock import ManualClock
from radiusd.http import STATIC, api, start_http, stop_http
from radiusd.http.chilli import (
    BadLogon,
    chap_response,
    host_allowed,
    logon_url,
    pap_password,
    signed_redirect,
    uam_challenge,
)
from radiusd.http.keys import CHILLI_LIMITS
from radiusd.http.language import pick_language
from radiusd.http.portal import (
    UI,
    chap_bytes_hex,
    controller,
    render,
    safe_login_url,
)
from radiusd.testing.server import loopback_config, running_server
from tests.portal_support import TEMPLATES, chilli_md, mikrotik_render


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
    q = {"login_url": "https://wifi.example/auth", "user_field": "user"}
    t = controller(q, ["wifi.example"])
    assert (t["kind"], t["user_field"], t["pass_field"]) == ("form", "user", "password")
    assert controller(q, [])["bad_target"] is True  # default: names are not allowed
    assert controller(q, ["*"])["kind"] == "form"
    refused = controller({"login_url": "https://evil.example/steal"}, ["wifi.example"])
    assert refused["kind"] == "" and refused["bad_target"] is True
    assert controller({"login_url": "javascript:alert(1)"}, [])["kind"] == ""


@pytest.mark.parametrize("url", [
    "http://evil.example\\@10.5.50.1/login",  # Chromium: host evil.example
    "http://evil.example\\10.5.50.1/login",
    "http://10.5.50.1\\@evil.example/login",
    "http://evil.example@10.5.50.1/login",  # userinfo
    "http://user:pass@10.5.50.1/login",
    "http://10.5.50.1@evil.example/login",
    "http://10.5.50.1/lo\tgin", "http://10.5.50.1/lo\ngin", "http://10.5.50.1/\r",
    " http://10.5.50.1/login", "http://10.5.50.1/login\x00", "http://10.5.50.1/\x85",
    "http://10.5.50.1\u3000/login",
    "http://8.8.8.8/login", "http://evil.example/login", "http://EVIL.example/login",
    "http://[2001:db8::1]/login", "http://[::ffff:8.8.8.8]/login",
    "http://0x0a050301/login", "http://10.1/login", "http://010.005.050.001/login",
    "http://0.0.0.0/login", "http://10.5.50.1:0/login", "http://10.5.50.1:65536/login",
    "http://10.5.50.1:\u00b3/login", "http://10.5.50.1:80x/login",
    "http://[fe80::1%25eth0]/login", "ftp://10.5.50.1/", "//10.5.50.1/login",
    "javascript://10.5.50.1/%0aalert(1)", "http:///10.5.50.1/", "",
])
def test_login_url_refused_by_default(url: str) -> None:
    assert safe_login_url(url, []) is None, url
    if url:
        assert controller({"link-login-only": url}, [])["bad_target"] is True
        assert controller({"login_url": url}, [])["bad_target"] is True


@pytest.mark.parametrize(("url", "rebuilt"), [
    ("http://10.5.50.1/login", "http://10.5.50.1/login"),
    ("HTTP://10.5.50.1/login?x=1#frag", "http://10.5.50.1/login?x=1"),
    ("http://192.168.88.1:8080/login", "http://192.168.88.1:8080/login"),
    ("https://172.16.0.1", "https://172.16.0.1/"),
    ("http://127.0.0.1:3990/logon", "http://127.0.0.1:3990/logon"),
    ("http://169.254.1.1/login", "http://169.254.1.1/login"),
    ("http://[FE80::0:1]:3990/logon", "http://[fe80::1]:3990/logon"),
    ("http://[fd00::1]/login", "http://[fd00::1]/login"),
    ("http://[::1]/login", "http://[::1]/login"),
    ("http://[::ffff:10.1.0.1]/login", "http://[::ffff:a01:1]/login"),
])
def test_login_url_allowed_by_default_is_rebuilt(url: str, rebuilt: str) -> None:
    assert safe_login_url(url, []) == rebuilt


def test_listed_login_hosts() -> None:
    hosts = ["Wifi.Example", "8.8.8.8", "2001:DB8::1"]
    assert safe_login_url("https://WIFI.example/auth", hosts) == "https://wifi.example/auth"
    assert safe_login_url("http://8.8.8.8/login", hosts) == "http://8.8.8.8/login"
    assert safe_login_url("http://[2001:db8:0::1]/x", hosts) == "http://[2001:db8::1]/x"
    # listing replaces the default: private addresses must then be listed too
    assert safe_login_url("http://10.5.50.1/login", hosts) is None
    assert safe_login_url("http://wifi.example.evil/x", hosts) is None
    assert safe_login_url("http://evil.example\\@wifi.example/x", hosts) is None
    assert safe_login_url("http://x@wifi.example/x", hosts) is None
    assert safe_login_url("http://evil.example/x", ["*"]) == "http://evil.example/x"
    assert safe_login_url("http://evil.example\\@x/", ["*"]) is None  # "*" still parses
    assert host_allowed("[FE80::1]", []) and not host_allowed("fe80::1%eth0", [])
    assert not host_allowed("100.64.0.1", []) and not host_allowed("192.0.2.1", [])


def test_only_the_rebuilt_url_reaches_the_page() -> None:
    raw = "http://10.5.50.1/login#<x>"
    html = render("en", {"link-login-only": raw}, [])
    assert _data(html)["target"]["url"] == "http://10.5.50.1/login"  # type: ignore[index]
    assert "#<x>" not in html and "#\\u003cx" not in html
    bad = render("en", {"link-login-only": "http://evil.example\\@10.5.50.1/login"}, [])
    assert "evil.example" not in _data(bad)["target"].get("url", "")  # type: ignore[attr-defined]
    assert "This login address is not allowed." in bad


def test_chilli_needs_a_real_challenge_and_port() -> None:
    q = {"res": "notyet", "uamip": "10.1.0.1", "uamport": "3990", "challenge": "ab" * 16}
    assert controller(q, [])["challenge"] == "ab" * 16
    assert controller({**q, "challenge": "00" * 16}, [])["challenge"] == ""
    assert controller({**q, "challenge": ""}, [])["challenge"] == ""
    assert controller({**q, "challenge": "ab"}, [])["challenge"] == ""
    for bad in ({"uamport": "\u00b3"}, {"uamport": "0"}, {"uamport": "3990/x"},
                {"uamip": "8.8.8.8"}, {"uamip": "evil.example"}, {"uamip": "10.1.0.1/x"},
                {"uamip": "10.1.0.1@evil.example"}, {"uamip": "evil.example\\@10.1.0.1"}):
        assert controller({**q, **bad}, [])["bad_target"] is True, bad
    assert controller({**q, "uamip": "fe80::1"}, [])["url"] == "http://[fe80::1]:3990/logon"
    assert controller({**q, "uamip": "chilli.example"},
                      ["chilli.example"])["url"] == "http://chilli.example:3990/logon"


def test_portal_js_refuses_chilli_without_a_challenge() -> None:
    js = (STATIC / "portal.js").read_text()
    assert 'target.kind === "chilli" && !target.challenge' in js
    assert "encodeURIComponent(password)" not in js  # never the code in clear


def test_controller_text_is_labelled() -> None:
    for lang, label in (("en", "Access point says:"), ("ru", "Сообщение точки доступа:"),
                        ("kk", "Кіру нүктесінің хабары:")):
        html = render(lang, {"link-login-only": "http://10.5.50.1/login",
                             "error": "Call +7 700 000 00 00"}, [])
        assert f"{label} Call +7 700 000 00 00" in html
        chilli = render(lang, {"uamip": "10.1.0.1", "res": "failed", "reply": "Pay here"}, [])
        assert f"{label} Pay here" in chilli


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
                    csp = r.headers["Content-Security-Policy"]
                    assert "default-src 'self'" in csp and "base-uri 'none'" in csp
                    assert "form-action *" in csp  # see portal.py: redirects after login
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


# -- CoovaChilli with a uamsecret: the logon answered by radiusd ---------------------------

CHALLENGE = "0123456789abcdeffedcba9876543210"
UAMSECRET = "greatsecret"


def test_uamsecret_worked_example() -> None:
    """Computed outside Python (md5sum / perl with hotspotlogin.cgi's lines
    `$newchal = md5($hexchal, $uamsecret)`, `md5_hex("\\0", $password, $newchal)`,
    `unpack "H*", substr($password ^ $newchal, ...)`) and again with hashlib here."""
    ch = bytes.fromhex(CHALLENGE)
    newchal = hashlib.md5(ch + UAMSECRET.encode()).digest()
    assert newchal.hex() == "44904365a7fef3cb2c34006dce72d826"
    assert uam_challenge(ch, UAMSECRET) == newchal
    assert uam_challenge(ch, "") == ch  # no secret: the challenge itself

    assert chap_response("123456", ch, UAMSECRET) == "2eb031b01ec4549d59ed9e3cfa2d1d2c"
    assert chap_response("123456", ch, UAMSECRET) == \
        hashlib.md5(b"\x00" + b"123456" + newchal).hexdigest()
    # without a secret: what the browser computes today
    assert chap_response("123456", ch, "") == "53e3e88d228adde4c111db1405a9cd0c"

    assert pap_password("123456", ch, UAMSECRET) == "75a2705192c8"
    long = "abcdefghijklmnopqrstu"  # longer than the challenge: it repeats
    assert pap_password(long, ch, UAMSECRET) == "25f22001c29894a3455e6b01a31cb75635e23011d2"
    # and chilli's redir.c gets the password back: password[m] ^ chap_challenge[m % 16]
    sent = bytes.fromhex(pap_password(long, ch, UAMSECRET))
    assert bytes(b ^ newchal[i % 16] for i, b in enumerate(sent)).decode() == long


def test_logon_url_and_what_it_refuses() -> None:
    args = dict(uamip="10.1.0.1", uamport="3990", challenge=CHALLENGE,
                username="8 701 234 56 78", password="123456", userurl="http://x/?a=1&b=2",
                pap=False, uamsecret=UAMSECRET, allowed_hosts=[])
    url = logon_url(**args)  # type: ignore[arg-type]
    assert url == ("http://10.1.0.1:3990/logon?username=8%20701%20234%2056%2078"
                   "&response=2eb031b01ec4549d59ed9e3cfa2d1d2c"
                   "&userurl=http%3A%2F%2Fx%2F%3Fa%3D1%26b%3D2")
    pap = logon_url(**{**args, "pap": True, "userurl": ""})  # type: ignore[arg-type]
    assert pap.endswith("&password=75a2705192c8")
    assert logon_url(**{**args, "uamip": "fe80::1"}).startswith(  # type: ignore[arg-type]
        "http://[fe80::1]:3990/logon?")
    assert logon_url(**{**args, "allowed_hosts": ["10.1.0.1"]})  # type: ignore[arg-type]
    assert logon_url(**{**args, "uamip": "8.8.8.8", "allowed_hosts": ["8.8.8.8"]})  # type: ignore[arg-type]
    for bad in ({"uamip": "evil.example"}, {"uamip": "10.1.0.1/x"}, {"uamip": ""},
                {"uamip": "10.1.0.1@evil.example"}, {"uamport": "0"}, {"uamport": "3990/x"},
                {"uamport": "65536"}, {"uamport": "\u00b3"}, {"uamport": "\u0663\u0669"},
                {"uamport": "+80"}, {"challenge": "00ff"}, {"challenge": "zz" * 16},
                {"challenge": "00" * 16}, {"username": ""}, {"password": "1" * 129},
                {"allowed_hosts": ["10.9.9.9"]}, {"uamip": "8.8.8.8"},
                {"uamip": "fe80::1%eth0"}):
        with pytest.raises(BadLogon):
            logon_url(**{**args, **bad})  # type: ignore[arg-type]


def test_chilli_page_with_uamsecret_posts_to_radiusd() -> None:
    q = {"res": "notyet", "uamip": "10.1.0.1", "uamport": "3990", "challenge": CHALLENGE,
         "userurl": "http://x/"}
    t = controller(q, [], chilli_logon=True)
    assert (t["kind"], t["logon"]) == ("chilli", "/portal/chilli-logon")
    assert "uamip" not in t  # radiusd reads them from chilli's signed redirect
    assert "logon" not in controller(q, [])  # no secret: the browser answers
    # a host name cannot be checked as a literal: refused up front
    assert controller({**q, "uamip": "evil.example"}, [], chilli_logon=True)["bad_target"]
    assert controller({**q, "uamip": "chilli.example"}, ["chilli.example"],
                      chilli_logon=True)["bad_target"]


def _signed(query: str, secret: str = UAMSECRET, base: str = "http://radiusd:8080/") -> str:
    url = f"{base}?{query}"
    return f"{url}&md={chilli_md(url, secret)}"


def test_signed_redirect_checks_chillis_md() -> None:
    query = (f"res=notyet&uamip=10.1.0.1&uamport=3990&challenge={CHALLENGE}"
             "&called=00-11-22-33-44-55&mac=AA-BB-CC-DD-EE-FF&ip=10.1.0.2"
             "&userurl=http%3a%2f%2fexample.test%2f%3fa%3d1")
    page = _signed(query)
    got = signed_redirect(page, UAMSECRET)
    assert (got["uamip"], got["uamport"], got["challenge"], got["userurl"]) == \
        ("10.1.0.1", "3990", CHALLENGE, "http://example.test/?a=1")
    # lower-case md, a fragment, and the language switch's `lang` after md are fine
    assert signed_redirect(page + "&lang=kk#top", UAMSECRET)["uamip"] == "10.1.0.1"
    md = page.rsplit("=", 1)[1]
    assert signed_redirect(page.replace(md, md.lower()), UAMSECRET)["uamip"] == "10.1.0.1"
    # anything after md is not signed and not read
    assert "uamip" not in signed_redirect(_signed("res=notyet") + "&uamip=8.8.8.8",
                                          UAMSECRET)
    for bad in (page.replace("10.1.0.1", "10.1.0.9"),  # changed target
                page.replace(CHALLENGE, "ab" * 16),  # chosen challenge
                _signed(query, "another"),  # another secret
                page.split("&md=")[0],  # unsigned
                page.replace("http://", "javascript://"), "", "x" * 5000):
        with pytest.raises(BadLogon):
            signed_redirect(bad, UAMSECRET)


def test_language_switch_keeps_a_signed_query() -> None:
    raw = (f"res=notyet&uamip=10.1.0.1&uamport=3990&challenge={CHALLENGE}"
           "&userurl=http%3a%2f%2fx%2f&md=ABCDEF&lang=ru")
    q = dict(parse_qsl(raw))
    html = render("ru", q, [], chilli_logon=True, raw_query=raw)
    assert ('href="?res=notyet&amp;uamip=10.1.0.1&amp;uamport=3990&amp;challenge='
            f'{CHALLENGE}&amp;userurl=http%3a%2f%2fx%2f&amp;md=ABCDEF&amp;lang=kk"') in html


def _chilli_page(secret: str = UAMSECRET, **change: str) -> str:
    """chilli's signed redirect to the portal, as the page posts it (`page`)."""
    params = {"res": "notyet", "uamip": "10.1.0.1", "uamport": "3990",
              "challenge": CHALLENGE, "userurl": "http://example.test/", **change}
    return _signed(urlencode({k: v for k, v in params.items() if v is not None}), secret)


async def test_chilli_logon_endpoint(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, http={
        "listen": ["127.0.0.1:0"], "coovachilli_uamsecret": UAMSECRET,
        "portal_login_hosts": ["10.1.0.1", "wifi.example", "8.8.8.8"]})
    form = {"page": _chilli_page(), "username": "8 701 234 56 78",
            "password": "123456", "lang": "en"}
    bodies: list[str] = []
    async with running_server(config, ManualClock()) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(handle.url("/"), params={
                        "res": "notyet", "uamip": "10.1.0.1", "uamport": "3990",
                        "challenge": CHALLENGE}) as r:
                    html = await r.text()
                    bodies.append(html)
                    csp = r.headers["Content-Security-Policy"]
                assert _data(html)["target"]["logon"] == "/portal/chilli-logon"  # type: ignore[index]
                assert "base-uri 'none'" in csp
                for asset in ("portal.js", "md5.js"):
                    async with s.get(handle.url(f"/static/{asset}")) as r:
                        bodies.append(await r.text())

                async def post(**change: str) -> aiohttp.ClientResponse:
                    async with s.post(handle.url("/portal/chilli-logon"),
                                      data={**form, **change}, allow_redirects=False) as r:
                        bodies.append(await r.text())
                        return r

                r = await post()
                assert r.status == 303
                assert r.headers["Cache-Control"] == "no-store"
                loc = urlsplit(r.headers["Location"])
                assert (loc.scheme, loc.netloc, loc.path) == ("http", "10.1.0.1:3990", "/logon")
                assert parse_qs(loc.query) == {
                    "username": ["8 701 234 56 78"],
                    "response": ["2eb031b01ec4549d59ed9e3cfa2d1d2c"],
                    "userurl": ["http://example.test/"]}
                r = await post(page=_chilli_page(pap="1"))
                assert r.status == 303
                assert parse_qs(urlsplit(r.headers["Location"]).query)["password"] == \
                    ["75a2705192c8"]
                # fields next to `page` are not believed: only chilli's signed values
                r = await post(uamip="8.8.8.8", challenge="ab" * 16, userurl="http://evil/")
                assert urlsplit(r.headers["Location"]).netloc == "10.1.0.1:3990"
                assert "evil" not in r.headers["Location"]

                limits = handle.app[CHILLI_LIMITS]
                assert isinstance(limits, api.IpLimits)
                limits.minute.clear()
                limits.hour.clear()
                for bad in ({"page": _chilli_page(uamip="evil.example")},
                            {"page": _chilli_page(uamip="10.9.9.9")},
                            {"page": _chilli_page(uamip="wifi.example")},
                            {"page": _chilli_page(uamport="x")},
                            {"page": _chilli_page(uamport="\u00b3")},  # was a 500
                            {"page": _chilli_page(uamport="\u0663")},
                            {"page": _chilli_page(challenge="nothex")},
                            {"page": _chilli_page(challenge="00" * 16)},
                            {"page": _chilli_page(secret="another")},
                            {"page": _chilli_page().replace("10.1.0.1", "8.8.8.8")},
                            {"page": _chilli_page().split("&md=")[0]},
                            {"page": ""}):
                    r = await post(**bad)
                    assert r.status == 400, bad
                    assert "Location" not in r.headers
                assert bodies[-1] == "This login address is not allowed."
                # refused input did not count against the per-IP limit
                assert not limits.minute and not limits.hour

                limits.per_minute = 1
                assert (await post()).status == 303
                r = await post()
                assert r.status == 429 and int(r.headers["Retry-After"]) > 0
                assert (await post(page="")).status == 400  # checked before the limit
        finally:
            await stop_http(handle)
    assert all(UAMSECRET not in b for b in bodies)


async def test_chilli_logon_is_off_without_a_secret(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]})
    async with running_server(config, ManualClock()) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            form = {"uamip": "10.1.0.1", "uamport": "3990", "challenge": CHALLENGE,
                    "username": "8701", "password": "1"}
            async with aiohttp.ClientSession() as s, s.post(
                    handle.url("/portal/chilli-logon"), data=form,
                    allow_redirects=False) as r:
                assert r.status == 404
        finally:
            await stop_http(handle)
