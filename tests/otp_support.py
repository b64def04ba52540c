"""Shared helpers for the OTP end-to-end tests (issue 4): a server with config
overrides, reading the code the way the user does (from the SMS), and the usual
steps of a login (Get password -> password -> Accounting Start/Stop)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import Answer, SimulatedNAS
from radiusd.testing.server import loopback_config, nas_for, running_server

ACCEPT, REJECT, CHALLENGE, ACCT_RESPONSE = 2, 3, 11, 5

PHONE = "+77012345678"
TYPED = "8 701 234 56 78"
MASKED = "+7 701 *** ** 78"
MAC = "AA-BB-CC-DD-EE-01"
MAC_HEX = "aabbccddee01"
OTHER_MAC = "AA-BB-CC-DD-EE-02"

SENT_EN = f"Password sent by SMS to {MASKED}"
EXPIRED_EN = 'This password is no longer valid. Press "Get password"'

_CODE = re.compile(r"(\d{4,12})")


@asynccontextmanager
async def otp_server(tmp_path: Path, clock: ManualClock, *, ipv6: bool = False,
                     **sections: Any) -> AsyncIterator[Server]:
    """The real server on loopback with some config sections overridden."""
    async with running_server(loopback_config(tmp_path, ipv6=ipv6, **sections), clock) as s:
        yield s


def nas_of(server: Server, family: int = 4, **kwargs: Any) -> SimulatedNAS:
    # Generous: a loaded CI box must not turn into a NoReply (retransmissions carry
    # the same bytes, so the server's duplicate cache answers them).
    kwargs.setdefault("timeout", 1.0)
    kwargs.setdefault("retries", 2)
    return nas_for(server, family=family, **kwargs)


def reply_message(answer: Answer) -> str:
    parts = answer.all("Reply-Message")
    return "".join(p.decode() if isinstance(p, bytes) else p for p in parts)


async def sms_rows(server: Server, phone: str | None = None) -> list[Any]:
    if phone is None:
        return await server.store.fetchall("SELECT * FROM sms_outbox ORDER BY created_at")
    return await server.store.fetchall(
        "SELECT * FROM sms_outbox WHERE recipient = ? ORDER BY created_at", (phone,))


async def sms_count(server: Server) -> int:
    row = await server.store.fetchone("SELECT COUNT(*) AS n FROM sms_outbox")
    assert row is not None
    return int(row["n"])


async def sms_text(server: Server, phone: str) -> str:
    """The text of the newest SMS queued for ``phone``, opened with the server's key."""
    # Ids are random, so "newest" is by time; on a tie (the clock did not move),
    # the one whose password is still live was queued last (it superseded the others).
    rows = await server.store.fetchall(
        "SELECT s.body FROM sms_outbox s LEFT JOIN passwords p ON p.id = s.password_id "
        "WHERE s.recipient = ? "
        "ORDER BY s.created_at DESC, COALESCE(p.state, '') != 'expired' DESC LIMIT 1",
        (phone,))
    assert rows, f"no SMS was queued for {phone}"
    return server.sealer.open(rows[0]["body"], b"sms").decode()


async def sms_code(server: Server, phone: str) -> str:
    """What the user reads in the newest SMS for ``phone``: the code's digits."""
    text = await sms_text(server, phone)
    found = _CODE.findall(text)
    assert len(found) == 1, f"expected one code in the SMS, got {found!r}"
    return str(found[0])


def sms_file_entries(server: Server) -> list[dict[str, Any]]:
    """What the SMS worker's `file` provider wrote so far (JSON Lines), if it runs."""
    path = Path(server.config.sms.file.path)
    if server.sms is None or server.config.sms.provider != "file" or not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


async def password_rows(server: Server, phone: str = PHONE) -> list[Any]:
    return await server.store.fetchall(
        "SELECT * FROM passwords WHERE login = ? ORDER BY issued_at", (phone,))


async def get_password(nas: SimulatedNAS, user: str = TYPED, *, chap: bool = False,
                       chap_challenge: bool = True, mac: str = MAC,
                       extra: list[tuple[str, Any]] | None = None) -> Answer:
    """Press "Get password" on the controller's login page: the number, no password."""
    return await nas.send(nas.access_request(user, "", chap=chap, chap_challenge=chap_challenge,
                                             mac=mac, extra=extra or []))


async def enter(nas: SimulatedNAS, code: str, user: str = TYPED, *, chap: bool = False,
                chap_challenge: bool = True, mac: str = MAC,
                extra: list[tuple[str, Any]] | None = None) -> Answer:
    """Type the password from the SMS and press "Login"."""
    return await nas.send(nas.access_request(user, code, chap=chap,
                                             chap_challenge=chap_challenge, mac=mac,
                                             extra=extra or []))


async def request_code(server: Server, nas: SimulatedNAS, user: str = TYPED,
                       phone: str = PHONE, mac: str = MAC) -> str:
    answer = await get_password(nas, user, mac=mac)
    assert answer.code == REJECT, reply_message(answer)
    assert reply_message(answer).startswith(("Password sent", "Пароль отправлен", "Пароль SMS"))
    return await sms_code(server, phone)


async def log_in(server: Server, nas: SimulatedNAS, user: str = TYPED, phone: str = PHONE,
                 mac: str = MAC) -> tuple[str, bytes]:
    """Get password, read the SMS, log in: (code, Class)."""
    code = await request_code(server, nas, user, phone, mac)
    answer = await enter(nas, code, user, mac=mac)
    assert answer.code == ACCEPT, reply_message(answer)
    klass = answer.get("Class")
    assert isinstance(klass, bytes)
    return code, klass


async def acct(nas: SimulatedNAS, status: str, session_id: str | None, *,
               user: str | None = PHONE, mac: str = MAC, klass: bytes | None = None,
               extra: list[tuple[str, Any]] | None = None, **counters: int) -> Answer:
    attrs = list(extra or [])
    if klass is not None:
        attrs.append(("Class", klass))
    answer = await nas.send(nas.accounting_request(status, user=user, session_id=session_id,
                                                   mac=mac, extra=attrs, **counters))
    assert answer.code == ACCT_RESPONSE
    return answer


async def session_row(server: Server, session_id: str) -> Any:
    row = await server.store.fetchone(
        "SELECT * FROM sessions WHERE acct_session_id = ? ORDER BY id DESC", (session_id,))
    assert row is not None, f"no session {session_id}"
    return row
