"""Issue 15 item 6: two venues through `radiusd serve`, as an operator runs it: the
café's MikroTik played by FreeRADIUS's radclient (from 127.0.0.1), the airport's
CoovaChilli by the simulated NAS (from 127.0.0.2). Each gets its own language, its
SMS goes through its own provider with its own sender and text, and its Access-Accept
carries its rate limit in its vendor's attribute and units."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_peer
from test_otp_radclient import _free_udp_port, _radclient, _received, _reply, _wait_ready

from radiusd.testing.nas import SimulatedNAS

pytestmark = pytest.mark.interop


@pytest.fixture
def two_venues(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    auth, acct = _free_udp_port(), _free_udp_port()
    conf = tmp_path / "radiusd.toml"
    conf.write_text(f"""
[server]
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]

[database]
path = "{tmp_path / 'radiusd.db'}"

[otp]
key_file = "{tmp_path / 'radiusd.key'}"

[sms]
provider = "file"
[sms.file]
path = "{tmp_path / 'cafe.jsonl'}"

[sms.providers.airport]
provider = "file"
[sms.providers.airport.file]
path = "{tmp_path / 'airport.jsonl'}"

[[clients]]
name = "cafe-mikrotik"
address = "127.0.0.1"
secret = "testing123"
vendor = "mikrotik"

[[clients]]
name = "airport-chilli"
address = "127.0.0.2"
secret = "testing123"
vendor = "coovachilli"

[[venues]]
name = "cafe"
clients = ["cafe-mikrotik"]
language = "ru"
sms = {{ sender = "CAFE", templates = {{ ru = "Кафе: пароль {{code}}" }} }}
rate_limit = "2M/8M"

[[venues]]
name = "airport"
clients = ["airport-chilli"]
language = "en"
sms = {{ provider = "airport", sender = "AIRPORT", templates = {{ en = "Airport code {{code}}" }} }}
rate_limit = "512k/1M"
idle_timeout_seconds = 600
""")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        asyncio.run(_wait_ready(proc, auth, tmp_path))
        yield tmp_path, auth, acct
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sms_in(path: Path, to: str) -> dict[str, str]:
    """The SMS the file provider wrote for `to` (the outbox worker writes it soon)."""
    deadline = time.monotonic() + 10
    while True:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                item = json.loads(line)
                if item["to"] == to:
                    return dict(item)
        assert time.monotonic() < deadline, f"no SMS to {to} in {path}"
        time.sleep(0.05)


def test_two_venues_through_radiusd_serve(two_venues: tuple[Path, int, int]) -> None:
    exe = require_peer("radclient", "freeradius-utils")
    tmp, auth, _ = two_venues

    # The café, with radclient: Russian, its sender and text, Mikrotik-Rate-Limit.
    base = ['User-Name = "8 701 234 56 78"', 'Calling-Station-Id = "AA-BB-CC-DD-EE-42"',
            'NAS-IP-Address = 127.0.0.1']
    _, out = _radclient(exe, auth, "auth", [*base, 'CHAP-Password = ""'])
    assert _received(out) == "Access-Reject", out
    assert _reply(out) == "Пароль отправлен по SMS на +7 701 *** ** 78", out
    sms = sms_in(tmp / "cafe.jsonl", "+77012345678")
    assert sms["sender"] == "CAFE"
    (code,) = re.findall(r"Кафе: пароль (\d{6})$", sms["text"])
    _, out = _radclient(exe, auth, "auth", [*base, f'User-Password = "{code}"'])
    assert _received(out) == "Access-Accept", out
    assert 'Mikrotik-Rate-Limit = "2M/8M"' in out, out
    assert "ChilliSpot" not in out and "Idle-Timeout" not in out

    # The airport, with the simulated CoovaChilli: English, its own provider, kbit/s.
    async def airport() -> None:
        nas = SimulatedNAS(auth_address=("127.0.0.1", auth), source="127.0.0.2",
                           timeout=2.0)
        answer = await nas.send(nas.access_request("8 701 765 43 21", ""))
        assert answer.get("Reply-Message") == "Password sent by SMS to +7 701 *** ** 21"
        sms = sms_in(tmp / "airport.jsonl", "+77017654321")
        assert sms["sender"] == "AIRPORT"
        (code,) = re.findall(r"^Airport code (\d{6})$", sms["text"])
        answer = await nas.send(nas.access_request("8 701 765 43 21", code))
        assert answer.code == 2
        assert answer.get("ChilliSpot-Bandwidth-Max-Up") == 512
        assert answer.get("ChilliSpot-Bandwidth-Max-Down") == 1000
        assert answer.get("Idle-Timeout") == 600
        assert answer.get("Mikrotik-Rate-Limit") is None

    asyncio.run(airport())
    assert not (tmp / "airport.jsonl").read_text().count("+77012345678")
