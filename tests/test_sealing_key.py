"""Where the sealing key lives (issue 11 item 5, docs/keys.md): apart from the database
by default, 0600 in a 0700 directory; a key that earlier versions left in the working
directory keeps opening old data (with a warning saying how to move it); no new key
for a database that already holds sealed rows; `serve` and `journal` find the same key.

Nothing here writes to /etc or the real home directory: the root default is only
resolved (``euid=0``), and every key that is made is made under ``tmp_path``.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from radiusd.clock import ManualClock
from radiusd.config import ConfigError, OtpConfig, load
from radiusd.sealing import ROOT_KEY_FILE, Sealer, key_warnings, locate_key
from radiusd.testing.server import loopback_config, nas_for, running_server

REPO = Path(__file__).resolve().parents[1]
ACCEPT, REJECT = 2, 3


def write_key(path: Path) -> bytes:
    key = os.urandom(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    return key


def config_file(tmp: Path, db: Path, key_file: str | None = None, vouchers: bool = False) -> Path:
    lines = ["[server]", 'auth_listen = ["127.0.0.1:0"]', 'acct_listen = ["127.0.0.1:0"]',
             "[database]", f'path = "{db}"',
             "[sms]", 'provider = "file"', "[sms.file]", f'path = "{tmp / "outbox.jsonl"}"']
    if key_file is not None:
        lines += ["[otp]", f'key_file = "{key_file}"']
    if vouchers:
        lines += ["[journal]", "vouchers = true"]
    conf = tmp / "radiusd.toml"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def radiusd(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command as an operator types it. ``env`` always names a key place under
    the test's directory: this suite may run as root, whose default is /etc/radiusd."""
    assert env.get("RADIUSD_KEY_FILE", "").startswith(str(cwd.parents[0]))
    return subprocess.run([sys.executable, "-m", "radiusd", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def child_env(key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME",)}
    env["RADIUSD_KEY_FILE"] = str(key_file)
    env["PYTHONPATH"] = str(REPO)
    return env


# -- where a new install keeps the key ------------------------------------------------


def test_root_default_key_is_in_etc_not_beside_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loc = locate_key(OtpConfig(), "radiusd.db", env={}, euid=0)
    assert loc.path == ROOT_KEY_FILE == Path("/etc/radiusd/radiusd.key")
    assert loc.path.parent != (tmp_path / "radiusd.db").parent


def test_user_default_key_is_made_private_under_xdg_config_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RADIUSD_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    sealer = Sealer.from_config(OtpConfig(), database=str(tmp_path / "radiusd.db"))
    key = tmp_path / "xdg" / "radiusd" / "radiusd.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "radiusd.key").exists()  # not beside the database
    reopened = Sealer.from_config(OtpConfig(), database=str(tmp_path / "radiusd.db"))
    assert reopened.open(sealer.seal(b"123456", b"otp"), b"otp") == b"123456"
    assert [p.name for p in key.parent.iterdir()] == ["radiusd.key"]  # no temporary left


def test_user_default_without_xdg_is_under_home_config(tmp_path: Path) -> None:
    loc = locate_key(OtpConfig(), None, env={"HOME": str(tmp_path / "home"),
                                             "XDG_CONFIG_HOME": "relative/ignored"}, euid=1000)
    assert loc.path == tmp_path / "home" / ".config" / "radiusd" / "radiusd.key"


def test_environment_variable_names_the_key_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RADIUSD_KEY_FILE", str(tmp_path / "secrets" / "k"))
    Sealer.from_config(OtpConfig(), database=str(tmp_path / "radiusd.db"))
    assert stat.S_IMODE((tmp_path / "secrets" / "k").stat().st_mode) == 0o600


def test_explicit_key_file_keeps_meaning_what_it_meant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[otp] key_file` relative to the working directory, and before anything else."""
    monkeypatch.chdir(tmp_path)
    write_key(tmp_path / "radiusd.key")  # a legacy key does not override an explicit one
    Sealer.from_config(OtpConfig(key_file="keys/mine.key"), database="radiusd.db")
    assert (tmp_path / "keys" / "mine.key").is_file()
    inline = base64.b64encode(os.urandom(32)).decode()
    assert locate_key(OtpConfig(key=inline, key_file="x")).path is None


def test_processes_starting_at_once_share_one_key(tmp_path: Path) -> None:
    """Workers (or serve and journal) starting together: one key, whole, for all."""
    key = tmp_path / "keys" / "radiusd.key"
    code = ("import sys; from radiusd.sealing import load_key_file; "
            "sys.stdout.write(load_key_file(sys.argv[1]).hex())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(key)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    keys = {p.communicate(timeout=60)[0] for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert [p.name for p in key.parent.iterdir()] == ["radiusd.key"]


# -- an existing install keeps its key ---------------------------------------------------


def test_legacy_key_in_working_directory_keeps_opening_old_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = Sealer(write_key(tmp_path / "radiusd.key"))
    sealed = old.seal(b"654321", b"otp")
    new_place = tmp_path / "etc" / "radiusd.key"
    monkeypatch.setenv("RADIUSD_KEY_FILE", str(new_place))
    sealer = Sealer.from_config(OtpConfig(), database="radiusd.db")
    assert sealer.open(sealed, b"otp") == b"654321"
    assert not new_place.exists()  # no second key made
    (warning,) = key_warnings(OtpConfig(), "radiusd.db")
    assert f"mv {tmp_path / 'radiusd.key'} {new_place}" in warning and "docs/keys.md" in warning
    # Moved as the warning says: the same key, from its new place, and no warning.
    new_place.parent.mkdir(mode=0o700)
    (tmp_path / "radiusd.key").rename(new_place)
    assert Sealer.from_config(OtpConfig(), database="radiusd.db").open(sealed, b"otp")
    assert key_warnings(OtpConfig(), "radiusd.db") == []


def test_legacy_copy_left_behind_is_named_in_the_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_key(tmp_path / "radiusd.key")
    new_place = tmp_path / "etc" / "radiusd.key"
    new_place.parent.mkdir()
    new_place.write_bytes((tmp_path / "radiusd.key").read_bytes())
    monkeypatch.setenv("RADIUSD_KEY_FILE", str(new_place))
    (warning,) = key_warnings(OtpConfig(), "radiusd.db")
    assert f"already holds the same key: remove {tmp_path / 'radiusd.key'}" in warning
    write_key(new_place)
    (warning,) = key_warnings(OtpConfig(), "radiusd.db")
    assert "DIFFERENT key, which is not used" in warning


def test_no_new_key_is_made_for_a_database_with_sealed_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key was lost or not moved along: refuse with what to do, make nothing."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "data" / "radiusd.db"
    db.parent.mkdir()
    key = tmp_path / "keys" / "radiusd.key"
    old = Sealer(write_key(key))
    from radiusd import journal
    from radiusd.store.sqlite import connect_sync

    conn = connect_sync(str(db))
    journal.open_entry(conn, 1_767_225_600.0, journal.Person("Ким", "Ли", "1"), "test",
                       vouchers=journal.VoucherSettings(old, 6, "en"))
    conn.close()
    key.unlink()
    with pytest.raises(ConfigError) as e:
        Sealer.from_config(OtpConfig(key_file=str(key)), database=str(db))
    assert "does not exist" in str(e.value) and "docs/keys.md" in str(e.value)
    assert not key.exists()
    # The same from the command line: exit 1, the reason, no key made.
    conf = config_file(tmp_path, db, key_file=str(key))
    p = radiusd("serve", "-c", str(conf), cwd=tmp_path, env=child_env(tmp_path / "env.key"))
    assert p.returncode == 1, p.stderr
    assert "already holds passwords or SMS sealed with a key" in p.stderr
    assert not key.exists() and not (tmp_path / "env.key").exists()


# -- check-config ------------------------------------------------------------------------


def test_check_config_warns_when_key_and_database_share_a_directory(tmp_path: Path) -> None:
    beside = config_file(tmp_path, tmp_path / "radiusd.db", key_file=str(tmp_path / "r.key"))
    p = radiusd("check-config", "-c", str(beside), cwd=tmp_path,
                env=child_env(tmp_path / "env.key"))
    assert p.returncode == 0, p.stderr
    assert re.search(r"warning: otp\.key_file: the sealing key \S+r\.key is in the same "
                     r"directory as the database", p.stdout), p.stdout
    assert f"sealing key {tmp_path / 'r.key'} ([otp] key_file" in p.stdout
    apart = config_file(tmp_path, tmp_path / "radiusd.db", key_file=str(tmp_path / "k" / "r.key"))
    warnings = load(apart).warnings()
    assert not any("same directory" in w for w in warnings), warnings


def test_check_config_shows_the_default_key_place_and_the_legacy_warning(
        tmp_path: Path) -> None:
    conf = config_file(tmp_path, tmp_path / "radiusd.db")
    env = child_env(tmp_path / "keys" / "radiusd.key")
    p = radiusd("check-config", "-c", str(conf), cwd=tmp_path, env=env)
    assert f"sealing key {tmp_path / 'keys' / 'radiusd.key'} ($RADIUSD_KEY_FILE" in p.stdout
    assert "warning" not in p.stdout
    write_key(tmp_path / "radiusd.key")
    p = radiusd("check-config", "-c", str(conf), cwd=tmp_path, env=env)
    assert "where earlier versions made it (beside the database); move it" in p.stdout


def test_key_file_readable_by_others_is_warned(tmp_path: Path) -> None:
    key = tmp_path / "k" / "radiusd.key"
    write_key(key)
    key.chmod(0o644)
    warnings = key_warnings(OtpConfig(key_file=str(key)), str(tmp_path / "radiusd.db"))
    assert warnings == [f"otp.key_file: {key} has mode 0644, readable by others: "
                        f"chmod 600 {key}"]


# -- serve and the admin CLI use the same key ----------------------------------------------


async def test_journal_and_serve_find_the_same_legacy_key_from_anywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An install from before: radiusd.key beside radiusd.db. The owner issues a voucher
    from another directory; the server then accepts it (the same key sealed and opened
    it), and neither made a new key at the default place."""
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_key(data / "radiusd.key")
    from radiusd.store.sqlite import connect_sync

    connect_sync(str(data / "radiusd.db")).close()  # the server ran there before
    new_place = tmp_path / "keys" / "radiusd.key"
    conf = config_file(tmp_path, data / "radiusd.db", vouchers=True)
    p = radiusd("journal", "open", "--surname", "Ким", "--name", "Ли", "--computer", "3",
                "-c", str(conf), cwd=elsewhere, env=child_env(new_place))
    assert p.returncode == 0, p.stderr
    login, password = (line.split(": ", 1)[1] for line in p.stdout.splitlines()[1:3])
    assert not new_place.exists() and not (elsewhere / "radiusd.key").exists()
    monkeypatch.setenv("RADIUSD_KEY_FILE", str(new_place))
    monkeypatch.chdir(elsewhere)
    config = loopback_config(tmp_path, database={"path": str(data / "radiusd.db")},
                             otp={"key_file": ""})
    async with running_server(config, ManualClock()) as server:
        nas = nas_for(server, timeout=1.0, retries=2)
        answer = await nas.send(nas.access_request(login, password))
    assert answer.code == ACCEPT
    assert not new_place.exists()


# -- the container image -------------------------------------------------------------------


def test_container_keeps_the_key_in_its_own_volume() -> None:
    yaml = pytest.importorskip("yaml")
    dockerfile = (REPO / "Dockerfile").read_text()
    m = re.search(r"RADIUSD_KEY_FILE=(\S+)", dockerfile)
    assert m, "the image must say where the key goes (RADIUSD_KEY_FILE)"
    key_dir = str(Path(m.group(1)).parent)
    assert key_dir != "/data" and not key_dir.startswith("/data/")
    volumes = re.findall(r"^VOLUME (.+)$", dockerfile, re.M)
    assert any(key_dir in v for v in volumes), volumes
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["radiusd"]
    sources = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
    assert key_dir in sources and sources[key_dir] != sources["/data"]
