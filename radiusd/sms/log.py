"""`log` provider: prints the message, code included, to the log. Trials only.

The embedded defaults use it so that `radiusd serve` works out of the box; it never
reaches a phone, and the log then holds one-time passwords, hence the loud warning.
"""

from __future__ import annotations

import logging

from radiusd.sms import SendResult, mask

log = logging.getLogger("radiusd.sms.log")

WARNING = (
    "SMS provider is 'log': passwords are written to this log and NOT sent to phones. "
    "For trials only; set [sms] provider to kannel, http or smpp for service."
)


class LogProvider:
    name = "log"

    def __init__(self) -> None:
        log.warning(WARNING)

    async def send(self, to: str, text: str, sender: str = "") -> SendResult:
        # On purpose: the trial operator reads the code here.
        log.warning("SMS to %s%s (log provider, not sent): %s", mask(to),
                    f" from {sender}" if sender else "", text)
        return SendResult("sent", "written to the log")

    async def close(self) -> None:
        return None
