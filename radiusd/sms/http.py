"""`http` provider: an SMS aggregator's HTTP API, described in `[sms.http]`.

`body` is a template with the placeholders {to}, {text} and {sender}. With
`body_format = "json"` it is a JSON document and the placeholders are filled inside its
strings (so quotes in the text cannot break it); with "form" it is
`key=value&key=value` and the values are filled, then form-encoded (for GET the fields
go in the query string). Placeholders in the URL are filled URL-encoded.

Success: the status is in `success_status` and, when `success_field` is set, that
dotted JSON path of the answer is truthy. 5xx, 408, 429, connection errors and timeouts
are temporary; other answers are permanent. URL, headers and body hold secrets and the
code: they are never logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp

from radiusd.config import SmsHttpConfig
from radiusd.sms import SendResult, mask
from radiusd.sms.gateway import Session, temporary

log = logging.getLogger("radiusd.sms.http")


def fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def fill_json(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return fill(node, values)
    if isinstance(node, list):
        return [fill_json(v, values) for v in node]
    if isinstance(node, dict):
        return {fill(k, values): fill_json(v, values) for k, v in node.items()}
    return node


def dotted(doc: Any, path: str) -> Any:
    """`result.ok` or `messages.0.status` in a decoded JSON document; None if absent."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


class HttpProvider:
    name = "http"

    def __init__(self, cfg: SmsHttpConfig) -> None:
        if not cfg.url:
            from radiusd.config import ConfigError

            raise ConfigError("sms.http.url: required when [sms] provider = \"http\"")
        if cfg.body_format == "json":
            try:
                self._json_template = json.loads(cfg.body)
            except json.JSONDecodeError as e:
                from radiusd.config import ConfigError

                raise ConfigError(f"sms.http.body: not valid JSON ({e.msg})") from None
        self.cfg = cfg
        self._session = Session(cfg.timeout_seconds)

    def request(self, to: str, text: str, sender: str = "") -> dict[str, Any]:
        """What aiohttp is asked to send (method, url and params/json/data)."""
        cfg = self.cfg
        values = {"to": to, "text": text, "sender": sender or cfg.sender}
        url = fill(cfg.url, {k: quote(v, safe="") for k, v in values.items()})
        out: dict[str, Any] = {"method": cfg.method, "url": url, "headers": dict(cfg.headers)}
        if cfg.body_format == "json":
            out["json"] = fill_json(self._json_template, values)
        else:
            fields = [(k, fill(v, values)) for k, v in parse_qsl(cfg.body, keep_blank_values=True)]
            out["params" if cfg.method == "GET" else "data"] = fields
        return out

    async def send(self, to: str, text: str, sender: str = "") -> SendResult:
        try:
            async with self._session.get().request(**self.request(to, text, sender)) as resp:
                status = resp.status
                raw = await resp.text(errors="replace")
        except TimeoutError:
            return SendResult("retry", f"no answer in {self.cfg.timeout_seconds:g} s")
        except aiohttp.ClientError as e:
            return SendResult("retry", f"gateway unreachable: {type(e).__name__}")
        detail = f"HTTP {status}"
        if status in self.cfg.success_status:
            if not self.cfg.success_field:
                return SendResult("sent", detail)
            try:
                value = dotted(json.loads(raw), self.cfg.success_field)
            except json.JSONDecodeError:
                value = None
            if value:
                return SendResult("sent", detail, str(value) if not isinstance(value, bool)
                                  else None)
            detail += f", {self.cfg.success_field} is {value!r}"
            log.warning("SMS gateway refused the SMS to %s: %s", mask(to), detail)
            return SendResult("failed", detail)
        if temporary(status):
            return SendResult("retry", detail)
        log.warning("SMS gateway refused the SMS to %s: %s", mask(to), detail)
        return SendResult("failed", detail)

    async def close(self) -> None:
        await self._session.close()
