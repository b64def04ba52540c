"""Interop: FreeRADIUS 3.2 (Debian package freeradius), a peer we did not write,
receives our Disconnect-Requests on a `listen { type = coa }` socket.

It checks the Request Authenticator and the Message-Authenticator (a request signed
with another secret is dropped: "invalid Message-Authenticator"), decodes the
session's attributes, and answers Disconnect-ACK, or Disconnect-NAK with
Error-Cause 503 for User-Name "nobody", which our client verifies in turn.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radiusd.clock import ManualClock
from radiusd.config import ClientConfig
from radiusd.radius.coa import Backoff, SessionTarget
from radiusd.radius.disconnect import Disconnector, DisconnectResult, routes_from_config
from tests.conftest import require_peer
from tests.test_serve_process import free_port

pytestmark = pytest.mark.interop

SECRET = "coa-interop-secret"
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z

CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {tmp}
raddbdir = {tmp}/raddb
radacctdir = {tmp}
name = freeradius
confdir = ${{raddbdir}}
run_dir = {tmp}
db_dir = {tmp}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
correct_escapes = true
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
	destination = stderr
	colourise = no
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}}
client radiusd {{
	ipaddr = 127.0.0.1
	secret = {secret}
	require_message_authenticator = yes
}}
modules {{
	always ok {{
		rcode = ok
	}}
	always reject {{
		rcode = reject
	}}
}}
listen {{
	type = coa
	ipaddr = 127.0.0.1
	port = {port}
	virtual_server = coa
}}
server coa {{
	recv-coa {{
		if (&User-Name == "signed") {{
			update reply {{
				&Message-Authenticator := 0x00000000000000000000000000000000
			}}
		}}
		if (&User-Name == "nobody") {{
			update reply {{
				&Error-Cause := Session-Context-Not-Found
			}}
			reject
		}}
		ok
	}}
	send-coa {{
		ok
	}}
}}
"""


class FreeRadius:
    def __init__(self, tmp: Path) -> None:
        self.exe = require_peer("/usr/sbin/freeradius", "freeradius")
        self.tmp = tmp
        self.port = free_port("127.0.0.1")
        self.log = tmp / "freeradius.log"
        raddb = tmp / "raddb"
        raddb.mkdir()
        (raddb / "dictionary").write_text("$INCLUDE /usr/share/freeradius/dictionary\n")
        (raddb / "radiusd.conf").write_text(CONF.format(tmp=tmp, secret=SECRET,
                                                        port=self.port))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FreeRadius:
        check = subprocess.run([self.exe, "-C", "-d", str(self.tmp / "raddb")],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"freeradius -C: {check.stdout}{check.stderr}"
        self.proc = subprocess.Popen([self.exe, "-X", "-d", str(self.tmp / "raddb")],
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while "Ready to process requests" not in self.text():
            assert self.proc.poll() is None, f"freeradius exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"freeradius not ready:\n{self.text()}"
            time.sleep(0.05)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def freeradius(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreeRadius]:
    fr = FreeRadius(tmp_path_factory.mktemp("freeradius-coa")).start()
    yield fr
    fr.stop()


def target(user: str) -> SessionTarget:
    return SessionTarget(
        client="lab", nas_source="127.0.0.1", user_name=user, acct_session_id="81a0000f",
        calling_station_id="AA-BB-CC-DD-EE-01", framed_ip_address="10.5.50.23",
        nas_ip_address="127.0.0.1", nas_identifier="hs-1")


async def disconnect(fr: FreeRadius, user: str, secret: str = SECRET) -> DisconnectResult:
    routes = routes_from_config([ClientConfig(
        name="lab", address="127.0.0.1", secret=secret, coa="disconnect",
        coa_port=fr.port)])
    d = Disconnector(routes, ManualClock(T0), bind_v4="127.0.0.1",
                     backoff=Backoff(initial=0.2, maximum=0.4, attempts=3, duration=2.0))
    try:
        return await asyncio.wait_for(d.disconnect(target(user), T0), 10)
    finally:
        await d.close()


async def test_freeradius_acks_our_disconnect_request(freeradius: FreeRadius) -> None:
    result = await disconnect(freeradius, "+77011234567")
    assert (result.outcome, result.attempts) == ("ack", 1), freeradius.text()
    log = freeradius.text()
    assert "Received Disconnect-Request Id" in log
    for line in ('User-Name = "+77011234567"', 'Acct-Session-Id = "81a0000f"',
                 'Calling-Station-Id = "AA-BB-CC-DD-EE-01"', "Framed-IP-Address = 10.5.50.23",
                 "NAS-IP-Address = 127.0.0.1", 'NAS-Identifier = "hs-1"',
                 'Event-Timestamp = "Jan  1 2026 00:00:00 UTC"', "Message-Authenticator = 0x"):
        assert line in log, line
    assert "Sent Disconnect-ACK Id" in log


async def test_freeradius_nak_carries_error_cause_503(freeradius: FreeRadius) -> None:
    result = await disconnect(freeradius, "nobody")
    assert (result.outcome, result.error_cause) == ("nak", 503), freeradius.text()
    assert result.error_cause_name == "Session-Context-Not-Found"


async def test_freeradius_drops_a_request_signed_with_another_secret(
        freeradius: FreeRadius) -> None:
    result = await disconnect(freeradius, "+77011234568", secret="not-the-secret-either")
    assert result.outcome == "timeout"
    assert "invalid Message-Authenticator" in freeradius.text()


async def test_a_freeradius_answer_signed_over_a_zero_vector_is_believed(
        freeradius: FreeRadius) -> None:
    """FreeRADIUS 3 computes an answer's Message-Authenticator over 16 zero octets,
    not the Request Authenticator RFC 5176 §3.4 names; both are accepted."""
    result = await disconnect(freeradius, "signed")
    assert result.outcome == "ack", freeradius.text()
    sent = freeradius.text().rsplit("Sent Disconnect-ACK", 1)[1]
    assert "Message-Authenticator" in sent.split("Finished request", 1)[0]
