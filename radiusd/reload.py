"""What a reload changes (issue 15 item 3): SIGHUP, or `radiusd reload -c FILE`, makes
a running server read its config file again.

- A valid file takes effect for every request that arrives after it: `[[clients]]`
  (added, removed, re-keyed), `[[venues]]`, `[otp]` limits, language and timeouts,
  `[sms] templates` and `[sms.providers]`. `Server.reload` builds the new client
  table, venues and SMS providers first, then swaps the references in one step with
  no await between, so a request reads the old settings or the new ones, never a
  mix; requests in flight finish with what they began with, and none is dropped.
- What a running process cannot change in place (its sockets, its database, the
  HTTP listener, RadSec's certificates, the sealing key, the reaper's and the default
  SMS provider's settings) is kept as it runs; the log names each such key, "takes effect after a
  restart" (`needs_restart`).
- An invalid file changes nothing: each problem is logged in `check-config`'s words
  and the server goes on with the config it has.

`radiusd reload` finds the server through `[server] pid_file` (written at start,
removed at a clean stop) and sends it SIGHUP; with `workers`, the parent passes it
on to every worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from radiusd.config import Config, ConfigError

# Sections (or keys) a reload applies; everything else takes effect after a restart.
RELOADED = ("clients", "venues", "otp", "sms.templates", "sms.providers")
_OTP_RESTART = ("key", "key_file")  # the sealing key is read once (docs/keys.md)


def needs_restart(running: Config, new: Config) -> list[str]:
    """The keys that differ between the running config and ``new`` and that a reload
    does not apply, e.g. ["server.auth_listen", "sms.provider"]."""
    out: list[str] = []
    for section in ("server", "database", "accounting", "journal", "http", "radsec", "sms",
                    "otp"):
        old_part = getattr(running, section).model_dump()
        new_part = getattr(new, section).model_dump()
        for key in sorted(set(old_part) | set(new_part)):
            if section == "sms" and key in ("templates", "providers"):
                continue
            if section == "otp" and key not in _OTP_RESTART:
                continue
            if old_part.get(key) != new_part.get(key):
                out.append(f"{section}.{key}")
    return out


def kept_running(running: Config, new: Config) -> Config:
    """``new`` with the parts a reload does not apply kept as they run (so that a
    later reload compares against what runs)."""
    sms = running.sms.model_copy(update={"templates": new.sms.templates,
                                         "providers": new.sms.providers})
    otp = new.otp.model_copy(update={k: getattr(running.otp, k) for k in _OTP_RESTART})
    return new.model_copy(update={
        "server": running.server, "database": running.database,
        "accounting": running.accounting, "journal": running.journal,
        "http": running.http, "radsec": running.radsec, "sms": sms, "otp": otp,
        "found_by": running.found_by})


def write_pid_file(path: str) -> None:
    """`[server] pid_file`: this process's id, for `radiusd reload` (written beside and
    renamed into place, so a reader never sees half a number)."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, target)


def remove_pid_file(path: str) -> None:
    """At a clean stop: only a file that still names this process."""
    if not path:
        return
    with contextlib.suppress(OSError, ValueError):
        if int(Path(path).read_text().strip()) == os.getpid():
            os.unlink(path)


def signal_server(config: Config) -> int:
    """`radiusd reload -c FILE`: SIGHUP to the server `[server] pid_file` names;
    returns its pid. `ConfigError` worded for the operator when it cannot."""
    where = config.source or "the embedded defaults"
    path = config.server.pid_file
    if not path:
        raise ConfigError(f"{where}: server.pid_file: not set, so the running server "
                          'cannot be found; set it (e.g. pid_file = "/run/radiusd.pid") '
                          "and restart radiusd once, or send the signal yourself: "
                          "kill -HUP PID")
    try:
        pid = int(Path(path).read_text().strip())
    except FileNotFoundError:
        raise ConfigError(f"{where}: server.pid_file: {path}: no such file; is radiusd "
                          "serve running with this config?") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: server.pid_file: {path}: unreadable ({e})") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError(f"{where}: server.pid_file: {path} names pid {pid}, which does "
                          "not run; start radiusd serve") from None
    except PermissionError:
        raise ConfigError(f"{where}: server.pid_file: pid {pid} belongs to another user; "
                          "run radiusd reload as the server's user (or root)") from None
    return pid
