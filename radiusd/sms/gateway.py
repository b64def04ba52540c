"""What the HTTP providers (kannel, http) share: one client session, made on first
use, and which HTTP answers are worth another try."""

from __future__ import annotations

import asyncio

import aiohttp


class Session:
    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)  # let aiohttp close its connector


def temporary(status: int) -> bool:
    """5xx, 408 Request Timeout and 429 Too Many Requests: try again later."""
    return status >= 500 or status in (408, 429)
