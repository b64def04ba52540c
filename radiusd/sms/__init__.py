"""SMS providers behind one interface (Rules §6: the password is sent by SMS).

A provider sends one message and says what happened; the outbox worker
(`radiusd.sms.outbox`) decides about retries. Providers never log message text
(it carries the code) nor credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from radiusd.config import ConfigError, SmsConfig, SmsProviderConfig

Status = Literal["sent", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    status: Status  # sent | retry (temporary failure) | failed (permanent)
    detail: str = ""
    ref: str | None = None  # provider's message id, when it gives one


class SmsProvider(Protocol):
    name: str

    # ``sender``: a venue's sender name or number (radiusd.venues); "": the provider's
    # own from its config section.
    async def send(self, to: str, text: str, sender: str = "") -> SendResult: ...

    async def close(self) -> None: ...


def mask(number: str) -> str:
    """A number as logs may show it: "+77011234578" -> "+7701***78"."""
    if len(number) <= 7:
        return number[:2] + "***"
    return number[:5] + "***" + number[-2:]


def build_provider(config: SmsConfig | SmsProviderConfig) -> SmsProvider:
    """The provider `[sms] provider` names, configured from its `[sms.NAME]` section
    (or a venue's `[sms.providers.NAME]`, which has the same keys)."""
    kind = config.provider
    if kind == "log":
        from radiusd.sms.log import LogProvider

        return LogProvider()
    if kind == "file":
        from radiusd.sms.file import FileProvider

        return FileProvider(config.file.path)
    if kind == "kannel":
        from radiusd.sms.kannel import KannelProvider

        return KannelProvider(config.kannel)
    if kind == "http":
        from radiusd.sms.http import HttpProvider

        return HttpProvider(config.http)
    if kind == "smpp":
        from radiusd.sms.smpp import SmppProvider

        return SmppProvider(config.smpp)
    raise ConfigError(f"sms.provider: unknown provider {kind!r}")  # pragma: no cover
