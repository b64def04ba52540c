"""Disconnect-Requests for RadSec NAS, handed to the process that can send them
(issue 16 item 3, RFC 6614 §2.5).

A RadSec NAS takes a Disconnect-Request only over the TLS connection it opened to us,
and one process holds it: one worker of one node. The others (an admin command, the
other workers and nodes) cannot send it. So they leave it in the store
(`store.handoffs`, `Handoff`), and every process that serves RadSec looks there every
`POLL_SECONDS` for what it can send (`HandoffSender`): it takes a row (one process
only gets it), sends over the NAS's connection and records the answer on the session,
as a Disconnect sent in place would be. What no process could send within
`TTL_SECONDS` (the NAS never came back) is recorded as not sent. The session and its
password are closed in the store before any of this, whatever the NAS answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Collection

from radiusd.clock import Clock
from radiusd.radius.coa import SessionTarget
from radiusd.radius.disconnect import Disconnector, DisconnectResult
from radiusd.session_end import disconnect_record
from radiusd.store import handoffs as kept
from radiusd.store.backend import Backend

log = logging.getLogger("radiusd.coa")

POLL_SECONDS = 1.0  # how often a process serving RadSec looks for what it can send
TTL_SECONDS = 300.0  # a NAS that does not connect again within this is not told
BATCH = 256  # rows read per look


def to_json(target: SessionTarget) -> str:
    return json.dumps(dataclasses.asdict(target), separators=(",", ":"))


def from_json(text: str) -> SessionTarget:
    fields = {f.name for f in dataclasses.fields(SessionTarget)}
    data = {k: v for k, v in json.loads(text).items() if k in fields}
    return SessionTarget(**data)


class Handoff:
    """What a process that does not hold the NAS's connection does with a target: it
    leaves it in the store under its session (`session_of` gives the session's
    unique_id, None if unknown: then nothing is left and it is not sent)."""

    def __init__(self, store: Backend, clock: Clock,
                 session_of: Callable[[SessionTarget], str | None]) -> None:
        self.store, self.clock, self.session_of = store, clock, session_of

    async def __call__(self, target: SessionTarget) -> bool:
        unique_id = self.session_of(target)
        if unique_id is None:
            return False
        await self.store.write([kept.queue(unique_id, target.client, to_json(target),
                                           self.clock.now())])
        return True


class HandoffSender:
    """In each process serving RadSec: send what was left for the NAS it holds."""

    def __init__(self, store: Backend, disconnector: Disconnector, clock: Clock,
                 held: Callable[[], Collection[str]]) -> None:
        self.store, self.disconnector, self.clock, self.held = store, disconnector, clock, held

    async def run(self) -> None:
        """Until cancelled; a failed look is logged and tried again."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store logs its own outages
                log.debug("RadSec handoffs: %s", e)
            await asyncio.sleep(POLL_SECONDS)

    async def run_once(self) -> int:
        """One look: give up what waited too long, send what this process can.
        Returns how many it sent."""
        now = self.clock.now()
        (gone,) = await self.store.run([kept.expire(now - TTL_SECONDS)])
        if gone:
            await self.store.write([disconnect_record(
                str(r[0]), DisconnectResult(from_json(str(r[2])), "timeout"), now)
                for r in gone])
        held = set(self.held())
        if not held:
            return 0
        mine = [w for w in await kept.waiting(self.store, BATCH) if w.client in held]
        sent = await asyncio.gather(*(self._send(w) for w in mine))
        return sum(sent)

    async def _send(self, w: kept.Waiting) -> bool:
        (taken,) = await self.store.run([kept.take(w.unique_id)])
        if not taken:
            return False  # another process took it
        target = from_json(w.target)
        result = await self.disconnector.disconnect(target, self.clock.now(),
                                                    hand_off=False)
        await self.store.write([disconnect_record(w.unique_id, result, self.clock.now())])
        return True

