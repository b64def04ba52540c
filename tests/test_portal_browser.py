"""The portal page in Debian's Chromium, against the real server and a test controller.

The user's path (Rules §4-§9): the controller redirects to the portal; type the number,
press "Get password", read the SMS, type the code, log in, see the controller's page;
log out (Accounting-Stop) and the same code no longer works. Screenshots of each state
go to test-artifacts/portal/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.http import HttpHandle, start_http, stop_http
from radiusd.testing.server import loopback_config, nas_for, running_server
from tests.conftest import require_peer
from tests.portal_support import BROWSER_ARGS, TestController, artifact, read_code

PHONE = "8 701 234 56 78"
E164 = "+77012345678"
PHONE_SCREEN = {"width": 390, "height": 740}


@dataclass
class Rig:
    server: Server
    http: HttpHandle
    controller: TestController
    page: Any
    sms: Path
    clock: ManualClock

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=artifact(name), full_page=True)

    async def get_password(self, phone: str = PHONE) -> None:
        await self.get_password_on("#phone", phone)

    async def get_password_on(self, field: str, phone: str = PHONE) -> None:
        await self.page.fill(field, phone)
        await self.page.click("#get")


async def _rig(tmp_path: Path, kind: str, locale: str, uamsecret: str = "",
               pap: bool = False, controller_secret: str | None = None,
               ) -> AsyncIterator[Rig]:
    """`uamsecret`: radiusd's [http] coovachilli_uamsecret and chilli's HS_UAMSECRET
    (`controller_secret` when chilli's differs)."""
    chromium = require_peer("/usr/bin/chromium", "chromium")
    from playwright.async_api import async_playwright

    clock = ManualClock()
    config = loopback_config(
        tmp_path, http={"listen": ["127.0.0.1:0"], "coovachilli_uamsecret": uamsecret},
        sms={"provider": "file"})
    async with running_server(config, clock) as server:
        handle = await start_http(server)
        assert handle is not None
        controller = TestController(
            nas_for(server, timeout=2.0, retries=1), handle.url("/"), kind=kind,
            uamsecret=uamsecret if controller_secret is None else controller_secret, pap=pap)
        await controller.start()
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
                context = await browser.new_context(
                    viewport=PHONE_SCREEN, locale=locale, device_scale_factor=1,
                    extra_http_headers={"Accept-Language": locale})
                page = await context.new_page()
                page.set_default_timeout(8000)
                try:
                    yield Rig(server, handle, controller, page,
                              Path(config.sms.file.path), clock)
                finally:
                    await browser.close()
        finally:
            await controller.stop()
            await stop_http(handle)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in _rig(tmp_path, "mikrotik", "en-US"):
        yield r


async def test_phone_login_through_portal_then_stop_kills_the_code(rig: Rig) -> None:
    page = rig.page
    await page.goto(rig.controller.base + "/")
    assert page.url.startswith(rig.http.url("/"))
    await page.wait_for_selector("text=Get password")
    await rig.shot("01-portal")

    await rig.get_password()
    status = page.locator("#status")
    await status.filter(has_text="Password sent by SMS").wait_for()
    await rig.shot("02-password-sent")

    code = await read_code(rig.server, E164, rig.sms)
    await page.fill("#code", code)
    await rig.shot("03-code-typed")
    await page.click("#submit")
    await page.wait_for_url(rig.controller.base + "/status")
    assert await page.inner_text("h1") == "You are logged in"
    assert await page.inner_text("#user") == PHONE
    await rig.shot("04-controller-success")

    await page.click("#logout")
    await page.wait_for_selector("text=You have logged out")
    assert rig.controller.log[-1] == "accounting stop"

    # Rules §8-§9: the password died with the session; the same code fails.
    await page.goto(rig.controller.base + "/")
    await page.fill("#phone", PHONE)
    await page.fill("#code", code)
    await page.click("#submit")
    await status.filter(has_text="no longer valid").wait_for()
    assert "error" in (await status.get_attribute("class") or "")
    assert await page.input_value("#phone") == PHONE  # the controller gave it back
    await rig.shot("05-code-dead-after-stop")


async def test_wrong_code_shows_the_servers_message(rig: Rig) -> None:
    page = rig.page
    await page.goto(rig.controller.base + "/")
    await rig.get_password()
    await page.locator("#status").filter(has_text="Password sent").wait_for()
    code = await read_code(rig.server, E164, rig.sms)
    wrong = "000000" if code != "000000" else "111111"
    await page.fill("#code", wrong)
    await page.click("#submit")
    await page.locator("#status").filter(has_text="Wrong password").wait_for()
    await rig.shot("06-wrong-code")
    # and the right one still works after a wrong try
    await page.fill("#code", code)
    await page.click("#submit")
    await page.wait_for_url(rig.controller.base + "/status")


async def test_second_press_too_soon_shows_the_wait(rig: Rig) -> None:
    page = rig.page
    await page.goto(rig.controller.base + "/")
    await rig.get_password()
    await page.locator("#status").filter(has_text="Password sent").wait_for()
    await page.click("#get")
    await page.locator("#status").filter(has_text="new password in 60 s").wait_for()
    await rig.shot("07-rate-limited")
    await page.fill("#phone", "12")
    await page.click("#get")
    await page.locator("#status").filter(has_text="not a phone number").wait_for()


async def test_language_from_browser_and_switch_keeps_the_controller(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, "mikrotik", "ru-RU"):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        assert await page.get_attribute("html", "lang") == "ru"
        assert await page.inner_text("label[for=phone]") == "Логин (номер мобильного)"
        await rig.shot("08-russian")
        await page.click("a[hreflang=kk]")
        await page.wait_for_selector("html[lang=kk]")
        assert await page.inner_text("#get") == "Парольды алу"
        await rig.shot("09-kazakh")
        # keyboard only: Tab from the number reaches "Get password"; Enter presses it
        await page.focus("#phone")
        await page.keyboard.type(PHONE)
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        await page.locator("#status").filter(has_text="SMS арқылы").wait_for()
        code = await read_code(rig.server, E164, rig.sms)
        await page.fill("#code", code)
        await page.keyboard.press("Enter")
        await page.wait_for_url(rig.controller.base + "/status")


async def test_coovachilli_uam_chap_login(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, "chilli", "en"):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        await rig.get_password()
        await page.locator("#status").filter(has_text="Password sent").wait_for()
        code = await read_code(rig.server, E164, rig.sms)
        await page.fill("#code", code)
        await page.click("#submit")
        await page.locator("#status").filter(has_text="You are connected").wait_for()
        assert "res=success" in page.url
        await rig.shot("10-chilli-connected")


async def test_mikrotik_login_html_get_password_then_login(tmp_path: Path) -> None:
    """portal/mikrotik/login.html on the router: "Get password" is a CHAP login with an
    empty password; the Reply-Message comes back as $(error)."""
    async for rig in _rig(tmp_path, "mikrotik-page", "en"):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        assert page.url == rig.controller.base + "/login"
        await rig.get_password_on("#username")
        await page.locator("#status").filter(has_text="Password sent by SMS").wait_for()
        assert await page.input_value("#username") == PHONE
        await rig.shot("11-mikrotik-page-sent")
        code = await read_code(rig.server, E164, rig.sms)
        await page.fill("#password", code)
        await page.click("#submit")
        await page.wait_for_url(rig.controller.base + "/status")


async def test_coovachilli_page_get_password_then_login(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, "chilli-page", "ru"):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        assert "/hotspotlogin.html?" in page.url
        assert await page.inner_text("#get") == "Получить пароль"
        await rig.get_password_on("#username")
        await page.locator("#status").filter(has_text="Password sent by SMS").wait_for()
        await rig.shot("12-chilli-page-sent")
        code = await read_code(rig.server, E164, rig.sms)
        await page.fill("#password", code)
        await page.click("#submit")
        await page.locator("#status").filter(has_text="Вы подключены").wait_for()


UAMSECRET = "s3cret-uam"


@pytest.mark.parametrize("pap", [False, True], ids=["chap", "pap"])
async def test_coovachilli_with_uamsecret_logs_on_through_radiusd(
        tmp_path: Path, pap: bool) -> None:
    """HS_UAMSECRET set: the page posts the code to radiusd, which answers the challenge
    with the secret and sends the browser to chilli's /logon; chilli sends RADIUS with
    CHAP-Challenge = MD5(challenge + uamsecret) (or the XORed-back PAP password)."""
    async for rig in _rig(tmp_path, "chilli", "en", uamsecret=UAMSECRET, pap=pap):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        assert UAMSECRET not in await page.content()
        # the language link keeps chilli's signed query (md=) byte for byte
        await page.click("a[hreflang=en]")
        await page.wait_for_url("**&md=*&lang=en")
        await rig.get_password()
        await page.locator("#status").filter(has_text="Password sent").wait_for()
        code = await read_code(rig.server, E164, rig.sms)
        await page.fill("#code", code)
        await page.click("#submit")
        await page.locator("#status").filter(has_text="You are connected").wait_for()
        assert "res=success" in page.url
        assert rig.controller.log[-3] == "logon " + ("password" if pap else "response")
        assert rig.controller.log[-2].startswith("access accept")
        assert UAMSECRET not in await page.content()
        if not pap:
            await rig.shot("13-chilli-uamsecret-connected")


async def test_coovachilli_uamsecret_mismatch_is_refused(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, "chilli", "en", uamsecret=UAMSECRET,
                          controller_secret="another"):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        await rig.get_password()
        await page.locator("#status").filter(has_text="Password sent").wait_for()
        await page.fill("#code", await read_code(rig.server, E164, rig.sms))
        await page.click("#submit")
        # chilli signed its redirect (md=) with another secret: radiusd refuses it
        # before answering the challenge, and the code never reaches chilli
        await page.wait_for_selector("text=This login address is not allowed.")
        assert not any(line.startswith("logon") for line in rig.controller.log)


async def test_coovachilli_page_with_uamsecret(tmp_path: Path) -> None:
    """portal/coovachilli/hotspotlogin.html with LOGON_SERVICE set: "Get password" and
    the login both go through radiusd's /portal/chilli-logon."""
    async for rig in _rig(tmp_path, "chilli-page", "en", uamsecret=UAMSECRET):
        page = rig.page
        await page.goto(rig.controller.base + "/")
        await rig.get_password_on("#username")
        await page.locator("#status").filter(has_text="Password sent by SMS").wait_for()
        code = await read_code(rig.server, E164, rig.sms)
        await page.fill("#password", code)
        await page.click("#submit")
        await page.locator("#status").filter(has_text="You are connected").wait_for()
        assert rig.controller.log[-2].startswith("access accept")


async def test_crafted_login_targets_are_refused_in_chromium(rig: Rig) -> None:
    """`http://evil\\@127.0.0.1/login`: Python's urlsplit sees 127.0.0.1, Chromium
    evil. The page refuses it, so nothing is posted anywhere."""
    page = rig.page
    port = rig.controller.base.rsplit(":", 1)[1]
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    for target in (f"http://evil.example\\@127.0.0.1:{port}/login",
                   f"http://evil.example@127.0.0.1:{port}/login",
                   f"http://127.0.0.1:{port}/lo\tgin", "http://8.8.8.8/login"):
        await page.goto(rig.http.url("/") + "?" + urlencode({"link-login-only": target}))
        await page.locator("#status").filter(
            has_text="This login address is not allowed.").wait_for()
        await page.fill("#phone", PHONE)
        await page.fill("#code", "123456")
        await page.click("#submit")
        await page.locator("#status").filter(has_text="open this page from").wait_for()
    assert posted == []


async def test_chilli_without_a_challenge_does_not_send_the_code(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, "chilli", "en"):
        page = rig.page
        for challenge in ("", "00" * 16):
            await page.goto(rig.controller.portal_url(challenge=challenge))
            await page.fill("#phone", PHONE)
            await page.fill("#code", "123456")
            await page.click("#submit")
            await page.locator("#status").filter(
                has_text="This login address is not allowed.").wait_for()
        assert not any(line.startswith("logon") for line in rig.controller.log)


async def test_chilli_page_sends_the_code_only_to_its_own_chilli(tmp_path: Path) -> None:
    """portal/coovachilli/hotspotlogin.html: uamip must be the host that served the
    page (or in ALLOWED_UAMIPS); no challenge or an all-zero one is refused."""
    async for rig in _rig(tmp_path, "chilli-page", "en"):
        page = rig.page
        requests: list[str] = []
        page.on("request", lambda r, seen=requests: seen.append(r.url))
        for change in ({"uamip": "10.9.9.9"}, {"challenge": "00" * 16}, {"challenge": ""},
                       {"uamport": "1/x"}):
            await page.goto(rig.controller.portal_url(**change))
            await page.fill("#username", PHONE)
            await page.fill("#password", "123456")
            await page.click("#submit")
            await page.locator("#status").filter(
                has_text="This login address is not allowed.").wait_for()
        assert not any("/logon" in u for u in requests)
        # a reply in the link is labelled as the access point's, not the page's
        await page.goto(rig.controller.portal_url(res="failed", reply="Call 8 700"))
        await page.locator("#status").filter(has_text="Access point says: Call 8 700").wait_for()
