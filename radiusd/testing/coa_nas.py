"""A simulated NAS that receives Disconnect-Requests and CoA-Requests (RFC 5176 §3).

It reads and verifies them with pyrad (an implementation independent of
`radiusd.radius.coa`): Request Authenticator (RFC 5176 §3.3) and Message-Authenticator
(RFC 5176 §3.4); records each one; and answers as told: ACK, NAK with an Error-Cause,
nothing at all, or nothing to the first N (to make the sender retransmit). To test
the sender's checks it can also send a forged answer first.

    nas = CoaNas(secret=b"testing123", answer="nak", error_cause=503)
    host, port = await nas.start()
    ...
    nas.close()
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pyrad import packet as pp
from pyrad.dictionary import Dictionary

from radiusd.radius.dictionary import load_dictionary

Forge = Literal["authenticator", "identifier", "source", "message_authenticator"]


@dataclass(slots=True)
class Received:
    """One request as the NAS saw it."""

    raw: bytes
    source: tuple[str, int]
    code: int
    identifier: int
    authenticator_ok: bool
    message_authenticator_ok: bool | None  # None: the request had none
    message_authenticator_first: bool
    attributes: dict[str, list[Any]]

    def get(self, name: str) -> Any:
        values = self.attributes.get(name)
        return values[0] if values else None


@dataclass
class CoaNas(asyncio.DatagramProtocol):
    secret: bytes = b"testing123"
    answer: Literal["ack", "nak", "none"] = "ack"
    error_cause: int | None = None
    drop_first: int = 0  # datagrams received and not answered before answering
    sign: bool = True  # Message-Authenticator in answers (RFC 5176 §3.4)
    forge: Forge | None = None  # send one forged answer before the real one
    forge_only: bool = False  # ... and no real one
    dictionary: Dictionary = field(default_factory=load_dictionary)
    received: list[Received] = field(default_factory=list)
    answered: int = 0
    transport: asyncio.DatagramTransport | None = None
    _other: asyncio.DatagramTransport | None = None
    _seen: int = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        if self.forge == "source":
            self._other, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(host, 0))
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    def close(self) -> None:
        for t in (self.transport, self._other):
            if t is not None:
                t.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (the selector loop's datagram transport does not subclass DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        request = self._read(data, source)
        if request is None:
            return
        self._seen += 1
        if self._seen <= self.drop_first or self.answer == "none":
            return
        if not request.authenticator_ok or request.message_authenticator_ok is False:
            return  # RFC 5176 §3.3: silently discarded
        pkt = pp.CoAPacket(packet=data, secret=self.secret, dict=self.dictionary)
        reply = pkt.CreateReply()
        if self.answer == "nak":
            reply.code = pp.DisconnectNAK if pkt.code == pp.DisconnectRequest else pp.CoANAK
        if self.error_cause is not None:
            reply["Error-Cause"] = self.error_cause
        if self.sign:
            reply.add_message_authenticator()
        raw = bytes(reply.ReplyPacket())
        assert self.transport is not None
        if self.forge is not None:
            self._send_forged(raw, data, source)
            if self.forge_only:
                return
        self.transport.sendto(raw, source)
        self.answered += 1

    def _read(self, data: bytes, source: tuple[str, int]) -> Received | None:
        try:
            pkt = pp.CoAPacket(packet=data, secret=self.secret, dict=self.dictionary)
        except Exception:
            return None
        ma_ok: bool | None = None
        if pkt.message_authenticator:
            ma_ok = bool(pkt.verify_message_authenticator())
        attributes: dict[str, list[Any]] = {}
        for key in pkt.keys():  # noqa: SIM118 (pyrad's keys() gives names)
            if isinstance(key, str):
                attributes[key] = list(pkt[key])
        got = Received(data, source, pkt.code, pkt.id, bool(pkt.VerifyCoARequest()), ma_ok,
                       len(data) > 20 and data[20] == 80, attributes)
        self.received.append(got)
        return got

    def _send_forged(self, raw: bytes, request: bytes, source: tuple[str, int]) -> None:
        """One answer a careful sender must refuse, just before the real one."""
        assert self.transport is not None
        if self.forge == "source" and self._other is not None:
            self._other.sendto(raw, source)  # right bytes, wrong port
            return
        forged = bytearray(raw)
        forged[0] = pp.DisconnectACK if request[0] == pp.DisconnectRequest else pp.CoAACK
        if self.forge == "identifier":
            forged[1] = (forged[1] + 1) % 256
        elif self.forge == "message_authenticator" and raw[20:21] == b"\x50":
            forged[22:38] = bytes(16)
        body = bytes(forged[20:])
        if self.forge == "authenticator":
            forged[4:20] = hashlib.md5(b"not the secret").digest()
        else:  # a right Response Authenticator, so only the other check can refuse it
            forged[4:20] = hashlib.md5(bytes(forged[:4]) + request[4:20] + body
                                       + self.secret).digest()
        self.transport.sendto(bytes(forged), source)
