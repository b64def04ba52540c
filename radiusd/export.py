"""What exports contain, and writing them: CSV (RFC 4180, UTF-8, header row) or JSON,
to stdout or to a file.

Times are ISO 8601 with the UTC offset of the machine's time zone (`TZ`), e.g.
``2026-01-05T14:30:00+05:00``; an empty CSV cell / JSON ``null`` means "not yet".
Rows are written as they are read, a few thousand at a time, so memory stays flat
however long the history. A file is written to a temporary name beside it and renamed
into place once complete, so a failed export never leaves half a file; it is created
with mode 0600 (personal data).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radiusd.journal import Entry
from radiusd.phone import e164
from radiusd.store import sessions
from radiusd.store.backend import SyncConnection

FORMATS = ("csv", "json")
JOURNAL_COLUMNS = (
    "id", "surname", "name", "patronymic", "computer", "started_at", "ended_at",
    "document_type", "document_number", "voucher_login", "opened_at", "corrections",
    "venue",  # issue 15: empty without venues
)
CHUNK = 2000  # rows per query: each is a short read of its own, so a long export never
#               holds one snapshot (the WAL can be checkpointed meanwhile)
PIECE = 1 << 16  # characters of CSV handed to the writer at a time
SESSION_COLUMNS = (
    "id", "login", "phone", "device", "nas", "nas_address", "framed_ip", "started_at",
    "stopped_at", "session_time", "input_octets", "output_octets", "terminate_cause",
)


def iso(t: float | None) -> str | None:
    """Unix seconds -> ISO 8601 local time with its offset, to the second."""
    if t is None:
        return None
    return datetime.fromtimestamp(int(t), UTC).astimezone().isoformat()


def chunks(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: str,
           bom: bool = False) -> Iterator[str]:
    """The export's text piece by piece, as the rows arrive (a JSON array item by
    item); joined, it is exactly `render`'s."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    return _csv(rows, columns, bom) if fmt == "csv" else _json(rows, columns)


def _csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str],
         bom: bool) -> Iterator[str]:
    buf = io.StringIO()
    if bom:
        buf.write("\ufeff")  # lets Excel see UTF-8; plain RFC 4180 readers do not want it
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
        if buf.tell() >= PIECE:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _json(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    """`json.dumps(list_of_items, ensure_ascii=False, indent=2)` one item at a time: an
    item one level deeper is its own dump with every line indented by two spaces (a
    JSON string holds no raw line break)."""
    first = True
    for row in rows:
        item = json.dumps({c: row[c] for c in columns}, ensure_ascii=False, indent=2)
        yield ("[\n  " if first else ",\n  ") + item.replace("\n", "\n  ")
        first = False
    yield "[]\n" if first else "\n]\n"


def render(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: str,
           bom: bool = False) -> str:
    return "".join(chunks(rows, columns, fmt, bom))


def write(text: str | Iterable[str], path: str | None) -> None:
    """To stdout (None or "-") as it comes, or atomically to `path`: written to a
    temporary file beside it as it comes, renamed into place once complete."""
    pieces = [text] if isinstance(text, str) else text
    if path in (None, "-"):
        out = sys.stdout.buffer
        for piece in pieces:
            out.write(piece.encode("utf-8"))
        out.flush()
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in pieces:
                f.write(piece.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def journal_rows(entries: Iterable[Entry]) -> Iterator[dict[str, Any]]:
    for e in entries:
        yield {c: (iso(getattr(e, c)) if c in ("started_at", "ended_at", "opened_at")
                   else getattr(e, c)) for c in JOURNAL_COLUMNS}


def session_rows(conn: SyncConnection, region: str, since: float | None,
                 until: float | None, phone: str | None,
                 chunk: int = CHUNK) -> Iterator[dict[str, Any]]:
    """Phone-based sessions online at some moment of [since, until), oldest first,
    read `chunk` rows per query along `sessions_begin` (so memory stays flat and a
    window is answered from the index)."""
    numbers = _Numbers(region)
    for raw in sessions.exported(conn, since, until, chunk):
        r: dict[str, Any] = raw._asdict()
        login = r["login"] or ""
        r["phone"] = numbers(login) if login else None
        if phone is not None and r["phone"] != phone:
            continue
        r["device"] = _device_text(r["device"])
        r["started_at"] = iso(r["started_at"])
        r["stopped_at"] = iso(r["stopped_at"])
        yield r


class _Numbers:
    """`e164` of each login, remembered for up to `most` logins at a time (parsing is
    most of an export's time; the bound, about 30 MB, keeps memory flat however many
    numbers a year holds)."""

    def __init__(self, region: str, most: int = 1 << 18) -> None:
        self.region, self.most = region, most
        self.seen: dict[str, str | None] = {}

    def __call__(self, login: str) -> str | None:
        try:
            return self.seen[login]
        except KeyError:
            pass
        if len(self.seen) >= self.most:
            self.seen.clear()
        phone = e164(login, self.region)
        self.seen[login] = login if phone == login else phone  # one string, not two
        return phone


def _device_text(device: str | None) -> str | None:
    """12 hex digits as AA-BB-CC-DD-EE-FF (RFC 3580 §3.21); other identities (a
    Calling-Station-Id that is not a MAC, or NAS and port) as they are."""
    if not device:
        return None
    if len(device) == 12 and all(c in "0123456789abcdef" for c in device):
        return "-".join(device[i:i + 2] for i in range(0, 12, 2)).upper()
    return device.split(":", 1)[1] if device.startswith(("id:", "nas:")) else device
