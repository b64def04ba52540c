"""Run the real server in-process on loopback ephemeral ports, for tests and benches.

Like aiosmtpd's Controller: the same `Server` as `radiusd serve`, bound to
127.0.0.1:0 (and [::1]:0 when asked), with a temporary database and, usually, a
`ManualClock` the test moves forward.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from radiusd.app import Server
from radiusd.clock import Clock
from radiusd.config import Config
from radiusd.testing.nas import SimulatedNAS

# Set by the test suite to run the same tests against PostgreSQL (tests/conftest.py):
# the database every loopback config names unless the test names its own.
DATABASE_URL_ENV = "RADIUSD_TEST_DATABASE_URL"


def loopback_config(tmp: Path, ipv6: bool = False, **sections: dict[str, Any]) -> Config:
    auth = ["127.0.0.1:0"] + (["[::1]:0"] if ipv6 else [])
    acct = ["127.0.0.1:0"] + (["[::1]:0"] if ipv6 else [])
    data: dict[str, Any] = {
        "server": {"auth_listen": auth, "acct_listen": acct},
        "database": {"path": str(tmp / "radiusd.db")},
        "otp": {"key_file": str(tmp / "radiusd.key")},
        "sms": {"provider": "file", "file": {"path": str(tmp / "outbox.jsonl")}},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            merged = dict(data[name])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            data[name] = merged
        else:
            data[name] = value
    url = os.environ.get(DATABASE_URL_ENV)
    if url and data["database"].get("path") == str(tmp / "radiusd.db"):
        data["database"] = {k: v for k, v in data["database"].items() if k != "path"}
        data["database"]["url"] = url
    return Config.model_validate(data)


@asynccontextmanager
async def running_server(config: Config, clock: Clock | None = None) -> AsyncIterator[Server]:
    server = Server(config, clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def nas_for(server: Server, family: int = 4, **kwargs: Any) -> SimulatedNAS:
    def pick(port: str) -> tuple[str, int]:
        for host, p in server.addresses(port):  # type: ignore[arg-type]
            if (":" in host) == (family == 6):
                return host, p
        raise LookupError(f"server has no IPv{family} {port} listener")

    return SimulatedNAS(auth_address=pick("auth"), acct_address=pick("acct"), **kwargs)


async def eventually(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for something the server does in the background (bounded; not a delay)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, "the server did not get there"
        await asyncio.sleep(0.005)
