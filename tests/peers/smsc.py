"""Starts tests/peers/smsc.pl (an SMSC on Net::SMPP, Debian libnet-smpp-perl) on a free
loopback port and reads its event log."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("smsc.pl")


class PerlSmsc:
    def __init__(self, perl: str, workdir: Path, *args: str) -> None:
        self.log = workdir / "smsc-events.jsonl"
        self.args = [perl, str(SCRIPT), "--log", str(self.log), *args]
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        args = [*self.args, "--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"smsc.pl did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        out = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in out if kind is None or e["event"] == kind]

    def wait_events(self, kind: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events(kind)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        return self.events(kind)

    async def events_soon(self, kind: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """wait_events for async tests: the event loop keeps running meanwhile."""
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events(kind)
            if len(got) >= n:
                return got
            await asyncio.sleep(0.05)
        return self.events(kind)
