"""Admin subcommands: `radiusd journal ...`, `radiusd sessions export`, `radiusd purge`.

A thin layer over `radiusd.journal` and the store: parse what the operator typed,
open the database named by the same config as `serve` (it may be running: writes
wait for it with BEGIN IMMEDIATE and the busy timeout), print. Every mistake ends in
one line saying what to type instead, and changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any, NoReturn

from radiusd import export, journal, retention
from radiusd.cli import UsageError, add_config_arg, config_named, load_config, register
from radiusd.clock import SystemClock
from radiusd.config import Config
from radiusd.phone import e164
from radiusd.store.backend import SyncConnection, connect_sync

DAY = 86400.0
TIME_EXAMPLE = "e.g. 2026-01-05T14:30, 2026-01-05 or 14:30 (today)"


class _Parser(argparse.ArgumentParser):
    """Errors in one line with the way to the help, not argparse's usage block; an
    unknown option is reported here rather than by the top-level parser."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras


def _one_line(p: argparse.ArgumentParser) -> None:
    """Give a parser made by cli.py's subparsers `_Parser`'s behaviour."""
    p.__class__ = _Parser


# --- what people type -------------------------------------------------------------

def parse_time(text: str, flag: str, now: float, *, end_of_day: bool = False) -> float:
    """ISO 8601 (with or without offset; without one it is this machine's local time),
    a date (its start, or with `end_of_day` the start of the next day), ``HH:MM``
    today, or ``now``."""
    s = text.strip()
    if s == "now":
        return now
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            day = date.fromisoformat(s) + timedelta(days=1 if end_of_day else 0)
            return datetime(day.year, day.month, day.day).astimezone().timestamp()
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", s):
            today = datetime.fromtimestamp(now).date().isoformat()
            s = f"{today}T{s.zfill(len(s) + 1) if s.index(':') == 1 else s}"
        return datetime.fromisoformat(s).astimezone().timestamp()
    except ValueError:
        raise UsageError(f"{flag}: cannot read {text!r} as a time; type {TIME_EXAMPLE}") from None


def _to_the_minute(text: str) -> bool:
    """A time typed without seconds (``10:38``, ``2026-01-05T10:38+05:00``)."""
    return re.search(r"\d:\d{2}(:\d{2})", text) is None and ":" in text


