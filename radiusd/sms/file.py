"""`file` provider: appends one JSON object per message to `[sms.file] path`.

`{"to": "+77011234578", "text": "..."}` one per line (with `"sender"` when a venue
names one), fsynced before "sent" is
answered; the file is created with mode 0600 (it holds one-time passwords). For
trials, tests, and operators whose own tool picks the lines up and sends them.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from radiusd.sms import SendResult


class FileProvider:
    name = "file"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def send(self, to: str, text: str, sender: str = "") -> SendResult:
        record = {"to": to, "text": text} | ({"sender": sender} if sender else {})
        line = json.dumps(record, ensure_ascii=False) + "\n"
        async with self._lock:  # lines never interleave
            try:
                await asyncio.to_thread(self._append, line.encode())
            except OSError as e:
                return SendResult("retry", f"sms.file.path: {self.path}: {e.strerror}")
        return SendResult("sent", "appended")

    def _append(self, data: bytes) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def close(self) -> None:
        return None
