"""Interop with FreeRADIUS's `radclient` (Debian freeradius-utils): a client we did not
write checks our replies' Response Authenticator and Message-Authenticator.

The server runs as `python -m radiusd serve -c FILE`, as an operator starts it.
radclient reads /usr/share/freeradius/dictionary, then ours (`-d dictionaries/`).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import require_peer
from tests.test_serve_process import REPO, ServeProcess

DICTIONARIES = REPO / "dictionaries"
PHONE = "+77011234567"

pytestmark = pytest.mark.interop


@pytest.fixture
def radclient() -> str:
    return require_peer("radclient", "freeradius-utils")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One server process for the module: starting Python costs more than the tests."""
    sp = ServeProcess(tmp_path_factory.mktemp("radclient")).start()
    yield sp
    sp.kill()


def run_radclient(exe: str, target: str, command: str, secret: str, attributes: str,
                  *, retries: int = 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "-x", "-r", str(retries), "-t", "2", "-d", str(DICTIONARIES), target, command,
         secret],
        input=attributes, capture_output=True, text=True, timeout=30,
    )


def received(out: str) -> tuple[str, list[str]]:
    """The reply code radclient printed and the reply's attribute names, in order."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"Received (\S+) Id \d+ from ", line)
        if m:
            names = []
            for attr in lines[i + 1:]:
                if not attr.startswith("\t"):
                    break
                names.append(attr.strip().split(" ", 1)[0])
            return m.group(1), names
    raise AssertionError(f"radclient received nothing:\n{out}")


def assert_verified(proc: subprocess.CompletedProcess[str]) -> None:
    both = proc.stdout + proc.stderr
    assert "verification failed" not in both, both
    assert "invalid Message-Authenticator" not in both, both
    assert "No reply" not in both, both


def host(address: tuple[str, int]) -> str:
    h, port = address
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


@pytest.mark.parametrize("family", [4, 6])
def test_radclient_status_server_gets_signed_access_accept(
    radclient: str, served: ServeProcess, family: int,
) -> None:
    target = host(served.auth4 if family == 4 else served.auth6)
    proc = run_radclient(radclient, target, "status", served.secret,
                         "Message-Authenticator = 0x00\n")
    assert_verified(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, attrs = received(proc.stdout)
    assert code == "Access-Accept"
    assert attrs[:1] == ["Message-Authenticator"]


def test_radclient_status_server_on_accounting_port_gets_accounting_response(
    radclient: str, served: ServeProcess,
) -> None:
    proc = run_radclient(radclient, host(served.acct4), "status", served.secret,
                         "Message-Authenticator = 0x00\n")
    assert_verified(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert received(proc.stdout) == ("Accounting-Response", ["Message-Authenticator"])


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("password_attr", ["User-Password", "CHAP-Password"])
def test_radclient_access_request_with_message_authenticator_gets_signed_answer(
    radclient: str, served: ServeProcess, family: int, password_attr: str,
) -> None:
    target = host(served.auth4 if family == 4 else served.auth6)
    proc = run_radclient(
        radclient, target, "auth", served.secret,
        f'User-Name = "{PHONE}"\n{password_attr} = "123456"\n'
        'Calling-Station-Id = "AA-BB-CC-DD-EE-02"\nNAS-Identifier = "radclient"\n'
        "Message-Authenticator = 0x00\n",
    )
    assert_verified(proc)
    code, attrs = received(proc.stdout)
    assert code in ("Access-Accept", "Access-Reject")
    assert attrs[0] == "Message-Authenticator"  # first attribute (BlastRADIUS)
    if code == "Access-Accept":
        assert proc.returncode == 0, proc.stderr
    else:  # radclient expects an Accept by default and says so
        assert proc.returncode == 1
        assert "Expected Access-Accept got Access-Reject" in proc.stderr


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "message-authenticator"])
def test_radclient_accounting_request_gets_accounting_response(
    radclient: str, served: ServeProcess, signed: bool,
) -> None:
    attributes = (f'Acct-Status-Type = Start\nAcct-Session-Id = "rc-{int(signed)}"\n'
                  f'User-Name = "{PHONE}"\nCalling-Station-Id = "AA-BB-CC-DD-EE-03"\n'
                  'NAS-Identifier = "radclient"\n')
    if signed:
        attributes += "Message-Authenticator = 0x00\n"
    proc = run_radclient(radclient, host(served.acct4), "acct", served.secret, attributes)
    assert_verified(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, attrs = received(proc.stdout)
    assert code == "Accounting-Response"
    assert attrs == (["Message-Authenticator"] if signed else [])


def test_radclient_with_the_wrong_secret_gets_no_reply(
    radclient: str, served: ServeProcess,
) -> None:
    proc = subprocess.run(
        [radclient, "-x", "-r", "1", "-t", "0.5", "-d", str(DICTIONARIES), host(served.auth4),
         "status", "not-the-secret"],
        input="Message-Authenticator = 0x00\n", capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "Received" not in proc.stdout
    assert "No reply" in proc.stdout + proc.stderr
