"""`radiusd serve` and `radiusd check-config` as an operator runs them: a real process,
a TOML file, signals, exit codes and the log."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radiusd import __version__, cli
from radiusd.testing.nas import SimulatedNAS

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cret-never-logged-7f3a9c"
CLIENT_NAME = "hotspot-lab"


def local_files(tmp: Path) -> str:
    """A config's sections for the files a server keeps, all in `tmp`: the database,
    the sealing key and the SMS outbox file."""
    return f"""
[database]
path = "{tmp / 'radiusd.db'}"

[otp]
key_file = "{tmp / 'radiusd.key'}"

[sms]
provider = "file"

[sms.file]
path = "{tmp / 'outbox.jsonl'}"
"""


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def radiusd(*args: str, cwd: Path | None = None, timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "radiusd", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)


class ServeProcess:
    """`python -m radiusd serve -c FILE` on free loopback ports (IPv4 and IPv6)."""

    def __init__(self, tmp: Path, secret: str = SECRET) -> None:
        self.tmp = tmp
        self.secret = secret
        self.config = tmp / "radiusd.toml"
        self.log_path = tmp / "radiusd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        """Pick free ports (another process may still take one first: `start` retries)."""
        tmp, secret = self.tmp, self.secret
        self.auth4 = ("127.0.0.1", free_port("127.0.0.1"))
        self.acct4 = ("127.0.0.1", free_port("127.0.0.1"))
        self.auth6 = ("::1", free_port("::1"))
        self.acct6 = ("::1", free_port("::1"))
        self.config.write_text(f"""
[server]
auth_listen = ["127.0.0.1:{self.auth4[1]}", "[::1]:{self.auth6[1]}"]
acct_listen = ["127.0.0.1:{self.acct4[1]}", "[::1]:{self.acct6[1]}"]

{local_files(tmp)}
[[clients]]
name = "{CLIENT_NAME}"
address = ["127.0.0.1", "::1"]
secret = "{secret}"
require_message_authenticator = "auto"
""")

    def start(self, attempts: int = 3) -> ServeProcess:
        for attempt in range(attempts):
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "radiusd", "serve", "-c", str(self.config)],
                    cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                )
            if self.wait_ready(retry_busy_port=attempt + 1 < attempts):
                return self
            self.write_config()
        raise AssertionError("unreachable")


    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status_ok(self, address: tuple[str, int], timeout: float = 0.2) -> bool:
        """One Status-Server with Message-Authenticator; True on a verified answer."""
        nas = SimulatedNAS(auth_address=address, secret=self.secret.encode())
        pkt = nas.status_server()
        raw = nas.encode(pkt)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(raw, address)
            try:
                reply = s.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                return False
        return bool(pkt.VerifyReply(pkt.CreateReply(packet=reply), reply, enforce_ma=True))

    def wait_ready(self, limit: float = 10.0, retry_busy_port: bool = False) -> bool:
        """Ready: it answers Status-Server and has logged "ready" (signal handlers are
        installed by then). False when a port was taken meanwhile and a retry is allowed."""
        assert self.proc is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if retry_busy_port and "Address already in use" in self.log:
                    return False
                pytest.fail(f"radiusd exited with {self.proc.returncode}:\n{self.log}")
            if self.status_ok(self.auth4) and "radiusd ready" in self.log:
                return True
        self.kill()
        pytest.fail(f"radiusd did not answer Status-Server within {limit}s:\n{self.log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"radiusd did not exit within {timeout}s of signal {sig}:\n{self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def serve_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    sp = ServeProcess(tmp_path).start()
    yield sp
    sp.kill()


# -- serve ---------------------------------------------------------------------------


def test_serve_logs_listen_addresses_and_client_names_but_never_the_secret(
    serve_process: ServeProcess,
) -> None:
    sp = serve_process
    assert sp.status_ok(sp.acct4) and sp.status_ok(sp.auth6) and sp.status_ok(sp.acct6)
    assert sp.stop() == 0
    log = sp.log
    for host, port in (sp.auth4, sp.acct4):
        assert f"{host}:{port}" in log
    for host, port in (sp.auth6, sp.acct6):
        assert f"[{host}]:{port}" in log
    assert CLIENT_NAME in log
    assert SECRET not in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_signal(serve_process: ServeProcess, sig: int) -> None:
    assert serve_process.stop(sig) == 0
    log = serve_process.log
    assert "stopped" in log
    assert "Traceback" not in log


def serve_on_busy_port(tmp_path: Path) -> tuple[ServeProcess, subprocess.CompletedProcess[str]]:
    sp = ServeProcess(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(sp.auth4)
        proc = radiusd("serve", "-c", str(sp.config), cwd=tmp_path)
    return sp, proc


def test_serve_refuses_a_port_already_in_use_naming_it(tmp_path: Path) -> None:
    sp, proc = serve_on_busy_port(tmp_path)
    assert proc.returncode != 0
    assert f"127.0.0.1:{sp.auth4[1]}" in proc.stderr


def test_serve_on_a_busy_port_exits_without_a_traceback(tmp_path: Path) -> None:
    _, proc = serve_on_busy_port(tmp_path)
    assert "Traceback" not in proc.stderr


def test_serve_with_missing_config_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = radiusd("serve", "-c", str(missing), cwd=tmp_path)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr


# -- check-config and --version --------------------------------------------------------

GOOD = """
[server]
auth_listen = ["127.0.0.1:1812"]
acct_listen = ["127.0.0.1:1813"]

