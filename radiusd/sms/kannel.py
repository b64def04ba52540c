"""`kannel` provider: Kannel's smsbox sendsms HTTP interface (Kannel User's Guide,
"Sending SMS messages": /cgi-bin/sendsms).

GET with username, password, from (= `[sms.kannel] sender`), to and text; text that is
not GSM-7 (Cyrillic, Kazakh) adds coding=2 and charset=UTF-8 so Kannel sends UCS-2.
Answers: "0: Accepted for delivery" and "3: Queued for later delivery" are sent; HTTP
5xx, connection errors and timeouts are temporary; other 4xx (bad credentials,
missing receiver...) are permanent. The URL's query is never logged: it holds the
password and the code.
"""

from __future__ import annotations

import logging

import aiohttp

from radiusd.config import SmsKannelConfig
from radiusd.sms import SendResult, mask
from radiusd.sms.gateway import Session, temporary
from radiusd.sms.text import is_gsm7

log = logging.getLogger("radiusd.sms.kannel")

ACCEPTED = ("0:", "3:")  # smsbox: accepted / queued for later delivery


class KannelProvider:
    name = "kannel"

    def __init__(self, cfg: SmsKannelConfig) -> None:
        self.cfg = cfg
        self._session = Session(cfg.timeout_seconds)

    def params(self, to: str, text: str, sender: str = "") -> dict[str, str]:
        out = {"username": self.cfg.username, "password": self.cfg.password,
               "from": sender or self.cfg.sender, "to": to, "text": text}
        if not is_gsm7(text):
            out |= {"coding": "2", "charset": "UTF-8"}
        return out

    async def send(self, to: str, text: str, sender: str = "") -> SendResult:
        try:
            session = self._session.get()
            async with session.get(self.cfg.url,
                                   params=self.params(to, text, sender)) as resp:
                body = (await resp.text(errors="replace")).strip()
                status = resp.status
        except TimeoutError:
            return SendResult("retry", f"no answer from Kannel in {self.cfg.timeout_seconds:g} s")
        except aiohttp.ClientError as e:
            return SendResult("retry", f"Kannel unreachable: {type(e).__name__}")
        detail = f"HTTP {status}: {body[:200]}"
        if 200 <= status < 300:
            if body.startswith(ACCEPTED) or not body[:2].rstrip(":").isdigit():
                return SendResult("sent", detail)
            return SendResult("retry", detail)  # another numbered smsbox answer
        if temporary(status):
            return SendResult("retry", detail)
        log.warning("Kannel refused the SMS to %s: %s", mask(to), detail)
        return SendResult("failed", detail)

    async def close(self) -> None:
        await self._session.close()
