"""Shared secrets (issue 14): a weak or well-known secret is a config error naming the
client; a NAS whose unsigned PAP requests do not decode with the configured secret
shows in the log once a minute (RFC 2865 §3, §5.2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from radiusd.app import Server
from radiusd.cli import main
from radiusd.config import ClientConfig, ConfigError, load
from radiusd.radius.clients import ClientTable
from radiusd.radius.dedup import DuplicateCache
from radiusd.radius.dictionary import default_codec
from radiusd.radius.endpoint import Endpoint, Process
from radiusd.stats import Stats
from radiusd.testing.nas import BadReply, NoReply, SimulatedNAS
from radiusd.testing.server import nas_for

REPO = Path(__file__).resolve().parents[1]
GOOD_SECRET = "q7Rk2vX9pL4mW8sT1nZ6"
PHONE = "+77011234567"


def client_file(tmp_path: Path, secret: str, address: str = "10.0.0.0/24") -> Path:
    path = tmp_path / "radiusd.toml"
    path.write_text(f'[[clients]]\nname = "hotspot-1"\naddress = "{address}"\n'
                    f'secret = "{secret}"\n')
    return path


# -- the rule in the config --------------------------------------------------------------


@pytest.mark.parametrize(("secret", "address", "words"), [
    ("abc", "10.0.0.0/24", "too short (3 characters, at least 16)"),
    ("fifteen-chars15", "127.0.0.1", "too short (15 characters, at least 16)"),
    ("change-me-to-a-long-random-string", "10.0.0.0/24", "the example file's placeholder"),
    ("testing123", "10.0.0.0/24", "well-known default, allowed for loopback addresses only"),
    ("testing123", "127.0.0.1/8", None),
])
def test_a_weak_secret_is_a_config_error_naming_the_client(
        tmp_path: Path, secret: str, address: str, words: str | None) -> None:
    path = client_file(tmp_path, secret, address)
    if words is None:  # FreeRADIUS's localhost default stays usable on loopback
        assert load(path).clients[0].secret == secret
        return
    with pytest.raises(ConfigError) as e:
        load(path)
    line = str(e.value)
    assert line.startswith(f"{path}: clients[0].secret: client 'hotspot-1': ")
    assert words in line
    if "short" in words:  # a real secret, however weak, is never printed
        assert secret not in line.split("secret:", 1)[1]
    assert line.endswith("make one with: openssl rand -base64 24")


def test_testing123_next_to_a_network_address_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text('[[clients]]\nname = "mixed"\naddress = ["127.0.0.1", "10.0.0.1"]\n'
                    'secret = "testing123"\n')
    with pytest.raises(ConfigError, match=r"clients\[0\]\.secret: client 'mixed'"):
        load(path)


def test_check_config_refuses_the_example_file_until_its_secret_is_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = (REPO / "radiusd.example.toml").read_text()
    copy = tmp_path / "radiusd.toml"
    copy.write_text(example)
    assert main(["check-config", "-c", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "clients[0].secret: client 'hotspot-1': 'change-me-to-a-long-random-string' " \
           "is the example file's placeholder" in err
    copy.write_text(example.replace("change-me-to-a-long-random-string", GOOD_SECRET))
    assert main(["check-config", "-c", str(copy)]) == 0, capsys.readouterr().err


def test_the_embedded_defaults_keep_testing123_on_loopback() -> None:
    """README's two commands and radclient examples run without a config file."""
    (client,) = load(None).clients
    assert client.secret == "testing123" and client.networks()[0].is_loopback


# -- a secret mismatch shows in the log --------------------------------------------------


def test_unsigned_pap_with_another_secret_is_logged_once_a_minute_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="radiusd.radius")
    clients = ClientTable([ClientConfig(name="hotspot-1", address="127.0.0.1",
                                        secret=GOOD_SECRET)])
    endpoint = Endpoint("auth", clients, DuplicateCache(5.0), default_codec(), Stats())
    wrong = SimulatedNAS(("127.0.0.1", 1812), secret=b"the-secret-on-the-nas-differs",
                         message_authenticator=False)
    right = SimulatedNAS(("127.0.0.1", 1812), secret=GOOD_SECRET.encode(),
                         message_authenticator=False)

    def send(nas: SimulatedNAS, password: str, now: float) -> None:
        datagram = nas.encode(nas.access_request(PHONE, password))
        assert isinstance(endpoint.receive(datagram, ("127.0.0.1", 40000), now), Process)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "secret" in r.getMessage()]

    for t in (1.0, 2.0, 3.0):
        send(wrong, "123456", t)
        send(right, "654321", t)  # the right secret: a code typed by a person
        send(right, "", t)  # and "Get password"
    assert len(lines()) == 1
    assert "client hotspot-1 (127.0.0.1)" in lines()[0] and "likely a shared secret " \
        "mismatch" in lines()[0]
    assert GOOD_SECRET not in lines()[0]
    send(wrong, "123456", 62.0)
    assert len(lines()) == 2 and "(2 more like this in the last 60s)" in lines()[1]


async def test_a_nas_with_another_secret_leaves_one_line_in_the_servers_log(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's case: a NAS that does not sign, with a wrong secret, pressing
    "Get password" three times: one warning naming the client, not silence."""
    caplog.set_level(logging.WARNING, logger="radiusd.radius")
    nas = nas_for(server, secret=b"the-secret-on-the-nas-differs",
                  message_authenticator=False, timeout=0.5, retries=0)
    for _ in range(3):
        with pytest.raises((BadReply, NoReply)):  # signed with the server's secret
            await nas.send(nas.access_request(PHONE, ""))
    lines = [r.getMessage() for r in caplog.records if "shared secret" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "client localhost" in lines[0] and "testing123" not in lines[0]
