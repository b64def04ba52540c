"""The rules' own words (issue 14 item 7): Rules §4-§7 name the fields "Логин" and
"Пароль" and the button "Парольды алу" (Kazakh text of Order No. 67 of 2016, §4:
«"Логин", "Пароль" жолы және "Парольды алу" белсенді элементі»); Russian
and English say Логин / Пароль / Получить пароль and Login / Password / Get password.
Checked on the page radiusd serves and in the MikroTik and CoovaChilli templates, from
the HTML itself (no browser, so this never skips)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import aiohttp
import pytest

from radiusd import messages
from radiusd.clock import ManualClock
from radiusd.http import start_http, stop_http
from radiusd.http.portal import UI
from radiusd.testing.server import loopback_config, running_server

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = [REPO / "portal" / "mikrotik" / "login.html",
             REPO / "portal" / "coovachilli" / "hotspotlogin.html"]

# language: (login field, password field, the button), as the rules name them.
WORDS = {
    "kk": ("Логин", "Пароль", "Парольды алу"),
    "ru": ("Логин", "Пароль", "Получить пароль"),
    "en": ("Login", "Password", "Get password"),
}


def assert_rules_words(lang: str, login: str, password: str, button: str) -> None:
    want_login, want_password, want_button = WORDS[lang]
    assert login.startswith(want_login), (lang, login)  # e.g. "Логин (ұялы телефон нөмірі)"
    assert password.startswith(want_password), (lang, password)
    assert button == want_button, (lang, button)


def template_texts(path: Path) -> dict[str, dict[str, str]]:
    """The `T = {kk: {...}, ru: {...}, en: {...}}` table the template's script applies."""
    source = path.read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    for lang in WORDS:
        m = re.search(rf"^\s*{lang}: \{{(.*)\}},?$", source, re.MULTILINE)
        assert m, f"{path.name}: no {lang} texts"
        out[lang] = {k: v for k, v in re.findall(r'(\w+): "((?:[^"\\]|\\.)*)"', m.group(1))}
    return out


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.parent.name)
def test_controller_templates_use_the_rules_words_in_each_language(template: Path) -> None:
    texts = template_texts(template)
    for lang in WORDS:
        t = texts[lang]
        assert_rules_words(lang, t["login"], t["password"], t["get"])
        assert "Құпиясөз" not in str(t) and "құпиясөз" not in str(t)
    # What the page shows before its script runs (English) carries the same names.
    source = template.read_text(encoding="utf-8")
    static = {key: html.unescape(value) for key, value in re.findall(
        r'<(?:label|button)[^>]*data-t="(login|password|get)"[^>]*>([^<]*)<', source)}
    assert_rules_words("en", static["login"], static["password"], static["get"])


async def test_the_served_page_uses_the_rules_words_in_each_language(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]})
    async with running_server(config, ManualClock()) as server:
        handle = await start_http(server)
        assert handle is not None
        try:
            async with aiohttp.ClientSession() as s:
                for lang in WORDS:
                    async with s.get(handle.url(f"/?lang={lang}")) as r:
                        assert r.status == 200
                        page = await r.text()
                    login = re.search(r'<label for="phone">([^<]*)</label>', page)
                    password = re.search(r'<label for="code">([^<]*)</label>', page)
                    button = re.search(r'<button[^>]*id="get"[^>]*>([^<]*)</button>', page)
                    assert login and password and button, page
                    assert_rules_words(lang, html.unescape(login.group(1)),
                                       html.unescape(password.group(1)),
                                       html.unescape(button.group(1)))
        finally:
            await stop_http(handle)


def test_kazakh_messages_say_parol_and_name_the_button_as_the_rules_do() -> None:
    assert messages.text("password_expired", "kk").endswith(
        "«Парольды алу» батырмасын басыңыз")
    assert messages.sms_text("kk", "123456") == "Wi-Fi паролі: 123456"
    kk = [t["kk"] for t in messages.TEXTS.values()] + [t["kk"] for t in UI.values()]
    assert not [t for t in kk if "құпиясөз" in t.lower()]
