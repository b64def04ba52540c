"""Admin subcommands that end sessions (issue 13): `radiusd sessions list|disconnect`,
`radiusd numbers block|unblock|list`, and the Disconnect-Request of `journal close`.

The command runs in its own process, beside a running server: it changes the store
itself (the session closed with its cause, the password dead, the number blocked,
through the same `session_end.SessionEnd` as the server) and then sends the
Disconnect-Request itself with the same `Disconnector` and the same `[[clients]]`
keys (`coa`, `coa_address`, `coa_port`, `coa_secret`), printing what the NAS
answered and recording it on the session. Whatever the NAS answers, the session
stays closed and the password dead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from radiusd import phone
from radiusd.admin import (
    _database,
    _Failed,
    _group_help,
    _leaf,
    _one_line,
    _Parser,
    _shown,
    actor,
)
from radiusd.cli import UsageError, register
from radiusd.clock import SystemClock
from radiusd.config import Config
from radiusd.handoff import Handoff
from radiusd.health import Health
from radiusd.otp import PasswordBook
from radiusd.radius.coa import SessionTarget
from radiusd.radius.disconnect import Disconnector, routes_from_config
from radiusd.sealing import Sealer
from radiusd.session_end import CAUSES, SessionEnd, disconnect_record
from radiusd.store import blocked, passwords, sessions
from radiusd.store.backend import Backend, for_config
from radiusd.store.sessions import LiveSession

LIST_LIMIT = 100

Select = Callable[[Backend, float], Awaitable[list[LiveSession]]]


def _number(text: str, flag: str, config: Config) -> str:
    number = phone.e164(text, config.otp.default_region)
    if number is None:
        raise UsageError(f"{flag}: {text!r} is not a phone number; type it as people do, "
                         "e.g. '8 701 234 56 78' or +77012345678")
    return number


async def _revoke(config: Config, now: float, reason: str, select: Select,
                  before: Callable[[Backend], Awaitable[None]] | None = None
                  ) -> list[tuple[LiveSession, str]]:
    """Close the selected live sessions with `CAUSES[reason]`, expire their passwords
    (one write), then send each NAS its Disconnect-Request and record the answer.
    Returns each session with what its NAS answered."""
    clock = SystemClock()
    store = for_config(config.database, Health(), clock)
    try:
        await store.open()
    except Exception as e:
        raise _Failed(f"cannot open the database: {e}") from None
    # Codes are never opened here (`open_code=False`): no key is needed or made.
    book = PasswordBook(config.otp, config.sms, Sealer(bytes(32)), store)
    kicked: list[tuple[SessionTarget, str, LiveSession]] = []
    ends = SessionEnd(book)
    disconnector = Disconnector(routes_from_config(config.clients), clock)
    try:
        if before is not None:
            await before(store)
        live = await select(store, now)
        by_uid = {s.unique_id: s for s in live}
        ends.kick = lambda target, uid: kicked.append((target, uid, by_uid[uid]))
        await ends.end_sessions(live, now, reason)
        # A RadSec NAS takes it only over its own connection, which the server holds:
        # left in the store for it (`radiusd.handoff`).
        uids = {t: uid for t, uid, _ in kicked}
        disconnector.handoff = Handoff(store, clock, uids.get)
        out: list[tuple[LiveSession, str]] = []
        results = await asyncio.gather(*(disconnector.disconnect(t, now)
                                          for t, _, _ in kicked))
        await store.write([disconnect_record(uid, r, clock.now())
                           for (_, uid, _), r in zip(kicked, results, strict=True)])
        for (_, _, s), r in zip(kicked, results, strict=True):
            out.append((s, r.describe()))
        return out
    finally:
        book.close()
        await disconnector.close()
        await store.close()


def _print_kicked(kicked: list[tuple[LiveSession, str]], cause: str) -> None:
    for s, answer in kicked:
        who = s.login or s.user_name or "?"
        print(f"session {s.id} {who} at {s.nas} ({s.acct_session_id}): closed "
              f"({cause}); {answer}")


# --- sessions ---------------------------------------------------------------------

def _sessions_list(args: argparse.Namespace, config: Config, now: float) -> int:
    login = _number(args.phone, "--phone", config) if args.phone is not None else None
    try:
        limit = int(args.limit)
        if limit < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--limit: {args.limit!r} is not a count; type e.g. --limit 500") \
            from None
    with _database(config) as conn:
        rows = sessions.listed(conn, live=args.live, login=login, nas=args.nas, limit=limit)
    if not rows:
        print("no live sessions" if args.live else "no sessions")
        return 0
    table = [("ID", "PHONE", "NAS", "SINCE", "LAST SEEN", "ENDED", "CAUSE",
              "LAST DISCONNECT")]
    for r in rows:
        attempt = ""
        if r.disconnect_at is not None:
            attempt = f"{_shown(r.disconnect_at)} {r.disconnect_detail or r.disconnect_answer}"
        table.append((str(r.id), r.login or "", r.nas, _shown(r.started_at),
                      _shown(r.updated_at), _shown(r.stopped_at) or "online",
                      r.terminate_cause or "", attempt))
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    for t in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(t, widths, strict=True)).rstrip())
    if len(rows) == limit:
        print(f"(the newest {limit}; --limit N for more)", file=sys.stderr)
    return 0


def _sessions_disconnect(args: argparse.Namespace, config: Config, now: float) -> int:
    chosen = [f for f in ("phone", "session", "nas") if getattr(args, f) is not None]
    if len(chosen) != 1:
        raise UsageError("say which sessions: exactly one of --phone P, --session ID "
                         "(from `radiusd sessions list --live`) or --nas NAME")
    select: Select
    if args.phone is not None:
        login = _number(args.phone, "--phone", config)
        what = f"of {login}"

        async def select(db: Backend, at: float) -> list[LiveSession]:
            return await sessions.revoke_of_login(db, login, at, CAUSES["admin"])
    elif args.session is not None:
        try:
            sid = int(args.session)
        except ValueError:
            raise UsageError(f"--session: {args.session!r} is not a session ID; see the IDs "
                             "with `radiusd sessions list --live`") from None
        what = f"with ID {sid}"

        async def select(db: Backend, at: float) -> list[LiveSession]:
            return await sessions.revoke_by_id(db, sid, at, CAUSES["admin"])
    else:
        names = [c.name for c in config.clients]
        if args.nas not in names:
            raise UsageError(f"--nas: no [[clients]] entry is named {args.nas!r}; "
                             f"type one of: {', '.join(names)}")
        what = f"at {args.nas}"

        async def select(db: Backend, at: float) -> list[LiveSession]:
            out: list[LiveSession] = []
            for s in await sessions.live_at_nas(db, args.nas):
                out += await sessions.revoke_by_id(db, s.id, at, CAUSES["admin"])
            return out
    kicked = asyncio.run(_revoke(config, now, "admin", select))
    if not kicked:
        print(f"radiusd: no live session {what}: see them with `radiusd sessions list "
              "--live`", file=sys.stderr)
        return 1
    _print_kicked(kicked, CAUSES["admin"])
    return 0


def end_voucher_session(config: Config, now: float, voucher_login: str) -> None:
    """`journal close`: the voucher's live session is closed and its NAS told."""
    async def select(db: Backend, at: float) -> list[LiveSession]:
        return await sessions.revoke_of_login(db, voucher_login, at,
                                              CAUSES["journal-closed"])

    _print_kicked(asyncio.run(_revoke(config, now, "journal-closed", select)),
                  CAUSES["journal-closed"])


