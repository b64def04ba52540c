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
target must be an IP literal and a port, allowed by `portal_login_hosts` (empty:
private, link-local and loopback addresses only): this is not an open redirect.

chilli signs its redirect with the same secret (redir.c `redir_md_param`): the URL it
sends the browser to ends in `&md=` + hex MD5(URL up to there + uamsecret). The page
posts that URL (`page`); uamip, uamport, challenge, userurl and pap are taken from it
only when `md` matches, so a caller cannot pick its own challenge or target. MD5 with
a secret suffix is only as strong as the secret: anyone who sees one signed redirect
can guess a weak uamsecret offline, so it must be long and random.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from urllib.parse import parse_qsl, quote

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

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_PORT = re.compile(r"[0-9]{1,5}")
MAX_PAGE_URL = 4096
# Where controllers live when `portal_login_hosts` is empty: private (RFC 1918, RFC
# 4193), link-local and loopback addresses. Spelled out rather than Python's
# `is_private`, which also takes documentation and reserved ranges.
CONTROLLER_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8",
    "fc00::/7", "fe80::/10", "::1/128"))

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


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP literal (IPv6 with or without brackets, no zone), else None."""
    bare = host.removeprefix("[").removesuffix("]")
    if "%" in bare:
        return None
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """May the portal send a login to `host` (a URL's host name or an IP literal)?
    `portal_login_hosts` empty: private, link-local and loopback IP literals only;
    listed: those names or addresses (case-insensitive; IPs compared as addresses);
    "*": any host."""
    if "*" in allowed_hosts:
        return True
    host = host.lower()
    ip = ip_literal(host)
    if not allowed_hosts:
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in CONTROLLER_NETWORKS)
    for entry in allowed_hosts:
        entry = entry.strip().lower()
        if ip is not None:
            if ip_literal(entry) == ip:
                return True
        elif entry == host:
            return True
    return False


def port_ok(port: str) -> bool:
    """An ASCII decimal port 1-65535 (str.isdigit() also takes "³" and "١")."""
    return bool(_PORT.fullmatch(port)) and 0 < int(port) < 65536


def uam_host(uamip: str, allowed_hosts: list[str]) -> str:
    """`uamip` as it goes in the URL; BadLogon unless an allowed IP literal."""
    ip = ip_literal(uamip.strip())
    if ip is None:
        raise BadLogon("uamip is not an IP address")
    if not host_allowed(str(ip), allowed_hosts):
        raise BadLogon("uamip is not allowed by portal_login_hosts")
    return f"[{ip}]" if ip.version == 6 else str(ip)


def challenge_ok(challenge: str) -> bool:
    """16 bytes of hex, not all zero (a zero challenge makes PAP's XOR the code itself)."""
    return bool(_HEX32.fullmatch(challenge)) and int(challenge, 16) != 0


def signed_redirect(page: str, uamsecret: str) -> dict[str, str]:
    """The parameters of chilli's redirect `page` (the portal URL the browser was sent
    to), after checking its `md`: hex MD5(everything before `&md=` + uamsecret), as
    redir.c's redir_md_param computes it. Parameters after `md` (the language switch
    adds `lang`) are not signed and are left out. BadLogon when it does not match."""
    page = page.partition("#")[0]
    if len(page) > MAX_PAGE_URL or not page.startswith(("http://", "https://")):
        raise BadLogon("page is not a URL")
    signed, sep, rest = page.partition("&md=")
    if not sep or "?" not in signed:
        raise BadLogon("no md in chilli's redirect")
    md = rest.partition("&")[0]
    want = hashlib.md5(signed.encode("utf-8", "surrogateescape") + uamsecret.encode())
    if not hmac.compare_digest(md.upper().encode(), want.hexdigest().upper().encode()):
        raise BadLogon("md does not match: another uamsecret, or a changed URL")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(signed.partition("?")[2], keep_blank_values=True):
        fields.setdefault(key, value)  # the first, as chilli wrote it
    return fields


def logon_url(*, uamip: str, uamport: str, challenge: str, username: str, password: str,
              userurl: str, pap: bool, uamsecret: str, allowed_hosts: list[str]) -> str:
    """chilli's `/logon?username=..&response=..&userurl=..` (or `password=` with PAP)."""
    host = uam_host(uamip, allowed_hosts)
    if not port_ok(uamport):
        raise BadLogon("uamport is not a port")
    if not challenge_ok(challenge):
        raise BadLogon("challenge is not 16 bytes of hex, or is all zero")
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
    """POST /portal/chilli-logon (form): page (chilli's signed redirect URL, which
    gives uamip, uamport, challenge, userurl, pap), username, password, lang -> 303 to
    chilli's /logon. Input is checked before it counts against the per-IP limit."""
    server = request.app[SERVER]
    cfg = server.config.http
    if not cfg.coovachilli_uamsecret:
        raise web.HTTPNotFound()
    form = await request.post()
    field = {k: v for k, v in form.items() if isinstance(v, str)}
    lang = pick_language(field.get("lang"), request.headers.get("Accept-Language"),
                         server.config.otp.language)
    try:
        signed = signed_redirect(field.get("page", ""), cfg.coovachilli_uamsecret)
        url = logon_url(
            uamip=signed.get("uamip", ""), uamport=signed.get("uamport", "") or "3990",
            challenge=signed.get("challenge", ""), username=field.get("username", "").strip(),
            password=field.get("password", "").strip(), userurl=signed.get("userurl", ""),
            pap=signed.get("pap", "") in ("1", "true", "yes"),
            uamsecret=cfg.coovachilli_uamsecret, allowed_hosts=cfg.portal_login_hosts)
    except BadLogon:
        return web.Response(status=400, text=TEXT["bad"][lang], headers=_HEADERS,
                            content_type="text/plain", charset="utf-8")
    wait = request.app[CHILLI_LIMITS].check(
        api.client_ip(request, cfg.trusted_proxies), server.clock.now())
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        return web.Response(status=429, text=TEXT["limit"][lang].format(seconds=seconds),
                            headers={**_HEADERS, "Retry-After": str(seconds)},
                            content_type="text/plain", charset="utf-8")
    return web.Response(status=303, headers={**_HEADERS, "Location": url})
