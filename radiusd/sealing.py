"""Secrets at rest: one-time passwords and SMS bodies are sealed with AES-GCM.

CHAP (RFC 2865 §2.2) needs the clear password to verify, so a hash alone will not do;
the code is stored encrypted and never written in clear text (DESIGN: password
lifecycle). The key comes from `[otp] key`, from `[otp] key_file`, or, with neither set,
from a place apart from the database (docs/keys.md): a `radiusd.key` that earlier
versions left in the working directory or beside the database (so old data stays
readable; a warning says how to move it), else `$RADIUSD_KEY_FILE`, else
`/etc/radiusd/radiusd.key` as root, else `$XDG_CONFIG_HOME/radiusd/radiusd.key`.
A missing key file is created with mode 0600, but never while the database already
holds rows sealed with some key: a new key would make them unreadable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from radiusd.config import ConfigError, OtpConfig
from radiusd.store import passwords

log = logging.getLogger("radiusd")

NONCE = 12
ENV_KEY_FILE = "RADIUSD_KEY_FILE"
KEY_NAME = "radiusd.key"
ROOT_KEY_FILE = Path("/etc/radiusd") / KEY_NAME

Origin = Literal["key", "key_file", "environment", "default", "legacy"]
_LABEL: dict[Origin, str] = {
    "key": "otp.key", "key_file": "otp.key_file", "environment": ENV_KEY_FILE,
    "default": "sealing key", "legacy": "sealing key",
}


@dataclass(frozen=True, slots=True)
class KeyLocation:
    """Where the sealing key is read from and why (docs/keys.md)."""

    origin: Origin
    path: Path | None  # None: the key is `[otp] key` itself
    home: Path | None = None  # legacy only: where the key belongs once moved

    @property
    def label(self) -> str:
        """The name an error message gives the key: the key or variable that set it."""
        return _LABEL[self.origin]

    def describe(self) -> str:
        """One line for check-config and the start-up log."""
        if self.path is None:
            return "inline ([otp] key)"
        why = {"key_file": "[otp] key_file", "environment": f"${ENV_KEY_FILE}",
               "default": "the default place, docs/keys.md",
               "legacy": "where earlier versions made it"}
        state = "exists" if _exists(self.path) else "created 0600 on first start"
        return f"{self.path.absolute()} ({why[self.origin]}; {state})"


def default_key_file(env: Mapping[str, str] | None = None, euid: int | None = None) -> KeyLocation:
    """The key's place when `[otp]` names none: `$RADIUSD_KEY_FILE`; else, as root,
    /etc/radiusd/radiusd.key; else $XDG_CONFIG_HOME/radiusd/radiusd.key (default
    ~/.config/radiusd/radiusd.key), as the XDG base directory spec has it."""
    env = os.environ if env is None else env
    if env.get(ENV_KEY_FILE):
        return KeyLocation("environment", Path(env[ENV_KEY_FILE]))
    if (os.geteuid() if euid is None else euid) == 0:
        return KeyLocation("default", ROOT_KEY_FILE)
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):  # the spec: a relative value is to be ignored
        base = Path(xdg)
    else:
        try:
            home = env.get("HOME") or str(Path.home())
        except RuntimeError:  # no HOME and no password entry
            raise ConfigError(f"otp.key_file: no home directory to keep the sealing key "
                              f"in: set [otp] key_file or ${ENV_KEY_FILE}") from None
        base = Path(home) / ".config"
    return KeyLocation("default", base / "radiusd" / KEY_NAME)


def legacy_key_files(database: str | None) -> list[Path]:
    """Where earlier versions kept the key when `[otp] key_file` was not set: the
    working directory (the old default "radiusd.key"), usually beside the database."""
    out = [Path(KEY_NAME).absolute()]
    if database and database != ":memory:":
        beside = Path(database).absolute().parent / KEY_NAME
        if not _same_path(beside, out[0]):
            out.append(beside)
    return out


def locate_key(otp: OtpConfig, database: str | None = None,
               env: Mapping[str, str] | None = None, euid: int | None = None) -> KeyLocation:
    """`[otp] key`, else `[otp] key_file` (relative to the working directory, as
    before), else a legacy `radiusd.key` that exists where earlier versions made it
    (so sealed data stays readable), else `default_key_file`."""
    if otp.key:
        return KeyLocation("key", None)
    if otp.key_file:
        return KeyLocation("key_file", Path(otp.key_file))
    target = default_key_file(env, euid)
    assert target.path is not None
    for legacy in legacy_key_files(database):
        if _is_file(legacy) and not _same_path(legacy, target.path):
            return KeyLocation("legacy", legacy, home=target.path)
    return target


def key_warnings(otp: OtpConfig, database: str | None,
                 env: Mapping[str, str] | None = None, euid: int | None = None) -> list[str]:
    """Valid but unsafe (check-config and start): a key kept where earlier versions
    made it, a key in the database's directory, a key file others may read."""
    loc = locate_key(otp, database, env, euid)
    if loc.path is None:
        return []
    out: list[str] = []
    path = loc.path.absolute()
    beside_db = bool(database) and database != ":memory:" and _same_path(
        path.parent, Path(str(database)).absolute().parent)
    if loc.origin == "legacy":
        assert loc.home is not None
        home = loc.home.absolute()
        text = (f"otp.key_file: not set, so the sealing key is read from {path}, where "
                f"earlier versions made it{' (beside the database)' if beside_db else ''}; "
                f"move it where secrets are kept: mkdir -p -m 700 {home.parent} && "
                f"mv {path} {home} (or set [otp] key_file; docs/keys.md)")
        if _is_file(home):
            same = _read(home) == _read(path)
            text += (f"; {home} already holds the same key: remove {path}" if same else
                     f"; {home} holds a DIFFERENT key, which is not used")
        out.append(text)
    elif beside_db:
        out.append(f"{loc.label}: the sealing key {path} is in the same directory as the "
                   f"database {database}: one copy or backup of that directory opens every "
                   "code and SMS in it; keep the key elsewhere (docs/keys.md)")
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            out.append(f"{loc.label}: {path} has mode {mode:04o}, readable by others: "
                       f"chmod 600 {path}")
    return out


