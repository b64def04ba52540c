"""A hotspot controller in miniature, for the browser tests of the portal.

`TestController` is a small aiohttp site that plays the NAS the way MikroTik Hotspot
(external portal, `http-chap`) and CoovaChilli (UAM, CHAP or PAP, with or without a
uamsecret, as chilli's redir.c does, including the `md=` signature) do: a visit to any page
redirects to the portal with the controller's parameters; the portal's login comes
back here, and this turns it into a real RADIUS Access-Request (via `SimulatedNAS`)
to radiusd. On Access-Accept it sends Accounting Start and shows a status page with a
"Log out" button (Accounting Stop); on Access-Reject it redirects to the portal again
with the Reply-Message, as MikroTik's `$(error)` and CoovaChilli's `reply` do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from yarl import URL

from radiusd.testing.nas import SimulatedNAS

ACCESS_ACCEPT = 2
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "portal"
TEMPLATES = ROOT / "portal"

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def octal(data: bytes) -> str:
    """How MikroTik writes $(chap-id) and $(chap-challenge): `\\ooo` per byte."""
    return "".join(f"\\{b:03o}" for b in data)


def chilli_md(url: str, uamsecret: str) -> str:
    """chilli's redir.c redir_md_param: uppercase hex MD5(the redirect URL so far +
    uamsecret), appended as `&md=`."""
    return hashlib.md5(url.encode() + uamsecret.encode()).hexdigest().upper()


_IF = re.compile(r"\$\(if ([\w-]+)\)((?:(?!\$\(if ).)*?)\$\(endif\)", re.S)
_VAR = re.compile(r"\$\(([\w-]+)\)")


def mikrotik_render(template: str, values: dict[str, str]) -> str:
    """MikroTik Hotspot's page language, as much as login.html uses: `$(name)`,
    `$(if name)...$(else)...$(endif)` (nested: innermost first)."""
    while True:
        def branch(m: re.Match[str]) -> str:
            yes, _, no = m.group(2).partition("$(else)")
            return yes if values.get(m.group(1)) else no
        out = _IF.sub(branch, template)
        if out == template:
            break
        template = out
    return _VAR.sub(lambda m: values.get(m.group(1), ""), template)


class TestController:
    __test__ = False  # not a pytest class

    def __init__(self, nas: SimulatedNAS, portal: str, kind: str = "mikrotik",
                 mac: str = "AA:BB:CC:DD:EE:01", uamsecret: str = "",
                 pap: bool = False) -> None:
        self.nas = nas
        self.portal = portal  # the portal's base URL, e.g. http://127.0.0.1:8080/
        self.radiusd = portal
        # CoovaChilli: HS_UAMSECRET, and `pap=1` in the redirect (HS_UAMFORMAT).
        self.uamsecret = uamsecret
        self.pap = pap
        # "mikrotik" | "chilli": redirect to the hosted portal;
        # "mikrotik-page" | "chilli-page": serve portal/<vendor>/ templates themselves.
        self.kind = kind
        self.mac = mac
        self.chap_id = b"\x00"
        self.challenge = b""
        self.session: dict[str, Any] | None = None
        self.log: list[str] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.intercept)
        app.router.add_post("/login", self.mikrotik_login)
        app.router.add_get("/logon", self.chilli_logon)
        app.router.add_get("/status", self.status)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/login", self.mikrotik_page)
        folder = TEMPLATES / ("mikrotik" if self.kind.startswith("mikrotik") else "coovachilli")

        async def serve(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            if name == "hotspotlogin.html" and self.uamsecret:
                # the admin's one edit for a chilli with a uamsecret
                html = (folder / name).read_text().replace(
                    'var LOGON_SERVICE = "";',
                    f'var LOGON_SERVICE = "{self.radiusd}portal/chilli-logon";', 1)
                return web.Response(text=html, content_type="text/html")
            return web.FileResponse(folder / name)
        app.router.add_get("/{name:md5\\.js|hotspotlogin\\.html}", serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        if self.kind == "chilli-page":
            self.portal = f"{self.base}/hotspotlogin.html"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- the redirect to the portal ----------------------------------------------------

    def portal_url(self, **extra: str) -> str:
        self.chap_id = secrets.token_bytes(1)
        self.challenge = secrets.token_bytes(16)
        if self.kind.startswith("mikrotik"):
            params = {"link-login-only": f"{self.base}/login", "link-orig": "http://example.test/",
                      "chap-id": octal(self.chap_id), "chap-challenge": octal(self.challenge),
                      "mac": self.mac, "ip": "10.5.50.2"}
        else:
            params = {"res": "notyet", "uamip": "127.0.0.1",
                      "uamport": self.base.rsplit(":", 1)[1], "challenge": self.challenge.hex(),
                      "mac": self.mac.replace(":", "-"), "ip": "10.1.0.2", "nasid": "chilli",
                      "userurl": "http://example.test/"}
            if self.pap:
                params["pap"] = "1"
        params.update(extra)
        # as aiohttp will send it in Location (yarl leaves `:` and `/` unescaped)
        url = str(URL(self.portal + "?" + urlencode(params)))
        if self.uamsecret and not self.kind.startswith("mikrotik"):
            url += "&md=" + chilli_md(url, self.uamsecret)
        return url

    async def intercept(self, request: web.Request) -> web.Response:
        """Any page before login: the walled garden sends the browser to the portal."""
        if self.session is not None:
            raise web.HTTPFound(f"{self.base}/status")
        if self.kind == "mikrotik-page":
            raise web.HTTPFound(f"{self.base}/login")
        raise web.HTTPFound(self.portal_url())

    def _page(self, error: str = "", username: str = "") -> web.Response:
        """portal/mikrotik/login.html as the router serves it (login-by=http-chap)."""
        self.chap_id = secrets.token_bytes(1)
        self.challenge = secrets.token_bytes(16)
        html = mikrotik_render((TEMPLATES / "mikrotik" / "login.html").read_text(), {
            "link-login-only": f"{self.base}/login", "link-orig": "http://example.test/",
            "chap-id": octal(self.chap_id), "chap-challenge": octal(self.challenge),
            "error": escape(error), "username": escape(username), "mac": self.mac})
        return web.Response(text=html, content_type="text/html")

    async def mikrotik_page(self, request: web.Request) -> web.Response:
        if self.session is not None:
            raise web.HTTPFound(f"{self.base}/status")
        return self._page()

    # -- login: RADIUS to radiusd ----------------------------------------------------------

    async def _radius(self, username: str, chap_password: bytes | None = None,
                      challenge: bytes | None = None, password: str | None = None,
                      ) -> tuple[bool, str]:
        """CHAP (`chap_password`, CHAP-Challenge = `challenge`, default the one we sent)
        or PAP (`password`)."""
        extra = [] if chap_password is None else [
            ("CHAP-Password", chap_password), ("CHAP-Challenge", challenge or self.challenge)]
        pkt = self.nas.access_request(username, password, mac=self.mac.replace(":", "-"),
                                      extra=extra)
        answer = await self.nas.send(pkt)
        message = answer.get("Reply-Message") or ""
        if isinstance(message, bytes):
            message = message.decode()
        ok = answer.code == ACCESS_ACCEPT
        self.log.append(f"access {'accept' if ok else 'reject'} {username} {message}")
        if ok:
            cls = answer.get("Class")
            session_id = self.nas.new_session_id()
            self.session = {"user": username, "id": session_id, "class": cls}
            start = self.nas.accounting_request(
                "Start", user=username, session_id=session_id, mac=self.mac.replace(":", "-"),
                extra=[("Class", cls)] if cls else [])
            await self.nas.send(start)
            self.log.append("accounting start")
        return ok, message

    async def mikrotik_login(self, request: web.Request) -> web.Response:
        """MikroTik `http-chap`: password = hex MD5(chap-id + password + chap-challenge)."""
        form = await request.post()
        username, response = str(form.get("username", "")), str(form.get("password", ""))
        try:
            chap = self.chap_id + bytes.fromhex(response)
        except ValueError:
            chap = b""
        if len(chap) != 17:
            message = "CHAP expected"
        else:
            ok, message = await self._radius(username, chap)
            if ok:
                raise web.HTTPFound(f"{self.base}/status")
        if self.kind == "mikrotik-page":
            return self._page(message, username)
        raise web.HTTPFound(self.portal_url(error=message, username=username))

    async def chilli_logon(self, request: web.Request) -> web.Response:
        """CoovaChilli UAM: /logon?username=&response= (CHAP, identifier 0) or
        &password= (PAP), as chilli's redir.c turns them into RADIUS: with a uamsecret
        the challenge is chap_challenge = MD5(challenge + uamsecret); CHAP goes out with
        CHAP-Challenge = chap_challenge, PAP's hex is XORed with it into User-Password."""
        username = request.query.get("username", "")
        chap_challenge = self.challenge
        if self.uamsecret:
            chap_challenge = hashlib.md5(self.challenge + self.uamsecret.encode()).digest()
        self.log.append("logon " + ("password" if "password" in request.query else "response"))
        try:
            if "password" in request.query:
                sent = bytes.fromhex(request.query["password"])
                plain = bytes(b ^ chap_challenge[i % 16] for i, b in enumerate(sent))
                ok, message = await self._radius(
                    username, password=plain.decode("utf-8", "replace"))
            else:
                response = bytes.fromhex(request.query.get("response", ""))
                ok, message = await self._radius(username, b"\x00" + response,
                                                 challenge=chap_challenge)
        except ValueError:
            ok, message = False, "bad logon"
        if ok:
            raise web.HTTPFound(self.portal_url(res="success", uid=username))
        raise web.HTTPFound(self.portal_url(res="failed", reply=message, uid=username))

    async def status(self, request: web.Request) -> web.Response:
        if self.session is None:
            raise web.HTTPFound(self.portal_url())
        user = escape(self.session["user"])
        return web.Response(content_type="text/html", text=(
            "<!doctype html><meta charset=utf-8><title>Hotspot status</title>"
            f"<h1>You are logged in</h1><p id=user>{user}</p>"
            "<form method=post action=/logout><button id=logout>Log out</button></form>"))

    async def logout(self, request: web.Request) -> web.Response:
        """The user leaves: Accounting-Stop, which kills the password (Rules §8)."""
        if self.session is not None:
            s = self.session
            stop = self.nas.accounting_request(
                "Stop", user=s["user"], session_id=s["id"], mac=self.mac.replace(":", "-"),
                extra=[("Class", s["class"])] if s["class"] else [],
                Acct_Session_Time=60, Acct_Terminate_Cause=1)
            await self.nas.send(stop)
            self.log.append("accounting stop")
            self.session = None
        return web.Response(content_type="text/html", text=(
            "<!doctype html><meta charset=utf-8><title>Logged out</title>"
            "<h1>You have logged out</h1>"))


async def read_code(server: Any, e164: str, sms_path: Path, timeout: float = 5.0,
                    skip: int = 0) -> str:
    """The code of the SMS sent to `e164`: from the `file` provider's outbox, or (while
    no worker delivers) from the sms_outbox table. `skip` ignores that many older ones."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if sms_path.exists():
            lines = [json.loads(x) for x in sms_path.read_text().splitlines() if x.strip()]
            texts = [m["text"] for m in lines if m["to"] == e164]
            if len(texts) > skip:
                return texts[-1].rsplit(" ", 1)[-1]
        if server.sms is None:
            rows = await server.store.fetchall(
                "SELECT body FROM sms_outbox WHERE recipient = ? ORDER BY created_at", (e164,))
            if len(rows) > skip:
                return server.sealer.open(rows[-1]["body"], b"sms").decode().rsplit(" ", 1)[-1]
        if loop.time() > deadline:
            raise AssertionError(f"no SMS to {e164} within {timeout} s")
        await asyncio.sleep(0.05)


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / f"{name}.png")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
