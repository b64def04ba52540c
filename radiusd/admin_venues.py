"""`radiusd venues report [--from DATE] [--to DATE] [--format csv|json]` (issue 15
item 5): per venue and day (the venue's own calendar day), SMS its presses queued,
successful logins, distinct numbers that logged in, and refusals by reason, as the
server counted them (`venue_figures`, flushed every few seconds: a report run while
the server runs may miss the last seconds)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from typing import Any

from radiusd.admin import _database, _group_help, _leaf, _one_line, _Parser
from radiusd.cli import UsageError, register
from radiusd.config import Config
from radiusd.store import venue_days

COLUMNS = ("venue", "day", "sms_sent", "logins", "numbers", "refused")


def _day(text: str | None, flag: str, default: dt.date) -> str:
    if text is None:
        return default.isoformat()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"{flag}: {text!r} is not a date; write it as 2026-12-06") from None


def rows(config: Config, first: str, last: str) -> list[dict[str, Any]]:
    """One row per venue and day that has any figure, in venue and day order."""
    with _database(config) as conn:
        counters, numbers = venue_days.report(conn, first, last)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for venue, day, name, value in counters:
        row = out.setdefault((venue, day), {"venue": venue, "day": day, "sms_sent": 0,
                                            "logins": 0, "numbers": 0, "refused": {}})
        if name == "sms":
            row["sms_sent"] += value
        elif name == "logins":
            row["logins"] += value
        elif name.startswith("refused:"):
            row["refused"][name.removeprefix("refused:")] = value
    for (venue, day), n in numbers.items():
        if (venue, day) in out:
            out[(venue, day)]["numbers"] = n
    return [out[k] for k in sorted(out)]


def _report(args: argparse.Namespace, config: Config, now: float) -> int:
    today = dt.datetime.fromtimestamp(now).date()
    last = _day(args.to, "--to", today)
    first = _day(args.from_, "--from", dt.date.fromisoformat(last) - dt.timedelta(days=6))
    if first > last:
        raise UsageError("--from is after --to: swap them")
    found = rows(config, first, last)
    if args.format == "json":
        json.dump(found, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    for r in found:
        refused = ";".join(f"{k}={v}" for k, v in sorted(r["refused"].items()))
        writer.writerow([r["venue"], r["day"], r["sms_sent"], r["logins"], r["numbers"],
                         refused])
    sys.stdout.write(buf.getvalue())
    return 0


def _register(sub: Any) -> None:
    v = sub.add_parser("venues", help="per-venue figures (README \"Venues\")")
    _one_line(v)
    v.set_defaults(func=_group_help(v))
    vs = v.add_subparsers(metavar="ACTION", parser_class=_Parser)
    p = _leaf(vs, "report", _report, "per venue and day: SMS sent, logins, distinct "
              "numbers, refusals by reason (default: the last 7 days)")
    p.add_argument("--from", dest="from_", metavar="DATE", help="first day, e.g. 2026-12-01")
    p.add_argument("--to", metavar="DATE", help="last day (default today)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")


register(_register)
