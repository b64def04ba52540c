"""`radiusd db init|check|backup|restore`: the database file itself (issue 14).

- `init` creates and migrates the database (and the sealing key) where the config
  says, as `serve` does on its first start; every other command refuses a missing
  database rather than make an empty one.
- `check` runs SQLite's `integrity_check` (`--quick`: `quick_check`), while the server
  runs too; a damaged file exits 1 saying what to do.
- `backup FILE` copies the database while the server runs, with SQLite's online
  backup in one step: one read snapshot, so the copy is consistent, and under WAL the
  server's writes go on meanwhile. It is written beside FILE and renamed into place.
- `restore FILE` checks FILE, then puts it in place of the database, keeping the
  file it replaces as PATH.before-restore; refused while a server has the database
  open (`sqlite.lock_exclusive`).

The SQL is SQLite's own PRAGMAs and backup API, in `radiusd.store.sqlite`. With
`[database] url` (PostgreSQL) backup and restore are pg_dump's and pg_restore's job;
`check` tries the connection.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from radiusd.admin import _command, _Failed, _one_line, damaged, missing_database
from radiusd.cli import UsageError, add_config_arg, register
from radiusd.config import Config
from radiusd.store import sqlite as lite

PG_TOOLS = ("with [database] url (PostgreSQL), use pg_dump -Fc for a backup and "
            "pg_restore for a restore (docs/store.md, \"Backup\")")


def _init(args: argparse.Namespace, config: Config, now: float) -> int:
    from radiusd.sealing import Sealer, locate_key
    from radiusd.store.backend import connect_sync, describe

    existed = config.database.url is not None or os.path.exists(config.database.path)
    try:
        connect_sync(config.database, create=True).close()
    except (sqlite3.Error, OSError) as e:
        raise _Failed(f"{describe(config.database)}: cannot create the database ({e})") \
            from None
    Sealer.from_config(config.otp, database=None if config.database.url
                       else config.database.path)
    state = "already there, migrated" if existed else "created"
    print(f"database {_absolute(config)}: {state}")
    print(f"sealing key {locate_key(config.otp, config.database.path).describe()}")
    return 0


def _check(args: argparse.Namespace, config: Config, now: float) -> int:
    if config.database.url is not None:
        from radiusd.cli import _database_problem
        from radiusd.store.postgres import describe

        problem = _database_problem(config.database.url)
        if problem is not None:
            raise _Failed(f"database.url: cannot connect to "
                          f"{describe(config.database.url)}: {problem}")
        print(f"{describe(config.database.url)}: connects; integrity is PostgreSQL's "
              "own (its checksums, amcheck)")
        return 0
    path = _existing(config)
    t0 = time.monotonic()
    try:
        problems = lite.check_file(path, full=not args.quick)
    except sqlite3.Error as e:
        if lite.is_damage(e):  # not even the header or schema reads
            raise _Failed(damaged(path, e)) from None
        raise _Failed(f"{path}: the check could not run ({e})") from None
    what = "quick_check" if args.quick else "integrity_check"
    if problems:
        print(f"{path}: damaged ({what} found {len(problems)}"
              f"{'+' if len(problems) >= 20 else ''} problem(s)):")
        for p in problems:
            print(f"  {p}")
        raise _Failed(damaged(path, Exception(problems[0])))
    print(f"{path}: ok ({what}, {time.monotonic() - t0:.1f}s)")
    return 0


def _backup(args: argparse.Namespace, config: Config, now: float) -> int:
    if config.database.url is not None:
        raise _Failed(f"db backup: {PG_TOOLS}")
    path = _existing(config)
    target = Path(args.file)
    if _same(target, Path(path)):
        raise UsageError(f"{args.file} is the database itself: give another file, "
                         "e.g. /var/backups/radiusd/radiusd-$(date +%F).db")
    t0 = time.monotonic()
    try:
        size = lite.backup(path, str(target))
    except sqlite3.DatabaseError as e:
        if lite.is_damage(e):
            raise _Failed(damaged(path, e)) from None
        raise _Failed(f"{path}: the backup failed ({e}); nothing was written") from None
    except OSError as e:
        raise _Failed(f"{args.file}: cannot write ({e.strerror or e}): give a file in a "
                      "directory that exists and this user may write") from None
    print(f"backed up {path} to {target.absolute()} ({size / 1e6:.1f} MB, "
          f"{time.monotonic() - t0:.1f}s); the sealing key is not in it: keep a copy of "
          "it apart (README \"Backup and restore\")")
    return 0


def _restore(args: argparse.Namespace, config: Config, now: float) -> int:
    if config.database.url is not None:
        raise _Failed(f"db restore: {PG_TOOLS}")
    source = Path(args.file)
    path = config.database.path
    if not source.is_file():
        raise UsageError(f"{args.file}: no such file: give the backup to restore, "
                         "e.g. radiusd db restore /var/backups/radiusd/radiusd-2026-01-05.db")
    if _same(source, Path(path)):
        raise UsageError(f"{args.file} is the database itself: give the backup file")
    try:
        kept = lite.restore(str(source), path)
    except lite.DatabaseInUse as e:
        raise _Failed(str(e)) from None
    except lite.DamagedDatabase as e:
        raise _Failed(f"{args.file}: {e}; nothing was changed") from None
    except sqlite3.DatabaseError as e:
        raise _Failed(f"{args.file}: not a radiusd database ({e}); nothing was changed") \
            from None
    except OSError as e:
        raise _Failed(f"{path}: cannot restore ({e.strerror or e}); run this as the user "
                      "that runs `radiusd serve`") from None
    print(f"restored {source.absolute()} to {_absolute(config)}"
          + (f"; the file it replaced is kept as {kept}" if kept else ""))
    print("start the server again; the sealing key must be the one of the backup's time "
          "(docs/keys.md)")
    return 0


def _existing(config: Config) -> str:
    path = config.database.path
    if not os.path.exists(path):
        raise _Failed(missing_database(config))
    return path


def _absolute(config: Config) -> str:
    return str(Path(config.database.path).absolute())


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _register(sub: Any) -> None:
    d = sub.add_parser("db", help="the database file: init, check, backup, restore")
    _one_line(d)

    def group_help(args: argparse.Namespace) -> int:
        d.print_help(sys.stderr)
        return 2

    d.set_defaults(func=group_help)
    ds = d.add_subparsers(metavar="ACTION", parser_class=type(d))

    def leaf(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ds.add_parser(name, help=help, description=help)
        add_config_arg(p)
        p.set_defaults(func=_command(fn))
        return p

    leaf("init", _init, "create the database (and the sealing key) as serve does at its "
         "first start")
    p = leaf("check", _check, "check the database file for damage (integrity_check)")
    p.add_argument("--quick", action="store_true",
                   help="quick_check: every page and structure, not each row's index "
                        "entries (faster)")
    p = leaf("backup", _backup, "copy the database, consistent, while the server runs")
    p.add_argument("file", metavar="FILE", help="where the copy goes (replaced if it exists)")
    p = leaf("restore", _restore, "put a backup in place of the database (server stopped)")
    p.add_argument("file", metavar="FILE", help="the backup to restore")


register(_register)
