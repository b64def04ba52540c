"""Accounting policy: what to store for each Accounting-Request, and when a session
ends (RFC 2866; Rules §8: the password dies with the session).

`preacct` turns a request into an `AcctRecord` (pure: request + now in, record out).
`accounting` writes it through the group-commit store and answers only once the
write is durable (RFC 2866 §2).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from radiusd.device import request_device
from radiusd.radius.message import Drop, Outcome, Reply, Request
from radiusd.radius.wire import Code
from radiusd.store import sessions
from radiusd.store.backend import Backend, Op

log = logging.getLogger("radiusd.accounting")

START, STOP, INTERIM, ACCOUNTING_ON, ACCOUNTING_OFF = 1, 2, 3, 7, 8
STATUS_NAMES = {
    START: "Start",
    STOP: "Stop",
    INTERIM: "Interim-Update",
    ACCOUNTING_ON: "Accounting-On",
    ACCOUNTING_OFF: "Accounting-Off",
}


@dataclass(frozen=True, slots=True)
class AcctRecord:
    status: int
    unique_id: str
    nas: str  # client name
    nas_address: str  # who sent it: NAS-IP-Address, else the source address
    acct_session_id: str
    login: str | None
    device: str | None
    framed_ip: str | None
    event_time: float  # now - Acct-Delay-Time (RFC 2866 §5.2)
    session_time: int
    input_octets: int
    output_octets: int
    input_packets: int
    output_packets: int
    terminate_cause: str | None
    class_token: str | None
    user_name: str | None = None  # as the NAS sent it (a Disconnect-Request names it so)


class SessionHook(Protocol):
    """The password side of accounting (Rules §8), given the same transaction:
    `session_end.SessionEnd`."""

    async def session_started(self, record: AcctRecord, now: float) -> list[Op]: ...

    async def session_ended(self, record: AcctRecord, now: float, reason: str) -> list[Op]: ...

    async def nas_restarted(self, nas: str, nas_address: str, now: float,
                            reason: str) -> list[Op]: ...

    async def end_session(self, class_token: str | None, login: str | None,
                          device: str | None, at: float, reason: str,
                          last_seen: float | None = None) -> list[Op]: ...


class NoHook:
    async def session_started(self, record: AcctRecord, now: float) -> list[Op]:
        return []

    async def session_ended(self, record: AcctRecord, now: float, reason: str) -> list[Op]:
        return []

    async def nas_restarted(self, nas: str, nas_address: str, now: float,
                            reason: str) -> list[Op]:
        return []

    async def end_session(self, class_token: str | None, login: str | None,
                          device: str | None, at: float, reason: str,
                          last_seen: float | None = None) -> list[Op]:
        return []


def unique_session_id(nas: str, nas_address: str, acct_session_id: str, login: str | None,
                      nas_port: object) -> str:
    """Like FreeRADIUS's Acct-Unique-Session-Id: a hash of what identifies a session at
    one NAS. Acct-Session-Id alone is not unique: MikroTik restarts its counter after
    a reboot and several NAS may share a client entry.

    The hash comes after the NAS and its Acct-Session-Id (issue 18: a year of history
    costs nothing): NAS number their sessions in order (MikroTik and Cisco count in
    hex, CoovaChilli from the time), so a new session's key lands beside its NAS's
    last one in the index instead of at a random place among millions, and each
    Start writes one page where a hash alone dirtied a random one (measured in
    BENCHMARKS.md, issue 18). Unique all the same: the hash covers everything."""
    material = "\x00".join([nas, nas_address, acct_session_id, login or "", str(nas_port or "")])
    return f"{nas}:{acct_session_id}:{hashlib.md5(material.encode()).hexdigest()}"


MAX_COUNTER = (1 << 63) - 1  # SQLite INTEGER


def _counter(request: Request, low: str, high: str | None = None) -> int:
    value = request.get(low) or 0
    if high is not None:
        value += (request.get(high) or 0) << 32  # RFC 2869 §5.1-5.2 Gigawords
    return min(int(value), MAX_COUNTER)


class AccountingPolicy:
    def __init__(self, store: Backend, hook: SessionHook | None = None,
                 normalise_login: Callable[[str], str] = lambda name: name) -> None:
        self.store = store
        self.hook: SessionHook = hook or NoHook()
        self.normalise_login = normalise_login
        self.open_reads = sessions.batched(store)  # PostgreSQL: lost-Stop reads together

    def preacct(self, request: Request, now: float) -> AcctRecord | Drop:
        status = request.get("Acct-Status-Type")
        if status is None:
            return Drop("acct_status_type_missing")  # RFC 2866 §5.1: MUST be present
        # Other types (Tunnel-*, Failed...) are acknowledged and not stored, as
        # FreeRADIUS does, so the NAS stops retransmitting them.
        nas_address = str(request.get("NAS-IP-Address") or request.get("NAS-IPv6-Address")
                          or request.nas_address)
        acct_session_id = request.get("Acct-Session-Id") or ""
        if status in (START, STOP, INTERIM) and not acct_session_id:
            return Drop("acct_session_id_missing")  # RFC 2866 §5.5: MUST be present
        raw_login = request.get("User-Name")
        # Stored and matched as the login was at Access-Request: "8 701 ..." -> E.164.
        login = self.normalise_login(raw_login) if raw_login else None
        delay = request.get("Acct-Delay-Time") or 0
        framed = request.get("Framed-IP-Address")
        cause_num = request.get("Acct-Terminate-Cause")
        cause = None
        if cause_num is not None:
            ad = request.codec.attr("Acct-Terminate-Cause")
            cause = ad.names.get(int(cause_num), str(cause_num))
        klass = request.raw("Class")
        return AcctRecord(
            status=int(status),
            unique_id=unique_session_id(
                request.client.name, nas_address, acct_session_id, login,
                request.get("NAS-Port") or request.get("NAS-Port-Id"),
            ),
            nas=request.client.name,
            nas_address=nas_address,
            acct_session_id=acct_session_id,
            login=login,
            device=request_device(request),
            framed_ip=str(framed) if framed else None,
            event_time=now - min(int(delay), 86400),
            session_time=int(request.get("Acct-Session-Time") or 0),
            input_octets=_counter(request, "Acct-Input-Octets", "Acct-Input-Gigawords"),
            output_octets=_counter(request, "Acct-Output-Octets", "Acct-Output-Gigawords"),
            input_packets=_counter(request, "Acct-Input-Packets"),
            output_packets=_counter(request, "Acct-Output-Packets"),
            terminate_cause=cause,
            class_token=klass.decode("ascii", "replace") if klass else None,
            user_name=raw_login,
        )

    async def operations(self, r: AcctRecord, now: float) -> list[Op]:
        """The writes for one record: the session row and what the password side adds
        (found in the database: whichever node issued the password, issue 12)."""
        if r.status in (ACCOUNTING_ON, ACCOUNTING_OFF):
            reason = "nas-" + STATUS_NAMES[r.status].lower()
            return [
                sessions.close_nas(r.nas, r.nas_address, r.event_time, now, "NAS-Reboot"),
                *await self.hook.nas_restarted(r.nas, r.nas_address, now, reason),
            ]
        if r.status not in (START, STOP, INTERIM):
            return []  # acknowledged, not a session
        started = r.event_time - r.session_time if r.status != START else r.event_time
        ops: list[Op] = []
        if r.status == START:
            ops.append(sessions.retire(r.unique_id))
        ops.append(sessions.record(
            unique_id=r.unique_id, login=r.login, device=r.device, nas=r.nas,
            nas_address=r.nas_address, acct_session_id=r.acct_session_id,
            framed_ip=r.framed_ip, started_at=started, updated_at=now,
            stopped_at=r.event_time if r.status == STOP else None,
            session_time=r.session_time, input_octets=r.input_octets,
            output_octets=r.output_octets, input_packets=r.input_packets,
            output_packets=r.output_packets, terminate_cause=r.terminate_cause,
            class_token=r.class_token, user_name=r.user_name))
        if r.status == STOP:
            ops += await self.hook.session_ended(r, now, "stop")
        else:
            ops += await self.hook.session_started(r, now)
        return ops

    async def accounting(self, request: Request, record: AcctRecord, now: float) -> Outcome:
        if record.status != START:
            ops = await self.operations(record, now)
        elif self.open_reads is None:  # SQLite: local reads, one after the other
            ops = await self._lost_stop(record, now) + await self.operations(record, now)
        else:  # PostgreSQL: a Start's two reads (a lost Stop, the password) are round
            # trips, made at once (issue 12)
            lost = asyncio.ensure_future(self._lost_stop(record, now))
            try:
                ops = await self.operations(record, now)
            except BaseException:
                lost.cancel()
                lost.add_done_callback(_quiet)
                raise
            ops = await lost + ops
        await self.store.write(ops)
        return Reply(Code.ACCOUNTING_RESPONSE)

    async def _lost_stop(self, r: AcctRecord, now: float) -> list[Op]:
        """A Start for a session id that is still open under another login's Class:
        the NAS reused the id (MikroTik after a reboot) and the Stop was lost. Close
        the old session and end its password (Rules §8); the new one starts clean."""
        old = await sessions.open_session(self.store, r.unique_id, self.open_reads)
        if old is None or old.class_token == r.class_token:
            return []  # a repeated Start of the same session
        return [sessions.close_lost_stop(r.unique_id),
                *await self.hook.end_session(old.class_token, old.login, old.device, now,
                                       "lost_stop")]


def _quiet(task: asyncio.Task[list[Op]]) -> None:
    """The lost-Stop read of a Start whose other read failed: its own error (usually
    the same store failure) is logged, not raised; the request fails once."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a Start's lost-Stop read failed too: %r", task.exception())
