"""SMS providers behind one interface (Rules §6: the password is sent by SMS).

A provider sends one message and says what happened; the outbox worker
(`radiusd.sms.outbox`) decides about retries. Providers never log message text
(it carries the code) nor credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["sent", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    status: Status  # sent | retry (temporary failure) | failed (permanent)
    detail: str = ""
    ref: str | None = None  # provider's message id, when it gives one


class SmsProvider(Protocol):
    name: str

    async def send(self, to: str, text: str) -> SendResult: ...

    async def close(self) -> None: ...
