"""The main flow with FreeRADIUS's radclient against `radiusd serve` (issue 4 item 12):
Get password (CHAP over an empty password), read the code, log in with PAP and with CHAP
(radclient computes CHAP over the Request Authenticator), Accounting Start/Stop, and
the password is rejected after Stop (Rules §8–§9)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_peer

from radiusd.config import load
from radiusd.sealing import Sealer
from radiusd.testing.nas import NoReply, SimulatedNAS

pytestmark = pytest.mark.interop

SECRET = "testing123"
PHONE = "+77012345678"
MAC = "AA-BB-CC-DD-EE-42"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
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
path = "{tmp_path / 'outbox.jsonl'}"

[[clients]]
name = "localhost"
address = ["127.0.0.1"]
secret = "{SECRET}"
""")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        asyncio.run(_wait_ready(proc, auth, tmp_path))
        yield conf, auth, acct
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _wait_ready(proc: subprocess.Popen[bytes], auth: int, tmp_path: Path) -> None:
    """Bounded readiness poll with Status-Server (RFC 5997)."""
    nas = SimulatedNAS(auth_address=("127.0.0.1", auth), timeout=0.1, retries=0)
    for _ in range(100):  # at most ~10 s
        if proc.poll() is not None:
            raise AssertionError("radiusd serve exited:\n"
                                 + (tmp_path / "serve.log").read_text(errors="replace"))
        try:
            if (await nas.send(nas.status_server())).code == 2:
                return
        except NoReply:
            continue
    raise AssertionError("radiusd serve did not answer Status-Server within 10 s")


def _radclient(exe: str, port: int, kind: str, attrs: list[str]) -> tuple[int, str]:
    body = "\n".join([*attrs, "Message-Authenticator = 0x00"]) + "\n"
    done = subprocess.run([exe, "-x", "-r", "2", "-t", "2", f"127.0.0.1:{port}", kind, SECRET],
                          input=body, capture_output=True, text=True, timeout=15)
    return done.returncode, done.stdout + done.stderr


def _code_from_db(conf: Path) -> str:
    """Read the code as the operator could: the DB row opened with the key file."""
    config = load(conf)
    sealer = Sealer.from_config(config.otp, create=False)
    with sqlite3.connect(config.database.path) as db:
        rows = db.execute("SELECT body FROM sms_outbox WHERE recipient = ? "
                          "ORDER BY created_at DESC LIMIT 1", (PHONE,)).fetchall()
    assert rows, "no SMS queued"
    text = sealer.open(rows[0][0], b"sms").decode()
    (code,) = re.findall(r"\d{6}", text)
    return str(code)


def _reply(output: str) -> str:
    found = re.findall(r'Reply-Message = "((?:[^"\\]|\\.)*)"', output)
    return re.sub(r"\\(.)", r"\1", found[-1]) if found else ""


def _received(output: str) -> str:
    found = re.findall(r"Received (Access-\w+|Accounting-\w+)", output)
    assert found, output
    return str(found[-1])


def test_radclient_get_password_pap_chap_accounting_and_rejection_after_stop(
        served: tuple[Path, int, int]) -> None:
    exe = require_peer("radclient", "freeradius-utils")
    conf, auth, acct = served
    base = ['User-Name = "8 701 234 56 78"', f'Calling-Station-Id = "{MAC}"',
            'NAS-IP-Address = 127.0.0.1', 'NAS-Identifier = "radclient"']

    # "Get password": CHAP over the empty password, as MikroTik http-chap sends it.
    # (radclient leaves an empty `User-Password = ""` out of the packet altogether,
    # so the PAP all-zero block is driven by the simulated NAS in test_otp_request.)
    _, out = _radclient(exe, auth, "auth", [*base, 'CHAP-Password = ""'])
    assert "CHAP-Password" in out, out
    assert _received(out) == "Access-Reject", out
    assert _reply(out) == "Password sent by SMS to +7 701 *** ** 78", out
    code = _code_from_db(conf)

    # PAP with the code from the SMS.
    rc, out = _radclient(exe, auth, "auth", [*base, f'User-Password = "{code}"'])
    assert _received(out) == "Access-Accept", out
    assert rc == 0
    klass = re.search(r"Class = (0x[0-9a-f]+)", out)
    assert klass, out
    assert "Acct-Interim-Interval = 300" in out
    assert "Session-Timeout" in out

    # CHAP, same device: re-authentication while the session lives.
    _, out = _radclient(exe, auth, "auth", [*base, f'CHAP-Password = "{code}"'])
    assert _received(out) == "Access-Accept", out
    # CHAP from another device is refused.
    other = [a for a in base if not a.startswith("Calling")] + \
        ['Calling-Station-Id = "11-22-33-44-55-66"']
    _, out = _radclient(exe, auth, "auth", [*other, f'CHAP-Password = "{code}"'])
    assert _received(out) == "Access-Reject", out
    assert _reply(out) == "Wrong password"  # another device: same answer as a wrong code

    session = ["Acct-Session-Id = \"80f00001\"", f'User-Name = "{PHONE}"',
               f'Calling-Station-Id = "{MAC}"', "NAS-IP-Address = 127.0.0.1",
               f"Class = {klass.group(1)}", "Framed-IP-Address = 10.5.0.7"]
    _, out = _radclient(exe, acct, "acct", [*session, "Acct-Status-Type = Start"])
    assert _received(out) == "Accounting-Response", out
    _, out = _radclient(exe, acct, "acct", [
        *session, "Acct-Status-Type = Stop", "Acct-Session-Time = 90",
        "Acct-Input-Octets = 1000", "Acct-Input-Gigawords = 1",
        "Acct-Terminate-Cause = User-Request"])
    assert _received(out) == "Accounting-Response", out

    with sqlite3.connect(load(conf).database.path) as db:
        row = db.execute("SELECT stopped_at, input_octets, terminate_cause, framed_ip "
                         "FROM sessions WHERE acct_session_id = '80f00001'").fetchone()
        pw = db.execute("SELECT state, expire_reason FROM passwords").fetchall()
    assert row[0] is not None
    assert row[1:] == ((1 << 32) + 1000, "User-Request", "10.5.0.7")
    assert pw == [("expired", "stop")]

    # Rules §9: the password died with the session, PAP and CHAP alike.
    for attr in (f'User-Password = "{code}"', f'CHAP-Password = "{code}"'):
        rc, out = _radclient(exe, auth, "auth", [*base, attr])
        assert _received(out) == "Access-Reject", out
        assert _reply(out) == 'This password is no longer valid. Press "Get password"', out
        assert rc != 0
    # The SMS file provider got the message with the code.
    outbox = Path(load(conf).sms.file.path)
    if outbox.exists():
        assert code in outbox.read_text(encoding="utf-8")
    assert os.stat(load(conf).otp.key_file).st_mode & 0o077 == 0