def _shown(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M")


def _entry_id(text: str) -> int:
    if not text.strip().isdigit():
        raise UsageError(
            f"{text!r} is not an entry id: give the number from `radiusd journal list`")
    return int(text)


def _range(args: argparse.Namespace, now: float) -> tuple[float | None, float | None]:
    since = parse_time(args.since, "--since", now) if args.since else None
    until = parse_time(args.until, "--until", now, end_of_day=True) if args.until else None
    if since is not None and until is not None and until <= since:
        raise UsageError("--until is not after --since: swap them or widen the range")
    return since, until


def _format(args: argparse.Namespace, command: str) -> str:
    if not args.format:
        raise UsageError(f"say which format: `{command} --format csv` or `--format json`")
    return str(args.format)


def actor() -> str:
    """Who makes a change, for the legal record: the OS user (and who used sudo)."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo from {sudo})" if sudo and sudo != name else name


@contextmanager
def _database(config: Config) -> Iterator[SyncConnection]:
    """The store `[database]` names: the SQLite file, or PostgreSQL with `url`."""
    if config.database.url is not None:
        from radiusd.store.postgres import connect_problem, describe

        try:
            conn = connect_sync(config.database)
        except Exception as e:
            problem = asyncio.run(connect_problem(config.database.url)) or str(e)
            raise _Failed(f"database.url: cannot use {describe(config.database.url)}: "
                          f"{problem}") from None
        try:
            yield conn
        finally:
            conn.close()
        return
    from radiusd.store.sqlite import MissingDatabase, is_damage

    path = config.database.path
    try:
        conn = connect_sync(config.database, create=False)
    except MissingDatabase:
        raise _Failed(missing_database(config)) from None
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            raise _Failed(damaged(path, e)) from None
        raise _Failed(f"{path}: cannot open the database ({e}): run this as the user that "
                      "runs `radiusd serve`, with the same -c FILE") from None
    except (sqlite3.Error, OSError) as e:
        raise _Failed(
            f"{path}: cannot open the database ({e}): run this as the user that runs "
            "`radiusd serve`, with the same -c FILE"
        ) from None
    try:
        yield conn
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            raise _Failed(damaged(path, e)) from None
        if "locked" in str(e) or "busy" in str(e):
            raise _Failed(f"{path}: the database stayed busy ({e}): try again") from None
        raise
    finally:
        conn.close()


def missing_database(config: Config) -> str:
    """One line: no database where this config points, and how to point elsewhere."""
    return (f"{config.database.path}: no database here (config: {config_named(config)}); "
            "only `radiusd serve` and `radiusd db init` create one. Give the config the "
            "server uses: -c FILE or RADIUSD_CONFIG=FILE")


def damaged(path: str, error: BaseException) -> str:
    """One line for a database SQLite calls damaged, with what to do."""
    from radiusd.store.sqlite import WHAT_TO_DO

    return f"{path}: the database is damaged ({error}): {WHAT_TO_DO}"


class _Failed(Exception):
    """The command could not be done (exit 1); the message says why."""


def _command(fn: Callable[[argparse.Namespace, Config, float], int]) -> Callable[
        [argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load_config(args)
        try:
            return fn(args, config, SystemClock().now())
        except journal.JournalError as e:
            raise UsageError(str(e)) from None
        except _Failed as e:
            print(f"radiusd: {e}", file=sys.stderr)
            return 1
        except sqlite3.DatabaseError as e:  # one line, never a traceback (issue 14)
            from radiusd.store.sqlite import is_damage

            what = damaged(config.database.path, e) if is_damage(e) else \
                f"{config.database.path}: the database failed: {e}"
            print(f"radiusd: {what}", file=sys.stderr)
            return 1
    return run


# --- journal ----------------------------------------------------------------------

def _journal_open(args: argparse.Namespace, config: Config, now: float) -> int:
    for flag, value in (("--surname", args.surname), ("--name", args.name),
                        ("--computer", args.computer)):
        if value is None:
            raise UsageError(
                f"{flag} is missing: type radiusd journal open --surname SURNAME --name NAME "
                "--computer NUMBER [--patronymic PATRONYMIC]"
            )
    if args.document_number and not args.document_type:
        raise UsageError("say what the document is: add --document-type, e.g. --document-type "
                         "passport")
    venue = _venue(args, config, "radiusd journal open")
    person = journal.Person(
        surname=args.surname, name=args.name, computer=args.computer,
        patronymic=args.patronymic or "", document_type=args.document_type or "",
        document_number=args.document_number or "",
    )
    vouchers = None
    if config.journal.vouchers:
        from radiusd.sealing import Sealer

        vouchers = journal.VoucherSettings(
            # The key `serve` made: never a new one here (a voucher sealed with a key
            # the server does not have gets no reply; issue 14).
            Sealer.from_config(config.otp, create=False, database=None
                               if config.database.url else config.database.path),
            config.otp.length, config.otp.language)
    with _database(config) as conn:
        opened = journal.open_entry(
            conn, now, person, actor(),
            store_document_number=config.journal.store_document_number, vouchers=vouchers,
            venue=venue,
        )
    print(opened.entry.id)
    if opened.voucher:
        print(f"login: {opened.voucher.login}")
        print(f"password: {opened.voucher.password}")
    print(f"opened entry {opened.entry.id} for {opened.entry.full_name}, computer "
          f"{opened.entry.computer}, at {_shown(opened.entry.started_at)}", file=sys.stderr)
    return 0


def _venue(args: argparse.Namespace, config: Config, command: str) -> str | None:
    """`--venue NAME` (issue 15): required by `journal open` when the config has venues
    (an entry says where), a configured name wherever it is given."""
    names = [v.name for v in config.venues]
    if args.venue is None:
        if names and command.endswith("open"):
            raise UsageError(f"--venue is missing: this config has venues; type {command} "
                             f"... --venue NAME (one of: {', '.join(names)})")
        return None
    if args.venue not in names:
        known = f"one of: {', '.join(names)}" if names else "this config has no [[venues]]"
        raise UsageError(f"--venue: {args.venue!r} is not a venue of this config ({known})")
    return str(args.venue)


def _journal_close(args: argparse.Namespace, config: Config, now: float) -> int:
    entry_id = _entry_id(args.id)
    at = parse_time(args.at, "--at", now) if args.at else now
    with _database(config) as conn:
        if args.at and _to_the_minute(args.at):
            # "10:38" names the whole minute: an entry opened at 10:38:25 may close at
            # 10:38 (the time the refusal suggests is shown to the minute too).
            started = journal.get_entry(conn, entry_id).started_at
            if at <= started < at + 60:
                at = started
        entry = journal.close_entry(conn, now, entry_id, at, actor())
    print(f"entry {entry.id} closed at {_shown(entry.ended_at)}")
    if entry.voucher_login:  # its session ends too, and its NAS is told (issue 13)
        admin_sessions.end_voucher_session(config, now, entry.voucher_login)
    return 0


def _journal_correct(args: argparse.Namespace, config: Config, now: float) -> int:
    entry_id = _entry_id(args.id)
    if args.field is None or args.value is None:
        raise UsageError(f"say what to correct: radiusd journal correct {entry_id} "
                         "--field surname --value NEW [--reason WHY]")
    field = args.field.replace("-", "_")
    value: str | float = args.value
    if field in journal.TIME_FIELDS:
        value = parse_time(args.value, "--value", now)
    with _database(config) as conn:
        entry = journal.correct_entry(
            conn, now, entry_id, field, value, actor(), reason=args.reason or "",
            store_document_number=config.journal.store_document_number,
        )
    now_reads = getattr(entry, field)
    if field in journal.TIME_FIELDS:
        now_reads = _shown(now_reads)
    # A document number is not echoed (privacy); the other fields are shown back.
    change = "corrected" if field == "document_number" else f"is now {now_reads}"
    print(f"entry {entry.id}: {field} {change} (the earlier value stays on record)")
    return 0


def _journal_list(args: argparse.Namespace, config: Config, now: float) -> int:
    since, until = _range(args, now)
    venue = _venue(args, config, "radiusd journal list")
    with _database(config) as conn:
        entries = journal.list_entries(conn, since=since, until=until, computer=args.computer,
                                       open_only=args.open, venue=venue)
    if not entries:
        print("no entries")
        return 0
    rows = [("ID", "STARTED", "ENDED", "COMPUTER", "NAME", "VOUCHER")]
    for e in entries:
        rows.append((f"{e.id}{'*' if e.corrections else ''}", _shown(e.started_at),
                     _shown(e.ended_at) or "open", e.computer, e.full_name,
                     e.voucher_login or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if any(e.corrections for e in entries):
        print("* corrected: see the history with `radiusd journal show ID`")
    return 0


def _journal_show(args: argparse.Namespace, config: Config, now: float) -> int:
    entry_id = _entry_id(args.id)
    with _database(config) as conn:
        entry = journal.get_entry(conn, entry_id)
        events = journal.history(conn, entry_id)
        first = journal.first_written(conn, entry_id)
    # Replayed from the entry as first written, so each change shows what it replaced.
    values: dict[str, object] = dict(first) if first else {}
    print(f"entry {entry.id}")
    for field in journal.FIELDS:
        value = getattr(entry, field)
        shown = (_shown(value) or "open") if field in journal.TIME_FIELDS else value
        if shown:
            print(f"  {field:<16} {shown}")
    if entry.voucher_login:
        print(f"  {'voucher_login':<16} {entry.voucher_login}")
    print("history")
    for ev in events:
        line = f"  {_shown(ev.at)}  {ev.event:<8} by {ev.actor}"
        if "field" in ev.detail:
            field, value = ev.detail["field"], ev.detail.get("value")
            if field == "document_number":  # never shown (Rules §10 data minimisation)
                print(line + ": document_number corrected")
                continue
            old = values.get(field)
            values[field] = value
            if field in journal.TIME_FIELDS:
                value, old = _shown(value), (_shown(old) if isinstance(old, float) else old)
            line += f": {field} = {value}"
            if ev.event == "correct" and old not in (None, ""):
                line += f" (was {old})"
        if ev.detail.get("reason"):
            line += f" ({ev.detail['reason']})"
        print(line)
    return 0


def _journal_export(args: argparse.Namespace, config: Config, now: float) -> int:
    fmt = _format(args, "radiusd journal export")
    since, until = _range(args, now)
    venue = _venue(args, config, "radiusd journal export")
    with _database(config) as conn:  # rows are written as they are read
        entries = journal.iter_entries(conn, since=since, until=until, computer=args.computer,
                                       venue=venue)
        rows = export.journal_rows(entries)
        _write(export.chunks(rows, export.JOURNAL_COLUMNS, fmt, args.bom), args.output)
    return 0


def _write(text: Iterable[str], path: str | None) -> None:
    try:
        export.write(text, path)
    except OSError as e:
        raise _Failed(f"{path}: cannot write ({e.strerror or e}): give -o a writable file "
                      "path") from None


# --- sessions ---------------------------------------------------------------------

def _sessions_export(args: argparse.Namespace, config: Config, now: float) -> int:
    fmt = _format(args, "radiusd sessions export")
    since, until = _range(args, now)
    phone = None
    if args.phone is not None:
        phone = e164(args.phone, config.otp.default_region)
        if phone is None:
            raise UsageError(f"--phone: {args.phone!r} is not a phone number; type it as people "
                             "do, e.g. --phone '8 701 234 56 78' or --phone +77012345678")
    with _database(config) as conn:  # rows are written as they are read
        rows = export.session_rows(conn, config.otp.default_region, since, until, phone)
        _write(export.chunks(rows, export.SESSION_COLUMNS, fmt, args.bom), args.output)
    return 0


# --- purge ------------------------------------------------------------------------

def purge(conn: SyncConnection, cutoff: float, dry_run: bool = False) -> dict[str, int]:
    """Retention: remove what ended before `cutoff` (journal entries with their events,
    closed sessions, expired passwords, sent SMS) in small steps (`radiusd.retention`).
    What is still open is kept whatever its age."""
    return retention.purge(conn, cutoff, dry_run=dry_run)


PURGE_NICENESS = 10  # `radiusd purge` runs at nice +10: the server it runs beside comes first


def _purge(args: argparse.Namespace, config: Config, now: float) -> int:
    keep = config.journal.retention_days
    where = config.source or "the config file"
    if args.older_than is None:
        if not keep:
            raise UsageError("say how old: `radiusd purge --older-than DAYS`, or set "
                             "[journal] retention_days in the config file")
        days = keep
    else:
        if not args.older_than.isdigit() or int(args.older_than) < 1:
            raise UsageError(f"--older-than {args.older_than!r}: give a whole number of "
                             "days, 1 or more, e.g. --older-than 365")
        days = int(args.older_than)
        if keep and days < keep:
            raise UsageError(f"--older-than {days} is less than [journal] retention_days = "
                             f"{keep} in {where}: give --older-than {keep} or more")
    cutoff = now - days * DAY
    # Below the server in the CPU queue (issue 18 item 5): on a small box the purge's
    # own CPU delayed answers more than its steps did.
    with contextlib.suppress(OSError):
        os.nice(PURGE_NICENESS)
    with _database(config) as conn:
        counts = purge(conn, cutoff, dry_run=args.dry_run)
    for what, n in counts.items():
        print(f"{what}: {n}")
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {sum(counts.values())} rows that ended before {_shown(cutoff)} "
          f"({days} days ago)")
    return 0


# --- the parser -------------------------------------------------------------------

def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="TIME", help=f"from this time ({TIME_EXAMPLE})")
    p.add_argument("--until", metavar="TIME", help="up to this time (a date: through its end)")


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=export.FORMATS, help="csv (RFC 4180, UTF-8) or json")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--bom", action="store_true", help="start CSV with a BOM (for Excel)")


def _leaf(sub: Any, name: str, fn: Callable[[argparse.Namespace, Config, float], int],
          help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    add_config_arg(p)
    p.set_defaults(func=_command(fn))
    return p


def _group_help(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2
    return run


def _register(sub: Any) -> None:
    j = sub.add_parser("journal", help="Rules §10 journal of document-based access")
    _one_line(j)
    j.set_defaults(func=_group_help(j))
    js = j.add_subparsers(metavar="ACTION", parser_class=_Parser)

    p = _leaf(js, "open", _journal_open, "record a person starting now at a computer")
    p.add_argument("--surname")
    p.add_argument("--name")
    p.add_argument("--patronymic")
    p.add_argument("--computer", help="the number of the owner's computer")
    p.add_argument("--document-type", metavar="TYPE", help="e.g. passport, id-card")
    p.add_argument("--document-number", metavar="NUMBER",
                   help="kept only with [journal] store_document_number = true")
    p.add_argument("--venue", metavar="NAME",
                   help="where ([[venues]] name): required when the config has venues")

    p = _leaf(js, "close", _journal_close, "set the end time of an entry")
    p.add_argument("id", metavar="ID")
    p.add_argument("--at", metavar="TIME", help=f"when it ended (default now; {TIME_EXAMPLE})")

    p = _leaf(js, "list", _journal_list, "show entries as a table")
    p.add_argument("--open", action="store_true", help="only entries not closed yet")
    _filters(p)
    p.add_argument("--computer")
    p.add_argument("--venue", metavar="NAME", help="only this venue's entries")

    p = _leaf(js, "export", _journal_export, "write entries as CSV or JSON")
    _filters(p)
    p.add_argument("--computer")
    p.add_argument("--venue", metavar="NAME", help="only this venue's entries")
    _output(p)

    p = _leaf(js, "correct", _journal_correct,
              "correct a field: recorded as a new event, the old value stays on record")
    p.add_argument("id", metavar="ID")
    p.add_argument("--field", help=", ".join(journal.FIELDS))
    p.add_argument("--value", help="the right value (a time for started_at / ended_at)")
    p.add_argument("--reason", help="why, for the record")

    p = _leaf(js, "show", _journal_show, "one entry with its full history")
    p.add_argument("id", metavar="ID")

    s = sub.add_parser("sessions", help="phone-based sessions (the accounting log)")
    _one_line(s)
    s.set_defaults(func=_group_help(s))
    ss = s.add_subparsers(metavar="ACTION", parser_class=_Parser)
    p = _leaf(ss, "export", _sessions_export, "write sessions as CSV or JSON")
    _filters(p)
    p.add_argument("--phone", help="only this number, as people type it")
    _output(p)
    admin_sessions.add_session_actions(ss)  # list, disconnect (issue 13)

    p = sub.add_parser("purge", help="remove data past retention",
                       description="Remove journal entries, sessions, expired passwords and "
                       "sent SMS that ended more than DAYS days ago.")
    _one_line(p)
    add_config_arg(p)
    p.add_argument("--older-than", metavar="DAYS",
                   help="default: [journal] retention_days; never less than it")
    p.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    p.set_defaults(func=_command(_purge))


register(_register)

from radiusd import admin_sessions  # noqa: E402  (sessions list|disconnect, numbers)
