"""Interop over RadSec (RFC 6614, issue 16 item 4) with peers we did not write:
FreeRADIUS's `radclient` talks UDP to Debian's `radsecproxy`, which carries it over
TLS to `radiusd serve` (radclient -> radsecproxy -> radiusd), and `openssl s_client`
tries TLS 1.1. The certificates are made by the test (tests/radsec_support.py).
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from radiusd.config import load
from radiusd.sealing import Sealer
from tests.conftest import require_peer
from tests.radsec_support import Issued, Pki, make_pki
from tests.test_serve_process import free_port, local_files

pytestmark = pytest.mark.interop

PHONE = "+77012345678"
MAC = "AA-BB-CC-DD-EE-61"
UDP_SECRET = "radclient-to-radsecproxy-secret"  # radclient -> radsecproxy only


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    tmp: Path
    config: Path
    radsec_port: int
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Served]:
    """`radiusd serve` with a RadSec listener on 127.0.0.1 and the client nas1 (by name)."""
    tmp = tmp_path_factory.mktemp("radsec-serve")
    for _ in range(3):  # another process may take a free port first
        port = free_tcp_port()
        conf = tmp / "radiusd.toml"
        conf.write_text(f"""
[server]
auth_listen = ["127.0.0.1:{free_port('127.0.0.1')}"]
acct_listen = ["127.0.0.1:{free_port('127.0.0.1')}"]
radsec_listen = ["127.0.0.1:{port}"]

[radsec]
certificate = "{pki.server.cert}"
private_key = "{pki.server.key}"
ca_file = "{pki.ca.path}"

{local_files(tmp)}

