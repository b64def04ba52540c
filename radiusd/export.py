"""What exports contain, and writing them: CSV (RFC 4180, UTF-8, header row) or JSON,
to stdout or to a file.

Times are ISO 8601 with the UTC offset of the machine's time zone (`TZ`), e.g.
``2026-01-05T14:30:00+05:00``; an empty CSV cell / JSON ``null`` means "not yet".
A file is written to a temporary name beside it and renamed into place once complete,
so a failed export never leaves half a file; it is created with mode 0600 (personal data).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import phonenumbers

from radiusd.journal import Entry

FORMATS = ("csv", "json")
JOURNAL_COLUMNS = (
    "id", "surname", "name", "patronymic", "computer", "started_at", "ended_at",
    "document_type", "document_number", "voucher_login", "opened_at", "corrections",
)
SESSION_COLUMNS = (
    "id", "login", "phone", "device", "nas", "nas_address", "framed_ip", "started_at",
    "stopped_at", "session_time", "input_octets", "output_octets", "terminate_cause",
)


def iso(t: float | None) -> str | None:
    """Unix seconds -> ISO 8601 local time with its offset, to the second."""
    if t is None:
        return None
    return datetime.fromtimestamp(int(t), UTC).astimezone().isoformat()


def render(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: str,
           bom: bool = False) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        if bom:
            buf.write("\ufeff")  # lets Excel see UTF-8; plain RFC 4180 readers do not want it
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        return buf.getvalue()
    if fmt == "json":
        items = [{c: row[c] for c in columns} for row in rows]
        return json.dumps(items, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def write(text: str, path: str | None) -> None:
    """To stdout (None or "-"), or atomically to `path`."""
    if path in (None, "-"):
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def journal_rows(entries: list[Entry]) -> list[dict[str, Any]]:
    return [
        {c: (iso(getattr(e, c)) if c in ("started_at", "ended_at", "opened_at")
             else getattr(e, c)) for c in JOURNAL_COLUMNS}
        for e in entries
    ]


def session_rows(conn: sqlite3.Connection, region: str, since: float | None,
                 until: float | None, phone: str | None) -> list[dict[str, Any]]:
    """Phone-based sessions online at some moment of [since, until), oldest first."""
    sql = ("SELECT id, login, device, nas, nas_address, framed_ip,"
           " COALESCE(started_at, updated_at) AS started_at, stopped_at, session_time,"
           " input_octets, output_octets, terminate_cause FROM sessions WHERE 1")
    params: list[Any] = []
    if since is not None:
        sql += " AND (stopped_at IS NULL OR stopped_at >= ?)"
        params.append(since)
    if until is not None:
        sql += " AND COALESCE(started_at, updated_at) < ?"
        params.append(until)
    sql += " ORDER BY COALESCE(started_at, updated_at), id"
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    numbers: dict[str, str | None] = {}
    out = []
    for row in cur:
        r = dict(zip(names, row, strict=True))
        login = r["login"] or ""
        if login not in numbers:
            numbers[login] = e164(login, region) if login else None
        r["phone"] = numbers[login]
        if phone is not None and r["phone"] != phone:
            continue
        r["device"] = _device_text(r["device"])
        r["started_at"] = iso(r["started_at"])
        r["stopped_at"] = iso(r["stopped_at"])
        out.append(r)
    return out


def e164(text: str, region: str) -> str | None:
    """A phone number as people type it (`8 701 234 56 78`) -> `+77012345678`."""
    for candidate, reg in ((text, region), ("+" + text.strip(), None)):
        try:
            number = phonenumbers.parse(candidate, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _device_text(device: str | None) -> str | None:
    """12 hex digits as AA-BB-CC-DD-EE-FF (RFC 3580 §3.21); other identities (a
    Calling-Station-Id that is not a MAC, or NAS and port) as they are."""
    if not device:
        return None
    if len(device) == 12 and all(c in "0123456789abcdef" for c in device):
        return "-".join(device[i:i + 2] for i in range(0, 12, 2)).upper()
    return device.split(":", 1)[1] if device.startswith(("id:", "nas:")) else device
