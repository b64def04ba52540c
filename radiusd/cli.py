"""The `radiusd` command: a thin layer over the library.

Exit status: 0 done, 1 the command failed (a message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from radiusd import __version__
from radiusd.config import Config, ConfigError, find_config, load

Command = Callable[[argparse.Namespace], int]
_commands: list[Callable[[argparse._SubParsersAction], None]] = []  # type: ignore[type-arg]


class UsageError(Exception):
    """A bad argument: exit 2 with a message saying what to type."""


def add_config_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "-c", "--config", metavar="FILE", required=required,
        help="TOML configuration file (default: $RADIUSD_CONFIG, else "
             "/etc/radiusd/radiusd.toml when it exists, else the embedded defaults)",
    )


def load_config(args: argparse.Namespace) -> Config:
    """The config every command reads, found as `serve` finds it (`find_config`); with
    -v, one line on stderr naming the config, the database and the sealing key."""
    path, how = find_config(getattr(args, "config", None))
    config = load(path).model_copy(update={"found_by": how})
    if getattr(args, "verbose", False):
        print(f"radiusd: {where_data(config)}", file=sys.stderr)
    return config


def config_named(config: Config) -> str:
    """The config file and how it was found, for messages."""
    if config.source is None:
        return ("the embedded defaults (no -c, no $RADIUSD_CONFIG, no "
                "/etc/radiusd/radiusd.toml)")
    return f"{config.source} (from {config.found_by})" if config.found_by else config.source


def where_data(config: Config) -> str:
    """One line: which config, database and sealing key this command uses (issue 14)."""
    from radiusd.sealing import locate_key
    from radiusd.store.backend import describe

    database = describe(config.database)
    if config.database.url is None:
        database = os.path.abspath(database)
    try:
        key = locate_key(config.otp, config.database.path).describe()
    except ConfigError as e:
        key = str(e)
    return f"config {config_named(config)}; database {database}; sealing key {key}"


def _cmd_serve(args: argparse.Namespace) -> int:
    from radiusd.app import run

    config = load_config(args)
    logging.getLogger("radiusd").info("%s", where_data(config))
    if config.server.workers > 1:  # processes sharing the ports (radiusd.workers)
        import tempfile

        from radiusd.reload import remove_pid_file, write_pid_file
        from radiusd.workers import Exchange, supervise

        def newest() -> Config:
            """A worker started again reads the file as a reload would (radiusd.reload);
            an invalid file leaves it the config the server started with."""
            try:
                return load(config.source) if config.source else config
            except ConfigError:
                return config

        with tempfile.TemporaryDirectory(prefix="radiusd-workers-") as figures:
            exchange = Exchange(figures)
            write_pid_file(config.server.pid_file)  # the parent: it passes SIGHUP on
            try:
                return supervise(config.server.workers,
                                 lambda worker: run(newest(), worker, exchange))
            finally:
                remove_pid_file(config.server.pid_file)
    return run(config)


def _cmd_reload(args: argparse.Namespace) -> int:
    """Check the file, then SIGHUP the server `[server] pid_file` names (radiusd.reload).
    An invalid file is said here and nothing is signalled."""
    from radiusd.reload import signal_server

    config = load_config(args)
    pid = signal_server(config)
    print(f"radiusd: asked pid {pid} to read {config.source or 'its config'} again "
          "(its log says what changed)")
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args)
    where = config.source or "embedded defaults"
    print(f"{where}: OK")
    print(f"  config {config_named(config)}")
    for kind, addrs in (("auth", config.server.auth_listen), ("acct", config.server.acct_listen)):
        for a in addrs:
            print(f"  would listen for {kind} on {a}/udp")
    for c in config.clients:
        addrs = [c.address] if isinstance(c.address, str) else c.address
        print(f"  client {c.name}: {', '.join(addrs)} "
              f"(require_message_authenticator={str(c.require_message_authenticator).lower()})")
        if c.coa == "disconnect" and c.radsec:  # RFC 6614 §2.5
            print("    Disconnect-Request over its RadSec connection")
        elif c.coa == "disconnect":  # RFC 5176, docs/coa.md
            print(f"    Disconnect-Request to {c.coa_address or 'the session NAS-IP-Address'}"
                  f" port {c.coa_port}")
    if config.database.url is not None:
        problem = _database_problem(config.database.url)
        if problem is not None:  # one line: authentication, host or database
            print(f"{where}: database.url: cannot connect: {problem}", file=sys.stderr)
            return 1
    from radiusd.store.backend import describe

    print(f"  database {describe(config.database)}")
    from radiusd.sealing import locate_key

    print(f"  sealing key {locate_key(config.otp, config.database.path).describe()}")
    for warning in config.warnings():
        print(f"  warning: {warning}")
    print(f"  sms provider {config.sms.provider}")
    from radiusd.venues import venue_summary

    for v in config.venues:  # issue 15 (README "Venues")
        print(f"  venue {v.name}: {venue_summary(v)}")
    if config.http.listen:
        print(f"  http on {', '.join(config.http.listen)}")
    return _check_radsec(config, where)


def _check_radsec(config: Config, where: str) -> int:
    """RFC 6614 (docs/radsec.md): the TLS files load, and which clients use it."""
    for c in config.clients:
        if c.radsec:
            known = " and ".join(x for x in (
                c.certificate_name and f"name {c.certificate_name}",
                c.certificate_fingerprint and f"sha256 {c.certificate_fingerprint[:16]}...",
            ) if x)
            print(f"  client {c.name}: radsec only, certificate {known}")
    if not config.server.radsec_listen:
        return 0
    from radiusd.radius.radsec_listener import tls_context

    try:
        tls_context(config.radsec)
    except OSError as e:
        print(f"{where}: {e}", file=sys.stderr)
        return 1
    for a in config.server.radsec_listen:
        print(f"  would listen for radsec on {a}/tcp (TLS 1.2/1.3, client certificates "
              f"from {config.radsec.ca_file})")
    return 0


def _database_problem(url: str) -> str | None:
    """What failed connecting to PostgreSQL, in one line; None when it works."""
    import asyncio

    from radiusd.store.postgres import connect_problem

    return asyncio.run(connect_problem(url))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiusd",
        description="RADIUS server for public Wi-Fi: phone number + one-time SMS password.",
    )
    parser.add_argument("--version", action="version", version=f"radiusd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server (embedded defaults without -c)")
    add_config_arg(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("check-config", help="validate a configuration file and show it")
    add_config_arg(p)
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("reload", help="make the running server read its config file again "
                                      "(SIGHUP to [server] pid_file)")
    add_config_arg(p)
    p.set_defaults(func=_cmd_reload)

    for register in _commands:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from radiusd import admin, admin_db, admin_venues  # noqa: F401  (register journal/.../db)

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except ConfigError as e:
        for line in str(e).splitlines():
            print(f"radiusd: {line}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"radiusd: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def register(fn: Callable[[argparse._SubParsersAction], None]) -> None:  # type: ignore[type-arg]
    """Let another module add subcommands (journal, sessions, purge)."""
    _commands.append(fn)
