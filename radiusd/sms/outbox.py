"""The SMS outbox worker: every "Get password" press ends as exactly one SMS, or as a
password that is dead (Rules §6; DESIGN: password lifecycle).

The OTP side writes the `sms_outbox` row in the transaction that issues the password,
then calls `wake()`. The worker takes due rows and moves each along

    queued --claim--> sending --provider: sent-----> sent
                         |    --provider: retry----> queued (later, backoff + jitter)
                         |    --provider: failed---> failed  + on_give_up ops
                         '--lease ran out (crash)--> failed  + on_give_up ops
    queued --older than max_age--> failed + on_give_up ops
    queued --its password already expired (superseded, TTL)--> cancelled (not sent)

*Claim* commits `state = 'sending'`, `attempts + 1` and a lease (`next_attempt_at =
now + lease`) before the provider is called. A row left in 'sending' therefore means a
process died between handing the SMS to the provider and recording the answer: the SMS
may or may not have gone. It is never sent again (no duplicate SMS for one press); once
its lease runs out it is marked 'failed' and its password made unusable, so the user
asks again instead of waiting for a code that may not come. See docs/sms.md.

Delivery never stalls in silence: with a `Health`, a provider error (any: an answer,
a timeout, an exception, descriptors exhausted) starts an "sms" episode, logged once
until an SMS goes out again; EMFILE/ENFILE also make a "descriptors" episode and are
counted (`descriptor_errors`). `GET /healthz` reads it (docs/portal.md).

What is kept, and how it is found, is `radiusd.store.outbox`: a round (every "Get
password" starts one) and a receipt read only the live rows, so they cost the same
whatever the history (issue 18).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
from collections.abc import Callable
from typing import Any

from radiusd.clock import Clock
from radiusd.health import Health
from radiusd.sealing import Sealer
from radiusd.sms import SendResult, SmsProvider, mask
from radiusd.store import outbox as kept
from radiusd.store.backend import Backend, Op

log = logging.getLogger("radiusd.sms.outbox")

GiveUp = Callable[[int, float], list[Op]]
# A row's venue -> the provider and sender that send it (`sms.routes.SmsRoutes`).
Route = Callable[[str | None], tuple[SmsProvider, str]]
Row = kept.DueSms | kept.Abandoned


class OutboxWorker:
    """Delivers `sms_outbox` rows through one provider; see the module docstring."""

    def __init__(self, store: Backend, provider: SmsProvider, sealer: Sealer, clock: Clock,
                 max_age_seconds: float, on_give_up: GiveUp, *,
                 concurrency: int = 8, batch: int = 64, send_timeout: float = 30.0,
                 lease_seconds: float = 60.0, backoff_base: float = 2.0,
                 backoff_max: float = 60.0, idle_poll: float = 30.0,
                 rng: random.Random | None = None, health: Health | None = None,
                 route: Route | None = None) -> None:
        if lease_seconds <= send_timeout:
            raise ValueError("lease_seconds must exceed send_timeout")
        self.store = store
        self.provider = provider
        self.sealer = sealer
        self.clock = clock
        self.max_age = max_age_seconds
        self.on_give_up = on_give_up
        self.concurrency = concurrency
        self.batch = batch
        self.send_timeout = send_timeout
        self.lease = lease_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.idle_poll = idle_poll
        self.rng = rng or random.Random()
        self.counts = {"sent": 0, "retry": 0, "failed": 0, "cancelled": 0}
        self.health = health
        self.route = route  # None: every SMS through `provider`
        self.descriptor_errors = 0  # EMFILE/ENFILE while sending (for /metrics)
        self._emfile = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._receipts: set[asyncio.Task[None]] = set()

    def receipt(self, ref: str, state: str) -> None:
        """A delivery receipt from the SMSC (SMPP deliver_sm, e.g. "DELIVRD",
        "UNDELIV"): recorded on the row whose provider_ref it names."""
        write = self.store.write([kept.receipt(ref, state, self.clock.now())])
        task = asyncio.get_running_loop().create_task(self._record_receipt(write, ref))
        self._receipts.add(task)
        task.add_done_callback(self._receipts.discard)

    @staticmethod
    async def _record_receipt(write: Any, ref: str) -> None:
        try:
            await write
        except Exception:
            log.exception("could not record the delivery receipt for SMS %s", ref)

    def wake(self) -> None:
        """A row was queued (called after the issuing transaction committed)."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: half fixed, half random ("equal jitter")."""
        d = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, attempts - 1))
        return d / 2 + self.rng.uniform(0, d / 2)

    async def run(self) -> None:
        """Deliver until cancelled. Sleeps until woken or the next row is due. On
        cancellation the sends in flight are finished and recorded first (bounded by
        `send_timeout`), so a graceful stop leaves no row in 'sending'."""
        try:
            while True:
                self._wake.clear()
                round_ = asyncio.ensure_future(self._round())
                try:
                    await asyncio.shield(round_)
                except asyncio.CancelledError:
                    self._stopping = True
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(round_, self.send_timeout + 10)
                    raise
                except Exception:
                    log.exception("SMS outbox round failed; trying again shortly")
                    await asyncio.sleep(1.0)
                    continue
                wait = await self._until_next_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            await self.provider.close()

    async def _round(self) -> None:
        while await self.run_once() >= self.batch and not self._stopping:
            pass  # a full batch: more may be due

    async def _until_next_due(self) -> float:
        at = await kept.next_due(self.store)
        if at is None:
            return self.idle_poll
        return min(self.idle_poll, max(0.0, at - self.clock.now()))

    async def run_once(self) -> int:
        """Process what is due now; return how many rows were handled."""
        now = self.clock.now()
        handled = await self._recover_abandoned(now)
        rows = await kept.due(self.store, now, self.batch)
        if not rows:
            return handled
        dead = [r for r in rows if r.password_state == "expired"]
        rows = [r for r in rows if r.password_state != "expired"]
        expired = [r for r in rows if now - r.created_at >= self.max_age]
        due = [r for r in rows if now - r.created_at < self.max_age]
        ops: list[Op] = [kept.cancel(r.id) for r in dead]
        self.counts["cancelled"] += len(dead)
        await self.store.write(ops)
        await self._give_up_once([(r, kept.fail_queued(r.id, "max_age: not sent in time"))
                                  for r in expired], now)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(row: kept.DueSms) -> None:
            async with limit:
                # Claimed one by one, just before sending (concurrent claims share a
                # commit): a crash leaves at most `concurrency` rows in doubt. Another
                # worker (another node) may have claimed it since we read it: then the
                # claim returns nothing and it is not ours to send (issue 12).
                (mine,) = await self.store.run([kept.claim(row.id,
                                                           self.clock.now() + self.lease)])
                if mine:
                    await self._deliver(row)

        await asyncio.gather(*(one(r) for r in due))
        return handled + len(rows) + len(dead)

    async def _recover_abandoned(self, now: float) -> int:
        rows = await kept.abandoned(self.store, now)
        why = "interrupted while sending: delivery unknown"
        mine = await self._give_up_once([(r, kept.fail_abandoned(r.id, why, now))
                                         for r in rows], now)
        for r in mine:
            log.warning("SMS %d to %s: a process stopped while sending it; it may or may "
                        "not have gone, so it is not sent again and its password is "
                        "voided", r.id, mask(r.recipient))
        return len(rows)

    async def _give_up_once(self, fails: list[tuple[Row, Op]], now: float) -> list[Row]:
        """Give up rows that every node's worker may see: each row's conditional
        `failed` returns it to one worker only, which alone voids its password."""
        if not fails:
            return []
        results = await self.store.run([op for _, op in fails])
        mine = [row for (row, op), got in zip(fails, results, strict=True) if got]
        ops: list[Op] = []
        for row, op in fails:
            if row in mine:
                log.warning("SMS %d to %s not delivered, password voided: %s",
                            row.id, mask(row.recipient), op[1][0])
                ops += self.on_give_up(row.password_id, now)
        await self.store.write(ops)
        return mine

    async def _deliver(self, row: kept.DueSms) -> None:
        try:
            text = self.sealer.open(row.body, aad=b"sms").decode()
        except ValueError:
            await self.store.write(self._give_up(row, self.clock.now(),
                                                 "body does not open with this key"))
            return
        provider, sender = (self.provider, "") if self.route is None \
            else self.route(row.venue)
        send = provider.send(row.recipient, text, sender) if sender \
            else provider.send(row.recipient, text)
        try:
            result = await asyncio.wait_for(send, self.send_timeout)
        except TimeoutError:
            result = SendResult("retry", f"no answer from the provider in {self.send_timeout:g} s")
        except Exception as e:  # a provider bug must not kill the worker
            if self.health is None or self.health.ok("sms"):  # a traceback per episode
                log.exception("SMS provider %s raised", provider.name)
            detail = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else ""
            result = SendResult("retry", f"provider error: {type(e).__name__}"
                                         + (f": {detail}" if detail else ""))
        self._report(result, self.clock.now(), provider.name)
        await self.store.write(self._record(row, result, self.clock.now()))

    def _report(self, result: SendResult, now: float, name: str = "") -> None:
        """Rules §6, never in silence: one episode per outage (Health logs it once),
        ended by the next SMS that goes out."""
        out_of_fds = result.status != "sent" and any(
            os.strerror(n) in result.detail for n in (errno.EMFILE, errno.ENFILE))
        if out_of_fds:
            self.descriptor_errors += 1
        if self.health is None:
            return
        if result.status == "sent":
            self.health.recovered("sms", now)
            if self._emfile:
                self._emfile = False
                self.health.recovered("descriptors", now)
            return
        name = name or self.provider.name
        self.health.failed("sms", f"provider {name}: {result.detail}"[:300], now)
        if out_of_fds:
            self._emfile = True
            self.health.failed("descriptors", f"SMS provider {name}: "
                                              f"{result.detail}"[:300], now)

    def _record(self, row: kept.DueSms, result: SendResult, now: float) -> list[Op]:
        self.counts[result.status] += 1
        attempts = row.attempts + 1
        if result.status == "sent":
            return kept.sent(row.id, now, result.ref)
        if result.status == "retry":
            at = now + self.backoff(attempts)
            if at - row.created_at < self.max_age:
                log.info("SMS %d to %s: attempt %d failed (%s); next try in %.1f s",
                         row.id, mask(row.recipient), attempts, result.detail, at - now)
                return [kept.retry(row.id, at, result.detail)]
            return self._give_up(row, now, f"max_age: {result.detail}")
        return self._give_up(row, now, result.detail)

    def _give_up(self, row: kept.DueSms | kept.Abandoned, now: float, why: str) -> list[Op]:
        log.warning("SMS %d to %s not delivered, password voided: %s",
                    row.id, mask(row.recipient), why)
        return [kept.failed(row.id, why), *self.on_give_up(row.password_id, now)]


async def start_worker(store: Backend, provider: SmsProvider, sealer: Sealer, clock: Clock,
                       max_age_seconds: float, on_give_up: GiveUp,
                       **options: Any) -> tuple[OutboxWorker, asyncio.Task[None]]:
    """Build the worker and run it as a background task (cancel the task to stop)."""
    worker = OutboxWorker(store, provider, sealer, clock, max_age_seconds, on_give_up,
                          **options)
    return worker, asyncio.create_task(worker.run(), name="sms-outbox")