def has_sealed_rows(database: str | None) -> bool:
    """Whether the SQLite database holds passwords or SMS sealed with some key. Read
    only; a database that does not exist or cannot be read holds none we can see."""
    if not database or database == ":memory:" or not _is_file(Path(database)):
        return False
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(database).absolute()))}?mode=ro",
                               uri=True, timeout=10.0)
    except sqlite3.Error:
        return False
    try:
        return passwords.sealed_rows_exist(conn)
    except sqlite3.Error:
        return False
    finally:
        conn.close()


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(key)
        self._tag_key = hmac.new(key, b"radiusd code tag", hashlib.sha256).digest()

    def tag(self, data: bytes) -> str:
        """A keyed tag of `data` (HMAC-SHA-256): equal codes have equal tags, which say
        nothing of the code without the key (Rules §9 across nodes, issue 12)."""
        return hmac.new(self._tag_key, data, hashlib.sha256).hexdigest()[:32]

    @classmethod
    def from_config(cls, otp: OtpConfig, create: bool = True,
                    database: str | None = None) -> Sealer:
        """The key `serve` and the admin CLI use for the same config (`locate_key`).
        Give ``database`` (`[database] path`) so that a legacy key beside it is found
        and no new key is made for a database that already holds sealed rows."""
        if otp.key:
            try:
                return cls(base64.b64decode(otp.key, validate=True))
            except (binascii.Error, ValueError):
                raise ConfigError(
                    "otp.key: must be 32 random bytes in base64 (make one with: "
                    "python3 -c 'import os,base64;"
                    "print(base64.b64encode(os.urandom(32)).decode())')"
                ) from None
        loc = locate_key(otp, database)
        assert loc.path is not None
        return cls(load_key_file(str(loc.path), create=create, database=database,
                                 label=loc.label))

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
        except InvalidTag:
            raise ValueError("sealed value does not open with this key") from None


def load_key_file(path: str, create: bool = True, database: str | None = None,
                  label: str = "otp.key_file") -> bytes:
    """Read a base64 key file; create it (0600, in a 0700 directory it makes) when
    missing and ``create``, unless ``database`` already holds sealed rows."""
    p = Path(path)
    if not _exists(p):
        if not create:
            raise ConfigError(f"{label}: {path} does not exist: `radiusd serve` "
                              "makes it at its first start (or `radiusd db init`); give "
                              "the config the server uses (-c FILE)")
        if has_sealed_rows(database):
            raise ConfigError(
                f"{label}: {p.absolute()} does not exist, but the database {database} "
                "already holds passwords or SMS sealed with a key, which a new key could "
                f"not open, so none is made. Put the key back at {p.absolute()} from its "
                "backup, or point [otp] key_file at it; if it is lost for good, see "
                "docs/keys.md")
        return _create_key_file(p, label)
    try:
        key = base64.b64decode(p.read_text().strip(), validate=True)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{label}: {path} is not a base64 key") from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot read {path}: {e.strerror or e}") from None
    if len(key) != 32:
        raise ConfigError(f"{label}: {path} must hold 32 bytes in base64")
    return key


def _create_key_file(p: Path, label: str) -> bytes:
    """Write the whole key to a private temporary file, then link it into place: a
    crash leaves no empty key file, and of two processes starting at once one wins
    and the other reads its key."""
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{label}: cannot create the directory {p.parent}: "
                          f"{e.strerror or e} (set [otp] key_file or ${ENV_KEY_FILE})") from None
    key = os.urandom(32)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):  # left by a crash of a process with our pid
        tmp.unlink()
    try:
        _write_new(tmp, key)
        try:
            os.link(tmp, p)
        except FileExistsError:  # another process made it first
            return load_key_file(str(p), create=False, label=label)
        except OSError:  # a file system without hard links: create it in place
            _write_new(p, key)
    except FileExistsError:
        return load_key_file(str(p), create=False, label=label)
    except OSError as e:
        raise ConfigError(f"{label}: cannot create {p}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # the new name survives a power cut
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    log.warning("made a new sealing key %s (mode 0600): back it up apart from the "
                "database (docs/keys.md)", p.absolute())
    return key


def _write_new(p: Path, key: bytes) -> None:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _same_path(a: Path, b: Path) -> bool:
    """The same file or directory, through symlinks and relative names."""
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return a.absolute() == b.absolute()
