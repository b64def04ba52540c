"""CoovaChilli UAM logon answered here, for a chilli with a `uamsecret`.

CoovaChilli redirects the browser to the portal with a 16-byte `challenge`; the portal
answers it by sending the browser to `http://uamip:uamport/logon?username=..` with
either `response=` (CHAP) or `password=` (PAP). With a uamsecret, the challenge to
answer is not the one in the URL but

    newchal = MD5(challenge + uamsecret)

(CoovaChilli's doc/hotspotlogin.cgi: `$newchal = md5($hexchal, $uamsecret)`; chilli's
redir.c computes the same `chap_challenge` and sends it to RADIUS as CHAP-Challenge):

- CHAP: `response` = hex MD5(0x00 + password + newchal) (identifier 0; chilli sends
  CHAP-Password = 0x00 + response);
- PAP: `password` = hex(password XOR newchal, newchal repeated to the password's
  length); chilli XORs it back (`password[m] ^ chap_challenge[m % 16]`) into
  User-Password.

The secret must not reach the browser, so the hosted page posts the code to
`POST /portal/chilli-logon` and this answers 303 See Other to chilli's /logon. The
target must be an IP literal and a port (and in `portal_login_hosts` when that is
set): this is not an open redirect.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from urllib.parse import quote

from aiohttp import web

from radiusd.http import api
from radiusd.http.keys import CHILLI_LIMITS, SERVER
from radiusd.http.language import pick_language

PATH = "/portal/chilli-logon"
CHALLENGE_LEN = 16  # REDIR_MD5LEN
MAX_PASSWORD = 128  # RADIUS_PWSIZE: the longest PAP password chilli decodes
MAX_USERNAME = 253
MAX_USERURL = 2048
# Each answer is an oracle for the secret's challenge; hotspotlogin.cgi has the same
# property. Bound how fast one client can ask (generous: a hotspot may be one NAT).
PER_IP_PER_MINUTE = 30
PER_IP_HOURLY = 300

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")

TEXT = {
    "bad": {"kk": "Бұл кіру мекенжайына рұқсат жоқ.",
            "ru": "Этот адрес входа не разрешён.",
            "en": "This login address is not allowed."},
    "limit": {"kk": "Әрекет тым көп. {seconds} с кейін қайталаңыз.",
              "ru": "Слишком много попыток. Повторите через {seconds} с.",
              "en": "Too many attempts. Try again in {seconds} s."},
}


def uam_challenge(challenge: bytes, uamsecret: str) -> bytes:
    """The challenge the logon must answer: MD5(challenge + uamsecret), or the
    challenge itself without a secret (hotspotlogin.cgi's `$newchal`)."""
    if not uamsecret:
        return challenge
    return hashlib.md5(challenge + uamsecret.encode()).digest()


def chap_response(password: str, challenge: bytes, uamsecret: str) -> str:
    """`response=` for chilli's /logon: hex MD5(0x00 + password + newchal)."""
    newchal = uam_challenge(challenge, uamsecret)
    return hashlib.md5(b"\x00" + password.encode() + newchal).hexdigest()


def pap_password(password: str, challenge: bytes, uamsecret: str) -> str:
    """`password=` for chilli's /logon: hex(password XOR newchal, repeated)."""
    newchal = uam_challenge(challenge, uamsecret)
    pw = password.encode()
    return bytes(b ^ newchal[i % len(newchal)] for i, b in enumerate(pw)).hex()


class BadLogon(ValueError):
    pass


def uam_host(uamip: str, allowed_hosts: list[str]) -> str:
    """`uamip` as it goes in the URL; BadLogon unless an IP literal (allowed, if listed)."""
    try:
        ip = ipaddress.ip_address(uamip.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        raise BadLogon("uamip is not an IP address") from None
    if allowed_hosts and str(ip) not in allowed_hosts and uamip not in allowed_hosts:
        raise BadLogon("uamip is not in portal_login_hosts")
    return f"[{ip}]" if ip.version == 6 else str(ip)


def logon_url(*, uamip: str, uamport: str, challenge: str, username: str, password: str,
              userurl: str, pap: bool, uamsecret: str, allowed_hosts: list[str]) -> str:
    """chilli's `/logon?username=..&response=..&userurl=..` (or `password=` with PAP)."""
    host = uam_host(uamip, allowed_hosts)
    if not uamport.isdigit() or not 0 < int(uamport) < 65536:
        raise BadLogon("uamport is not a port")
    if not _HEX32.match(challenge):
        raise BadLogon("challenge is not 16 bytes of hex")
    if not username or len(username.encode()) > MAX_USERNAME:
        raise BadLogon("username")
    if len(password.encode()) > MAX_PASSWORD or len(userurl) > MAX_USERURL:
        raise BadLogon("too long")
    ch = bytes.fromhex(challenge)
    answer = (f"password={pap_password(password, ch, uamsecret)}" if pap
              else f"response={chap_response(password, ch, uamsecret)}")
    url = f"http://{host}:{int(uamport)}/logon?username={quote(username, safe='')}&{answer}"
    if userurl:
        url += f"&userurl={quote(userurl, safe='')}"
    return url


_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff"}


async def logon(request: web.Request) -> web.StreamResponse:
    """POST /portal/chilli-logon (form): uamip, uamport, challenge, userurl, pap,
    username, password, lang -> 303 to chilli's /logon."""
    server = request.app[SERVER]
    cfg = server.config.http
    if not cfg.coovachilli_uamsecret:
        raise web.HTTPNotFound()
    form = await request.post()
    field = {k: v for k, v in form.items() if isinstance(v, str)}
    lang = pick_language(field.get("lang"), request.headers.get("Accept-Language"),
                         server.config.otp.language)
    wait = request.app[CHILLI_LIMITS].check(
        api.client_ip(request, cfg.trusted_proxies), server.clock.now())
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        return web.Response(status=429, text=TEXT["limit"][lang].format(seconds=seconds),
                            headers={**_HEADERS, "Retry-After": str(seconds)},
                            content_type="text/plain", charset="utf-8")
    try:
        url = logon_url(
            uamip=field.get("uamip", ""), uamport=field.get("uamport", "") or "3990",
            challenge=field.get("challenge", ""), username=field.get("username", "").strip(),
            password=field.get("password", "").strip(), userurl=field.get("userurl", ""),
            pap=field.get("pap", "") in ("1", "true", "yes"),
            uamsecret=cfg.coovachilli_uamsecret, allowed_hosts=cfg.portal_login_hosts)
    except BadLogon:
        return web.Response(status=400, text=TEXT["bad"][lang], headers=_HEADERS,
                            content_type="text/plain", charset="utf-8")
    return web.Response(status=303, headers={**_HEADERS, "Location": url})
