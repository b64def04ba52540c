"""Config errors say where and what to write; valid-but-odd configs get warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from radiusd.cli import main
from radiusd.config import ConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "radiusd.toml"
    path.write_text(text)
    return path


def test_a_typo_is_reported_before_the_missing_key_it_explains(tmp_path: Path) -> None:
    path = write(tmp_path, '[[clients]]\nname = "a"\naddress = "10.0.0.1"\nsecrett = "x"\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{path}: clients[0].secrett: unknown key " \
                       "(see radiusd.example.toml for the keys there are)"
    assert lines[1] == f'{path}: clients[0].secret: missing: add secret = "..." ' \
                       "(the shared secret the NAS uses)"


@pytest.mark.parametrize(("text", "message"), [
    ('[otp]\nlength = "6"\n', "otp.length: must be a whole number without quotes, e.g. 6"),
    ("[database]\npath = 5\n", 'database.path: must be text in quotes, e.g. "..."'),
    ('[server]\nauth_listen = "127.0.0.1:1812"\n',
     'server.auth_listen: must be a list in brackets, e.g. ["..."]'),
    ('[[clients]]\nname = "a"\naddress = "10.0.0.1"\nsecret = ""\n',
     "clients[0].secret: must not be empty: give the shared secret the NAS uses"),
    ('[sms]\nprovider = "carrier-pigeon"\n', "sms.provider: must be 'log', 'file'"),
])
def test_wrong_types_say_what_to_write(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert f"{path}: {message}" in str(e.value)


def test_check_config_prefixes_every_error_line_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[otp]\nlength = "6"\nlanguage = "de"\n')
    assert main(["check-config", "-c", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith(f"radiusd: {path}: otp.") for line in err)


def test_check_config_warns_about_host_bits_and_shadowed_networks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[[clients]]\nname = "a"\naddress = "10.0.0.1/24"\n'
                           'secret = "sixteen-chars-ok"\n'
                           '[[clients]]\nname = "b"\naddress = "10.0.0.0/24"\n'
                           'secret = "sixteen-chars-ok-b"\n')
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: clients (a): address '10.0.0.1/24' has host bits set; it trusts the " \
           "whole network 10.0.0.0/24" in out
    assert "warning: clients (b): 10.0.0.0/24 is also client 'a'; the first one listed " \
           "answers" in out


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file; check the path"):
        load(tmp_path / "nope.toml")


def test_http_sms_provider_without_a_url_is_refused_by_check_config(tmp_path: Path) -> None:
    path = write(tmp_path, '[sms]\nprovider = "http"\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert 'sms: [sms] provider = "http" needs [sms.http] url' in str(e.value)
