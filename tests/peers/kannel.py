"""A real Kannel on loopback for tests: bearerbox + smsbox + fakesmsc (Debian kannel,
kannel-extras), in a temporary directory, on free ports.

fakesmsc plays the operator's SMSC: it logs every message bearerbox hands it as
``Got message N: <from to type text>``; `received()` reads that back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"

USERNAME, PASSWORD = "radiusd", "s3cret-kannel"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass(frozen=True)
class Received:
    sender: str
    to: str
    coding: str  # "text" (GSM-7) or "ucs-2"
    text: str


class Kannel:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin_port, self.box_port, self.smsc_port, self.sendsms_port = (
            free_port() for _ in range(4))
        self.conf = self.dir / "kannel.conf"
        self.conf.write_text(self.config())
        self.fake_log = self.dir / "fakesmsc.log"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"

    def config(self) -> str:
        d = self.dir
        return f"""
group = core
admin-port = {self.admin_port}
admin-interface = 127.0.0.1
admin-password = admin-test
smsbox-port = {self.box_port}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "{d}/bearerbox.log"
log-level = 1

group = smsc
smsc = fake
smsc-id = fake
host = 127.0.0.1
our-host = 127.0.0.1
port = {self.smsc_port}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {self.box_port}
sendsms-port = {self.sendsms_port}
sendsms-interface = 127.0.0.1
log-file = "{d}/smsbox.log"
log-level = 1

group = sendsms-user
username = {USERNAME}
password = {PASSWORD}

group = sms-service
keyword = default
text = "ok"
"""

    def _spawn(self, name: str, argv: list[str], stderr_to: Path | None = None) -> None:
        out = open(stderr_to or self.dir / f"{name}.out", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(argv, cwd=self.dir, stdout=out, stderr=out,
                                            start_new_session=True)
        out.close()

    def start(self) -> None:
        self._spawn("bearerbox", [BEARERBOX, str(self.conf)])
        wait_port(self.smsc_port)
        self._spawn("fakesmsc", [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.smsc_port),
                                 "-m", "0", "1 2 text unused"], stderr_to=self.fake_log)
        self.start_smsbox()

    def start_smsbox(self) -> None:
        self._spawn("smsbox", [SMSBOX, str(self.conf)])
        wait_port(self.sendsms_port)
        self.wait_ready()

    def status(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/status.txt?password=admin-test"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode(errors="replace"))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until bearerbox sees the smsbox and the fake SMSC on line."""
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.status()
            if "smsbox:" in status and "(online" in status:
                return
            time.sleep(0.05)
        raise TimeoutError(f"Kannel not ready:\n{status}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def stop_all(self) -> None:
        for name in ("smsbox", "fakesmsc", "bearerbox"):
            self.stop(name)

    def received(self) -> list[Received]:
        out = []
        if not self.fake_log.exists():
            return out
        for line in self.fake_log.read_text(errors="replace").splitlines():
            if "Got message" not in line or "<" not in line:
                continue
            inner = line[line.index("<") + 1:line.rindex(">")]
            sender, to, coding, data = inner.split(" ", 3)
            if coding == "ucs-2":
                text = unquote_to_bytes(data.replace("+", " ")).decode("utf-16-be")
            else:
                text = data
            out.append(Received(sender, to, coding, text))
        return out

    def wait_received(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        return self.received()