[[clients]]
name = "hotspot-1"
address = "10.0.0.0/24"
secret = "abc-sixteen-chars-ok"
"""


def test_check_config_accepts_a_good_file_and_shows_what_it_would_listen_on(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "good.toml"
    cfg.write_text(GOOD)
    proc = radiusd("check-config", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "127.0.0.1:1812" in proc.stdout and "127.0.0.1:1813" in proc.stdout
    assert "hotspot-1" in proc.stdout
    assert "abc" not in proc.stdout.replace("hotspot", "")  # the secret is not shown


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD + "\n[sms]\nprovidr = \"log\"\n", "sms.providr"),
        (GOOD.replace("[server]", "[server]\nbogus = 1"), "server.bogus"),
        (GOOD.replace('address = "10.0.0.0/24"', 'address = "10.0.0.300"'),
         "clients[0].address"),
        (GOOD.replace('address = "10.0.0.0/24"', 'address = ["10.0.0.1", "not-an-ip"]'),
         "clients[0].address"),
        (GOOD + 'require_message_authenticator = "sometimes"\n',
         "clients[0].require_message_authenticator"),
        (GOOD + 'require_message_authenticator = "true"\n',
         "clients[0].require_message_authenticator"),
        (GOOD.replace('"127.0.0.1:1812"', '"127.0.0.1"'), "server.auth_listen"),
    ],
    ids=["unknown-key", "unknown-server-key", "bad-address", "bad-address-in-list",
         "bad-require-ma", "quoted-true-require-ma", "listen-without-port"],
)
def test_check_config_rejects_bad_file_naming_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str,
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert cli.main(["check-config", "-c", str(cfg)]) != 0  # same code as the command
    err = capsys.readouterr().err
    assert key in err
    assert str(cfg) in err


def test_check_config_command_exits_non_zero_naming_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(GOOD + 'require_message_authenticator = "sometimes"\n')
    proc = radiusd("check-config", "-c", str(cfg))
    assert proc.returncode != 0
    assert "clients[0].require_message_authenticator" in proc.stderr
    assert str(cfg) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_rejects_invalid_toml_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[server\n")
    assert cli.main(["check-config", "-c", str(cfg)]) != 0
    assert str(cfg) in capsys.readouterr().err


def test_version_is_printed() -> None:
    proc = radiusd("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"radiusd {__version__}"
