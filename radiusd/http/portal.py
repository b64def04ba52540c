"""The hosted portal page at `/`: "Login", "Get password", "Password" (Rules §4).

Controllers that redirect to an external portal put their login URL and challenge in
the query string; this page reads them, asks `/api/v1/otp` for the SMS and submits the
login back to the controller, which then sends RADIUS to us:

- MikroTik Hotspot: `link-login-only`, `link-orig`, `chap-id`, `chap-challenge`
  (octal-escaped as in MikroTik's `$(chap-id)`), `error`, `username`, `mac`;
  PAP, or `http-chap` (MD5(chap-id + password + chap-challenge), RFC 1994).
- CoovaChilli UAM: `uamip`, `uamport`, `challenge`, `userurl`, `res`, `reply`, `uid`,
  `mac`; CHAP (`response`) by default, PAP (`password` XOR challenge) with `pap=1`.
  With `[http] coovachilli_uamsecret` the page posts the login to
  `/portal/chilli-logon`, which answers with the secret (`radiusd.http.chilli`).
- Generic: `login_url` (form POST of `username` / `password`, renamed with
  `user_field` / `pass_field`), `dst`, `error`.

Everything the page needs is served from here: the user is not online yet.

The login target comes from a link anyone can craft, so it is checked
(`safe_login_url`): http(s) only, no userinfo, backslash, whitespace or control
characters, a host allowed by `portal_login_hosts` (empty: private, link-local and
loopback IP literals), and only the URL rebuilt from the parsed parts reaches the page.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from html import escape
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from radiusd.http import chilli
from radiusd.http.keys import SERVER
from radiusd.http.language import LANGUAGES, pick_language

UI: dict[str, dict[str, str]] = {
    "title": {"kk": "Wi-Fi желісіне кіру", "ru": "Вход в Wi-Fi", "en": "Wi-Fi login"},
    "intro": {
        "kk": "Ұялы телефон нөмірін енгізіп, «Парольды алу» батырмасын басыңыз, "
              "содан кейін SMS-тегі парольді енгізіңіз.",
        "ru": "Введите номер мобильного телефона, нажмите «Получить пароль» и введите "
              "пароль из SMS.",
        "en": "Enter your mobile number, press \u201cGet password\u201d, then type the "
              "password from the SMS.",
    },
    "login": {"kk": "Логин (ұялы телефон нөмірі)", "ru": "Логин (номер мобильного)",
              "en": "Login (mobile number)"},
    "hint": {"kk": "Мысалы: 8 701 234 56 78", "ru": "Пример: 8 701 234 56 78",
             "en": "Example: 8 701 234 56 78"},
    "get": {"kk": "Парольды алу", "ru": "Получить пароль", "en": "Get password"},
    "password": {"kk": "Пароль (SMS-тен)", "ru": "Пароль (из SMS)",
                 "en": "Password (from the SMS)"},
    "submit": {"kk": "Кіру", "ru": "Войти", "en": "Log in"},
    "language": {"kk": "Тіл", "ru": "Язык", "en": "Language"},
    "sending": {"kk": "Жіберілуде…", "ru": "Отправляем…", "en": "Sending…"},
    "offline": {"kk": "Сервер жауап бермейді. Қайта көріңіз.",
                "ru": "Сервер не отвечает. Попробуйте ещё раз.",
                "en": "The server does not answer. Please try again."},
    "need_phone": {"kk": "Ұялы телефон нөмірін енгізіңіз",
                   "ru": "Введите номер мобильного телефона",
                   "en": "Enter your mobile phone number"},
    "need_code": {"kk": "SMS-тегі парольді енгізіңіз", "ru": "Введите пароль из SMS",
                  "en": "Enter the password from the SMS"},
    "no_controller": {
        "kk": "Кіру үшін бұл бетті Wi-Fi желісінің кіру бетінен ашыңыз.",
        "ru": "Чтобы войти, откройте эту страницу со страницы входа сети Wi-Fi.",
        "en": "To log in, open this page from the Wi-Fi network's login page.",
    },
    "connected": {"kk": "Сіз қосылдыңыз. Интернет қолжетімді.",
                  "ru": "Вы подключены. Интернет доступен.",
                  "en": "You are connected to the Internet."},
    "bad_target": {"kk": "Бұл кіру мекенжайына рұқсат жоқ.",
                   "ru": "Этот адрес входа не разрешён.",
                   "en": "This login address is not allowed."},
    # Before the controller's `error` / `reply`: anyone can put text in a link.
    "ap_says": {"kk": "Кіру нүктесінің хабары:", "ru": "Сообщение точки доступа:",
                "en": "Access point says:"},
}
LANGUAGE_NAMES = {"kk": "Қазақша", "ru": "Русский", "en": "English"}

_OCTAL = re.compile(r"\\([0-7]{1,3})")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def chap_bytes_hex(value: str) -> str:
    """MikroTik writes `$(chap-id)` / `$(chap-challenge)` as octal escapes (`\\347\\021`);
    some setups pass hex. Return the bytes as hex, "" when absent or unreadable."""
    if not value:
        return ""
    if "\\" in value:
        out = bytearray()
        i = 0
        while i < len(value):
            m = _OCTAL.match(value, i)
            if m:
                out.append(int(m.group(1), 8) & 0xFF)
                i = m.end()
            else:
                out += value[i].encode("latin-1", "replace")
                i += 1
        return out.hex()
    if _HEX.match(value):
        return value.lower()
    return value.encode("latin-1", "replace").hex()


MAX_URL = 2048
_UAMHOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_NETLOC = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?)(?::([0-9]{1,5}))?")


def _unsafe_char(c: str) -> bool:
    return c == "\\" or c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F


def safe_login_url(url: str, allowed_hosts: list[str]) -> str | None:
    """The login URL rebuilt as scheme://host[:port]/path[?query] when it is safe to
    send a code to, else None. Refused: other schemes, userinfo (`@`), backslashes
    (Chromium reads `http://evil\\@10.5.50.1/` as host evil), whitespace and control
    characters, non-ASCII or odd host names, bad ports, hosts not allowed by
    `portal_login_hosts` (`chilli.host_allowed`). The fragment is dropped."""
    if not url or len(url) > MAX_URL or any(_unsafe_char(c) for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "@" in parts.netloc:
        return None
    m = _NETLOC.fullmatch(parts.netloc.lower())
    if m is None:
        return None
    host, port = m.group(1), m.group(2)
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if port is not None and not chilli.port_ok(port):
        return None
    if not chilli.host_allowed(host, allowed_hosts):
        return None
    path = parts.path or "/"
    if not path.startswith("/"):
        return None
    netloc = host if port is None else f"{host}:{int(port)}"
    return f"{scheme}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def controller(q: Mapping[str, str], allowed_hosts: list[str],
               chilli_logon: bool = False) -> dict[str, Any]:
    """What the redirect says about the controller; `kind` is "" when there is none.
    `chilli_logon` (a CoovaChilli uamsecret is configured): the page posts the
    CoovaChilli login to `POST /portal/chilli-logon` instead of answering the challenge."""
    if q.get("link-login-only") or q.get("link-login"):
        target: dict[str, Any] = {
            "kind": "mikrotik",
            "url": q.get("link-login-only") or q.get("link-login", ""),
            "dst": q.get("link-orig") or q.get("dst", ""),
            "chap_id": chap_bytes_hex(q.get("chap-id", "")),
            "chap_challenge": chap_bytes_hex(q.get("chap-challenge", "")),
            "error": q.get("error", ""), "username": q.get("username", ""),
            "mac": q.get("mac", ""),
        }
    elif q.get("uamip"):
        host = q["uamip"]
        if chilli.ip_literal(host) is None and not _UAMHOST.fullmatch(host):
            return {"kind": "", "error": "", "bad_target": True, "mac": q.get("mac", "")}
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = q.get("uamport") or "3990"
        challenge = q.get("challenge", "")
        target = {
            "kind": "chilli",
            "url": f"http://{host}:{port}/logon",
            # no challenge (or an all-zero one): the page refuses to log on, rather
            # than send the code in clear or XORed with zeros
            "challenge": challenge.lower() if chilli.challenge_ok(challenge) else "",
            "pap": q.get("pap", "") in ("1", "true", "yes"),
            "dst": q.get("userurl", ""),
            "error": q.get("reply", "") if q.get("res") in ("failed", "reject") else "",
            "connected": q.get("res") in ("success", "already"),
            "username": q.get("uid", ""), "mac": q.get("mac", ""),
        }
        if not chilli.port_ok(port):
            return {"kind": "", "error": "", "bad_target": True, "mac": target["mac"]}
        if chilli_logon:
            try:
                chilli.uam_host(q["uamip"], allowed_hosts)
            except chilli.BadLogon:
                return {"kind": "", "error": "", "bad_target": True, "mac": target["mac"]}
            # radiusd answers the challenge; it reads uamip, uamport and the challenge
            # from chilli's signed redirect (the page's own URL), not from these
            target.update(logon=chilli.PATH)
    elif q.get("login_url"):
        target = {
            "kind": "form", "url": q["login_url"],
            "user_field": q.get("user_field") or "username",
            "pass_field": q.get("pass_field") or "password",
            "dst": q.get("dst", ""), "error": q.get("error", ""),
            "username": q.get("username", ""), "mac": q.get("mac", ""),
        }
    else:
        return {"kind": "", "error": q.get("error", ""), "mac": q.get("mac", "")}
    url = safe_login_url(target["url"], allowed_hosts)
    if url is None:
        return {"kind": "", "error": "", "bad_target": True, "mac": target.get("mac", "")}
    target["url"] = url  # only the rebuilt URL reaches the page
    return target


def _template(name: str) -> Template:
    return Template(resources.files("radiusd.http").joinpath("templates", name)
                    .read_text(encoding="utf-8"))


_PAGE = _template("portal.html")


def _switch_query(query: Mapping[str, str], raw_query: str, code: str) -> str:
    """The language links keep the controller's parameters. chilli signs its redirect
    (`md=` last), so a signed query is kept byte for byte and `lang` goes after it."""
    parts = raw_query.split("&") if raw_query else []
    for i, part in enumerate(parts):
        if part.startswith("md="):
            return "&".join([*parts[:i + 1], urlencode({"lang": code})])
    rest = {k: v for k, v in query.items() if k != "lang"}
    return urlencode({**rest, "lang": code})


def render(lang: str, query: Mapping[str, str], allowed_hosts: list[str],
           chilli_logon: bool = False, raw_query: str = "") -> str:
    html, _ = render_page(lang, query, allowed_hosts, chilli_logon, raw_query)
    return html


def render_page(lang: str, query: Mapping[str, str], allowed_hosts: list[str],
                chilli_logon: bool = False, raw_query: str = "",
                ) -> tuple[str, dict[str, Any]]:
    """The page and the target it was built for (for the CSP)."""
    target = controller(query, allowed_hosts, chilli_logon)
    ui = {k: v[lang] for k, v in UI.items()}
    message, kind = "", "info"
    if target.get("bad_target"):
        message, kind = ui["bad_target"], "error"
    elif target.get("connected"):
        message, kind = ui["connected"], "ok"
    elif target.get("error"):
        message, kind = f"{ui['ap_says']} {target['error']}", "error"
    elif not target["kind"]:
        message = ui["no_controller"]
    current = ' aria-current="true"'
    switch = "".join(
        f'<li><a href="?{escape(_switch_query(query, raw_query, code))}" hreflang="{code}" '
        f'lang="{code}"{current if code == lang else ""}>{LANGUAGE_NAMES[code]}</a></li>'
        for code in LANGUAGES)
    data = json.dumps({"lang": lang, "ui": ui, "target": target}, ensure_ascii=False)
    html = _PAGE.substitute(
        lang=lang, switch=switch, message=escape(message), message_kind=kind,
        phone=escape(target.get("username", "")),
        data=data.replace("<", "\\u003c").replace(">", "\\u003e"),
        **{k: escape(v) for k, v in ui.items()})
    return html, target


async def page(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    query = {k: v for k, v in request.query.items()}
    lang = pick_language(query.get("lang"), request.headers.get("Accept-Language"),
                         server.config.otp.language)
    cfg = server.config.http
    html, _ = render_page(lang, query, cfg.portal_login_hosts,
                               bool(cfg.coovachilli_uamsecret),
                               request.rel_url.raw_query_string)
    return web.Response(text=html, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-store",
        "Content-Language": lang,
        "Vary": "Accept-Language",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                                   "style-src 'self'; img-src 'self' data:; "
                                   "base-uri 'none'; frame-ancestors 'none'; "
                                   # Not narrowed: Chromium applies form-action to
                                   # the controller's redirect after the login POST
                                   # (to the user's original page, any host), which
                                   # would strand users who are already logged in.
                                   # `safe_login_url` is the control on where it goes.
                                   "form-action *",
    })