# --- numbers ----------------------------------------------------------------------

def _login(text: str, config: Config) -> str:
    try:
        return phone.normalise(text, config.otp.default_region, config.otp.allowed_regions)
    except phone.NumberRefused:
        raise UsageError(f"{text!r} is not a mobile number we send to; type it as people "
                         "do, e.g. '8 701 234 56 78' or +77012345678") from None


def _numbers_block(args: argparse.Namespace, config: Config, now: float) -> int:
    login = _login(args.phone, config)
    reason = " ".join((args.reason or "").split())

    async def block(db: Backend) -> None:
        await db.write([blocked.block(login, now, reason, actor()),
                        passwords.expire_live_of(login, now, "blocked")])

    async def select(db: Backend, at: float) -> list[LiveSession]:
        return await sessions.revoke_of_login(db, login, at, CAUSES["blocked"])

    kicked = asyncio.run(_revoke(config, now, "blocked", select, before=block))
    print(f"{login} blocked: no password, no SMS; {len(kicked)} live session(s) ended")
    _print_kicked(kicked, CAUSES["blocked"])
    return 0


def _numbers_unblock(args: argparse.Namespace, config: Config, now: float) -> int:
    login = _login(args.phone, config)

    async def unblock() -> bool:
        store = for_config(config.database, Health(), SystemClock())
        await store.open()
        try:
            return await blocked.unblock(store, login)
        finally:
            await store.close()

    if not asyncio.run(unblock()):
        print(f"radiusd: {login} is not blocked: see `radiusd numbers list`",
              file=sys.stderr)
        return 1
    print(f"{login} unblocked")
    return 0


def _numbers_list(args: argparse.Namespace, config: Config, now: float) -> int:
    with _database(config) as conn:
        rows = blocked.listed(conn)
    if not rows:
        print("no blocked numbers")
        return 0
    table = [("NUMBER", "SINCE", "BY", "REASON")]
    table += [(r.login, _shown(r.since), r.actor, r.reason) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    for t in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(t, widths, strict=True)).rstrip())
    return 0


# --- the parser -------------------------------------------------------------------

def add_session_actions(ss: Any) -> None:
    """`sessions list` and `sessions disconnect`, beside `sessions export`."""
    p = _leaf(ss, "list", _sessions_list, "what is online now and since when, with the "
              "last disconnect attempt and its answer (newest first)")
    p.add_argument("--live", action="store_true", help="only sessions still online")
    p.add_argument("--phone", help="only this number, as people type it")
    p.add_argument("--nas", metavar="NAME", help="only this [[clients]] name")
    p.add_argument("--limit", default=str(LIST_LIMIT), metavar="N",
                   help=f"at most N sessions (default {LIST_LIMIT})")
    p = _leaf(ss, "disconnect", _sessions_disconnect, "end live sessions: close them, "
              "expire their passwords, send the NAS a Disconnect-Request (RFC 5176)")
    p.add_argument("--phone", help="every live session of this number")
    p.add_argument("--session", metavar="ID", help="one session (IDs: sessions list --live)")
    p.add_argument("--nas", metavar="NAME", help="every live session of this [[clients]] name")


def _register(sub: Any) -> None:
    n = sub.add_parser("numbers", help="blocked numbers: no password, no SMS")
    _one_line(n)
    n.set_defaults(func=_group_help(n))
    ns = n.add_subparsers(metavar="ACTION", parser_class=_Parser)
    p = _leaf(ns, "block", _numbers_block, "block a number: no password, no SMS, its live "
              "sessions disconnected")
    p.add_argument("phone", metavar="PHONE")
    p.add_argument("--reason", metavar="TEXT", help="why, for the list")
    p = _leaf(ns, "unblock", _numbers_unblock, "unblock a number")
    p.add_argument("phone", metavar="PHONE")
    _leaf(ns, "list", _numbers_list, "blocked numbers: number, since, by whom, reason")


register(_register)
