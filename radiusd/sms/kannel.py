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

import asyncio
import logging

import aiohttp

from radiusd.config import SmsKannelConfig
from radiusd.sms import SendResult, mask
from radiusd.sms.text import is_gsm7

log = logging.getLogger("radiusd.sms.kannel")

ACCEPTED = ("0:", "3:")  # smsbox: accepted / queued for later delivery


class KannelProvider:
    name = "kannel"

    def __init__(self, cfg: SmsKannelConfig) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None

    def params(self, to: str, text: str) -> dict[str, str]:
        out = {"username": self.cfg.username, "password": self.cfg.password,
               "from": self.cfg.sender, "to": to, "text": text}
        if not is_gsm7(text):
            out |= {"coding": "2", "charset": "UTF-8"}
        return out

    async def send(self, to: str, text: str) -> SendResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds))
        try:
            async with self._session.get(self.cfg.url, params=self.params(to, text)) as resp:
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
        if status >= 500 or status in (408, 429):
            return SendResult("retry", detail)
        log.warning("Kannel refused the SMS to %s: %s", mask(to), detail)
        return SendResult("failed", detail)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)  # let aiohttp close its connector