[[clients]]
name = "nas1"
address = "127.0.0.1"
radsec = true
certificate_name = "nas1.example"
""")
        log_path = tmp / "radiusd.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(conf)],
                                    cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        s = Served(tmp, conf, port, log_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None \
                and "radiusd ready" not in s.log:
            time.sleep(0.05)
        if proc.poll() is None and "radiusd ready" in s.log:
            break
        proc.kill()
        proc.wait(5)
        if "Address already in use" not in s.log:
            pytest.fail(f"radiusd serve did not start:\n{s.log}")
    else:
        pytest.fail("radiusd serve found no free port in 3 tries")
    try:
        yield s
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        assert "Traceback" not in s.log, s.log


class RadsecProxy:
    """Debian's radsecproxy: UDP from radclient in, TLS to radiusd out."""

    def __init__(self, tmp: Path, pki: Pki, nas: Issued, server_port: int) -> None:
        self.exe = require_peer("/usr/sbin/radsecproxy", "radsecproxy")
        self.tmp = tmp
        self.port = free_port("127.0.0.1")
        self.config = tmp / "radsecproxy.conf"
        self.log_path = tmp / "radsecproxy.log"
        self.config.write_text(f"""
ListenUDP 127.0.0.1:{self.port}
PidFile {tmp / 'radsecproxy.pid'}

tls default {{
    CACertificateFile {pki.ca.path}
    CertificateFile {nas.cert}
    CertificateKeyFile {nas.key}
}}

client radclient {{
    host 127.0.0.1
    type udp
    secret {UDP_SECRET}
}}

server radiusd {{
    host 127.0.0.1
    port {server_port}
    type tls
    secret radsec
    StatusServer on
}}

realm * {{
    server radiusd
    accountingServer radiusd
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RadsecProxy:
        check = subprocess.run([self.exe, "-p", "-c", str(self.config)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"radsecproxy -p: {check.stdout}{check.stderr}"
        with open(self.log_path, "ab") as log:  # -f: the log goes to stderr
            self.proc = subprocess.Popen([self.exe, "-f", "-d", "4", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def radclient(self, kind: str, attrs: list[str], retries: int = 3) -> tuple[int, str]:
        exe = require_peer("radclient", "freeradius-utils")
        # Accounting unsigned, as NAS send it: radsecproxy 1.9 and radclient disagree on
        # a signed Accounting-Request ("message authenticator, wrong value").
        signed = ["Message-Authenticator = 0x00"] if kind == "auth" else []
        body = "\n".join([*attrs, *signed]) + "\n"
        done = subprocess.run(
            [exe, "-x", "-r", str(retries), "-t", "3", f"127.0.0.1:{self.port}", kind,
             UDP_SECRET], input=body, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout + done.stderr


def received(output: str) -> str:
    found = re.findall(r"Received (Access-\w+|Accounting-\w+)", output)
    assert found, output
    return str(found[-1])


def reply_message(output: str) -> str:
    found = re.findall(r'Reply-Message = "((?:[^"\\]|\\.)*)"', output)
    return re.sub(r"\\(.)", r"\1", found[-1]) if found else ""


def code_from_db(conf: Path) -> str:
    """Read the code as the operator could: the DB row opened with the key file."""
    config = load(conf)
    sealer = Sealer.from_config(config.otp, create=False)
    with sqlite3.connect(config.database.path) as db:
        rows = db.execute("SELECT body FROM sms_outbox WHERE recipient = ? "
                          "ORDER BY created_at DESC LIMIT 1", (PHONE,)).fetchall()
    assert rows, "no SMS queued"
    (code,) = re.findall(r"\d{6}", sealer.open(rows[0][0], b"sms").decode())
    return str(code)


def test_radsecproxy_get_password_login_accounting_and_code_dead_after_stop(
    served: Served, pki: Pki, tmp_path: Path,
) -> None:
    base = ['User-Name = "8 701 234 56 78"', f'Calling-Station-Id = "{MAC}"',
            'NAS-IP-Address = 127.0.0.1', 'NAS-Identifier = "radclient"']
    with RadsecProxy(tmp_path, pki, pki.nas, served.radsec_port) as proxy:
        # "Get password": CHAP over the empty password (radclient leaves out an empty
        # User-Password), with its own CHAP-Challenge so no proxy can break it.
        _, out = proxy.radclient("auth", [*base, 'CHAP-Password = ""',
                                          "CHAP-Challenge = 0x0102030405060708090a0b0c0d0e0f10"],
                                 retries=5)
        assert received(out) == "Access-Reject", out + proxy.log + served.log
        assert reply_message(out) == "Password sent by SMS to +7 701 *** ** 78", out
        code = code_from_db(served.config)

        rc, out = proxy.radclient("auth", [*base, f'User-Password = "{code}"'])
        assert received(out) == "Access-Accept", out
        assert rc == 0
        klass = re.search(r"Class = (0x[0-9a-f]+)", out)
        assert klass, out

        session = ['Acct-Session-Id = "rs000001"', f'User-Name = "{PHONE}"',
                   f'Calling-Station-Id = "{MAC}"', "NAS-IP-Address = 127.0.0.1",
                   f"Class = {klass.group(1)}"]
        _, out = proxy.radclient("acct", [*session, "Acct-Status-Type = Start"])
        assert received(out) == "Accounting-Response", out
        _, out = proxy.radclient("acct", [*session, "Acct-Status-Type = Stop",
                                          "Acct-Session-Time = 60",
                                          "Acct-Terminate-Cause = User-Request"])
        assert received(out) == "Accounting-Response", out

        rc, out = proxy.radclient("auth", [*base, f'User-Password = "{code}"'])
        assert received(out) == "Access-Reject", out
        assert reply_message(out) == 'This password is no longer valid. Press "Get password"'
        assert rc != 0

    with sqlite3.connect(load(served.config).database.path) as db:
        row = db.execute("SELECT stopped_at, terminate_cause FROM sessions "
                         "WHERE acct_session_id = 'rs000001'").fetchone()
    assert row is not None and row[0] is not None and row[1] == "User-Request"


def refused_through_proxy(served: Served, pki: Pki, nas: Issued, tmp_path: Path) -> str:
    """radclient gets no answer through radsecproxy presenting ``nas``; return
    radiusd's log."""
    with RadsecProxy(tmp_path, pki, nas, served.radsec_port) as proxy:
        rc, out = proxy.radclient("auth", ['User-Name = "8 701 234 56 78"',
                                           'User-Password = "123456"'], retries=1)
        assert rc != 0
        assert "Received" not in out, out
    return served.log


def test_radsecproxy_with_a_certificate_from_another_ca_is_refused(
    served: Served, pki: Pki, tmp_path: Path,
) -> None:
    rogue = pki.other_ca.issue("nas1.example", dns=("nas1.example",))
    log = refused_through_proxy(served, pki, rogue, tmp_path)
    assert re.search(r"radsec connection from 127\.0\.0\.1 refused: certificate verify "
                     r"failed", log), log


def test_radsecproxy_with_a_certificate_of_the_wrong_name_is_refused(
    served: Served, pki: Pki, tmp_path: Path,
) -> None:
    other = pki.ca.issue("nas9.example", dns=("nas9.example",))
    log = refused_through_proxy(served, pki, other, tmp_path)
    assert re.search(r"radsec connection from 127\.0\.0\.1 refused: certificate "
                     r"nas9\.example .* matches no client", log), log


@pytest.mark.parametrize("version, accepted", [("-tls1_1", False), ("-tls1_2", True),
                                               ("-tls1_3", True)])
def test_openssl_s_client_tls_versions(served: Served, pki: Pki, version: str,
                                       accepted: bool) -> None:
    exe = require_peer("openssl", "openssl")
    done = subprocess.run(
        [exe, "s_client", "-connect", f"127.0.0.1:{served.radsec_port}", version,
         "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", str(pki.nas.cert), "-key", str(pki.nas.key),
         "-CAfile", str(pki.ca.path), "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=30)
    out = done.stdout + done.stderr
    if accepted:
        assert done.returncode == 0, out
        assert f"Protocol  : TLSv1.{version[-1]}" in out or \
            f"New, TLSv1.{version[-1]}" in out, out
    else:
        assert done.returncode != 0, out
        assert "Cipher is (NONE)" in out, out
        deadline = time.monotonic() + 10
        while "unsupported protocol" not in served.log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "unsupported protocol" in served.log, served.log
