"""SMPP 3.4 provider: an ESME bound to the operator's SMSC over one TCP session.

- bind_transmitter or bind_transceiver (§4.1), per `[sms.smpp] bind`;
- submit_sm (§4.4) with data_coding 8 (UCS-2) for Cyrillic/Kazakh text, else 0, and a
  concatenation UDH for text longer than one SMS (`radiusd.sms.text`);
- at most `window` submit_sm awaiting their response at once;
- enquire_link (§4.11) every `enquire_link_seconds`; a link that does not answer is
  dropped and reconnected;
- reconnect with exponential backoff; while it lasts, sends answer "retry" at once and
  the outbox tries again later;
- ESME_RTHROTTLED and other temporary statuses answer "retry" and pause submits briefly;
- with a transceiver bind, delivery receipts (deliver_sm, §4.6) are asked for
  (registered_delivery 1), acknowledged, logged and handed to ``on_receipt``.

The wire format lives in `radiusd.sms.smpp_pdu`; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from itertools import count

from radiusd.config import SmsSmppConfig
from radiusd.sms import SendResult, mask
from radiusd.sms import smpp_pdu as p
from radiusd.sms.text import concat_udh, encode

log = logging.getLogger("radiusd.sms.smpp")

ReceiptHook = Callable[[str, str], None]  # (message id, final state e.g. "DELIVRD")


class LinkDown(Exception):
    """The session is gone (closed, reset, unbound); whatever was in flight is unknown."""


class Session:
    """One bound SMPP session: request/response by sequence number, keep-alive, and the
    SMSC's own requests (enquire_link, deliver_sm, unbind) answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_deliver: Callable[[p.Deliver], None], response_timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self._on_deliver = on_deliver
        self._timeout = response_timeout
        self._pending: dict[int, asyncio.Future[p.Pdu]] = {}
        self._seq = count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self.alive = True

    def start(self, enquire_link_seconds: float) -> None:
        self._tasks = [asyncio.create_task(self._read_loop(), name="smpp-read"),
                       asyncio.create_task(self._keepalive(enquire_link_seconds),
                                           name="smpp-enquire-link")]

    def next_seq(self) -> int:
        return next(self._seq) % 0x7FFFFFFF or next(self._seq)

    async def request(self, pdu: p.Pdu) -> p.Pdu:
        """Send a request and wait for its response; LinkDown if the session dies or
        the SMSC does not answer in time (then the session is dropped)."""
        if not self.alive:
            raise LinkDown("not connected")
        fut: asyncio.Future[p.Pdu] = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence] = fut
        try:
            self._writer.write(pdu.encode())
            await self._writer.drain()
            return await asyncio.wait_for(fut, self._timeout)
        except TimeoutError:
            self.drop(f"no response to command 0x{pdu.command_id:08x} in {self._timeout:g} s")
            raise LinkDown("response timeout") from None
        except (OSError, ConnectionError) as e:
            self.drop(f"write failed: {e}")
            raise LinkDown(str(e)) from None
        finally:
            self._pending.pop(pdu.sequence, None)

    def _send(self, pdu: p.Pdu) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.write(pdu.encode())

    async def _read_loop(self) -> None:
        pdus = p.PduReader()
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    self.drop("closed by the SMSC")
                    return
                for pdu in pdus.feed(data):
                    self._dispatch(pdu)
        except (OSError, p.SmppError) as e:
            self.drop(str(e))

    def _dispatch(self, pdu: p.Pdu) -> None:
        if pdu.is_response:
            fut = self._pending.get(pdu.sequence)
            if fut is not None and not fut.done():
                fut.set_result(pdu)
            return
        if pdu.command_id == p.ENQUIRE_LINK:
            self._send(p.empty(p.ENQUIRE_LINK_RESP, pdu.sequence))
        elif pdu.command_id == p.DELIVER_SM:
            self._send(p.deliver_sm_resp(pdu.sequence))
            try:
                self._on_deliver(p.parse_deliver_sm(pdu.body))
            except p.SmppError as e:
                log.warning("SMPP: ignoring a malformed deliver_sm: %s", e)
        elif pdu.command_id == p.UNBIND:
            self._send(p.empty(p.UNBIND_RESP, pdu.sequence))
            self.drop("unbound by the SMSC")
        else:  # §4.3: a command we do not handle
            self._send(p.empty(p.GENERIC_NACK, pdu.sequence, p.ESME_RINVCMDID))

    async def _keepalive(self, interval: float) -> None:
        while self.alive:
            await asyncio.sleep(interval)
            try:
                await self.request(p.empty(p.ENQUIRE_LINK, self.next_seq()))
            except LinkDown:
                return

    def drop(self, why: str) -> None:
        if not self.alive:
            return
        self.alive = False
        log.warning("SMPP session lost: %s", why)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkDown(why))
        self._writer.close()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()

    async def close(self) -> None:
        """§4.2: unbind politely, then close."""
        if self.alive:
            with contextlib.suppress(LinkDown):
                await asyncio.wait_for(self.request(p.empty(p.UNBIND, self.next_seq())), 2)
            self.alive = False
            self._writer.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class SmppProvider:
    name = "smpp"

    def __init__(self, cfg: SmsSmppConfig, *, response_timeout: float = 10.0,
                 connect_timeout: float = 5.0, max_reconnect_delay: float = 30.0,
                 throttle_pause: float = 1.0, on_receipt: ReceiptHook | None = None) -> None:
        self.cfg = cfg
        self.on_receipt = on_receipt
        self.receipts: deque[tuple[str, str]] = deque(maxlen=1000)
        self._response_timeout = response_timeout
        self._connect_timeout = connect_timeout
        self._max_reconnect_delay = max_reconnect_delay
        self._throttle_pause = throttle_pause
        self._session: Session | None = None
        self._connecting = asyncio.Lock()
        self._window = asyncio.Semaphore(cfg.window)
        self._failures = 0
        self._next_connect = 0.0
        self._throttled_until = 0.0
        self._concat_ref = random.randrange(256)
        self._closed = False

    async def send(self, to: str, text: str, sender: str = "") -> SendResult:
        try:
            session = await self._bound()
        except LinkDown as e:
            return SendResult("retry", f"SMSC unavailable: {e}")
        enc = encode(text)
        total = len(enc.parts)
        self._concat_ref = (self._concat_ref + 1) % 256
        ids: list[str] = []
        for i, part in enumerate(enc.parts, 1):
            esm_class, payload = 0, part
            if total > 1:
                esm_class, payload = p.ESM_UDHI, concat_udh(self._concat_ref, total, i) + part
            async with self._window:
                await self._wait_throttle()
                pdu = p.submit_sm(session.next_seq(), sender or self.cfg.source_addr, to,
                                  payload,
                                  data_coding=enc.data_coding, esm_class=esm_class,
                                  registered_delivery=1 if self.cfg.bind == "transceiver" else 0)
                try:
                    resp = await session.request(pdu)
                except LinkDown as e:
                    return SendResult("retry", f"SMPP link lost during submit_sm: {e}")
            if resp.command_id == p.GENERIC_NACK or resp.status != p.ESME_ROK:
                return self._refused(resp, to, i, total)
            ids.append(p.message_id(resp.body))
        ref = ",".join(ids)
        log.info("SMS to %s accepted by the SMSC as %s (%d part(s))", mask(to), ref, total)
        return SendResult("sent", f"{total} part(s)", ref or None)

    def _refused(self, resp: p.Pdu, to: str, part: int, total: int) -> SendResult:
        status = resp.status
        detail = f"submit_sm status 0x{status:08x}"
        if total > 1:
            detail += f" on part {part}/{total}"
        if status == p.ESME_RTHROTTLED:
            self._throttled_until = time.monotonic() + self._throttle_pause
        if status in p.TEMPORARY:
            return SendResult("retry", detail)
        log.warning("SMS to %s refused by the SMSC: %s", mask(to), detail)
        return SendResult("failed", detail)

    async def _wait_throttle(self) -> None:
        delay = self._throttled_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _bound(self) -> Session:
        if self._session is not None and self._session.alive:
            return self._session
        async with self._connecting:
            if self._session is not None and self._session.alive:
                return self._session
            if self._closed:
                raise LinkDown("provider closed")
            wait = self._next_connect - time.monotonic()
            if wait > 0:
                raise LinkDown(f"reconnecting in {wait:.1f} s")
            try:
                self._session = await self._connect()
            except LinkDown as e:
                self._failures += 1
                delay = min(self._max_reconnect_delay, 0.5 * 2 ** (self._failures - 1))
                delay *= random.uniform(0.8, 1.2)
                self._next_connect = time.monotonic() + delay
                log.warning("SMPP: cannot bind to %s:%d: %s; next try in %.1f s",
                            self.cfg.host, self.cfg.port, e, delay)
                raise
            self._failures = 0
            return self._session

    async def _connect(self) -> Session:
        cfg = self.cfg
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(cfg.host, cfg.port), self._connect_timeout)
        except (OSError, TimeoutError) as e:
            raise LinkDown(str(e) or type(e).__name__) from None
        session = Session(reader, writer, self._deliver, self._response_timeout)
        session.start(cfg.enquire_link_seconds)
        command = p.BIND_TRANSCEIVER if cfg.bind == "transceiver" else p.BIND_TRANSMITTER
        try:
            resp = await session.request(
                p.bind(command, session.next_seq(), cfg.system_id, cfg.password, cfg.system_type))
        except LinkDown:
            await session.close()
            raise
        if resp.status != p.ESME_ROK:
            session.drop("bind refused")
            await session.close()
            raise LinkDown(f"bind refused with status 0x{resp.status:08x}")
        log.info("SMPP: bound as %s to %s:%d", cfg.bind, cfg.host, cfg.port)
        return session

    def _deliver(self, d: p.Deliver) -> None:
        if not d.is_receipt:
            log.info("SMPP: ignoring a mobile-originated SMS from %s", mask("+" + d.source))
            return
        receipt = p.parse_receipt(d)
        if receipt is None:
            log.warning("SMPP: a delivery receipt without a message id")
            return
        ref, state = receipt
        self.receipts.append(receipt)
        log.info("SMS %s delivery receipt: %s", ref, state)
        if self.on_receipt is not None:
            self.on_receipt(ref, state)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
