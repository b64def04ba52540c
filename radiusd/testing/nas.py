"""A simulated NAS: the RADIUS client a hotspot controller is, for tests and benchmarks.

It builds requests with pyrad's encoder (an implementation independent of
`radiusd.radius.wire`), sends them over UDP with asyncio-dgram, retransmits on
timeout with the same bytes (RFC 5080 §2.2.1), and checks every reply the way a
careful NAS does after BlastRADIUS: Response Authenticator, Message-Authenticator
present, valid and first.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncio_dgram
from pyrad import packet as pp
from pyrad.dictionary import Dictionary

from radiusd.radius.dictionary import load_dictionary

ACCT_STATUS = {"Start": 1, "Stop": 2, "Interim-Update": 3, "Accounting-On": 7,
               "Accounting-Off": 8}


class NoReply(Exception):
    """No (valid) reply after all retransmissions."""


class BadReply(Exception):
    """A reply arrived but failed verification."""


@dataclass(slots=True)
class Answer:
    code: int
    raw: bytes
    packet: pp.Packet
    attempts: int

    def get(self, name: str) -> Any:
        try:
            values = self.packet[name]
        except KeyError:
            return None
        return values[0] if values else None

    def all(self, name: str) -> list[Any]:
        try:
            return list(self.packet[name])
        except KeyError:
            return []

    @property
    def first_attribute_type(self) -> int | None:
        return self.raw[20] if len(self.raw) > 20 else None


@dataclass
class SimulatedNAS:
    """One NAS talking to one server address pair."""

    auth_address: tuple[str, int]
    acct_address: tuple[str, int] | None = None
    secret: bytes = b"testing123"
    nas_ip: str = "127.0.0.1"
    nas_identifier: str = "sim-nas"
    timeout: float = 1.0
    retries: int = 2
    message_authenticator: bool = True
    # The local address to send from (e.g. "127.0.0.2": another client on loopback);
    # None: whatever the kernel picks.
    source: str | None = None
    dictionary: Dictionary = field(default_factory=lambda: _dictionary())
    _ids: int = field(default_factory=lambda: secrets.randbelow(256))
    _session_counter: int = 0

    def _next_id(self) -> int:
        self._ids = (self._ids + 1) % 256
        return self._ids

    # -- building -------------------------------------------------------------------

    def access_request(
        self,
        user: str,
        password: str | None = None,
        *,
        chap: bool = False,
        chap_challenge: bool = True,
        mac: str = "AA-BB-CC-DD-EE-01",
        message_authenticator: bool | None = None,
        extra: Iterable[tuple[str, Any]] = (),
    ) -> pp.AuthPacket:
        pkt = pp.AuthPacket(code=pp.AccessRequest, id=self._next_id(), secret=self.secret,
                            authenticator=os.urandom(16), dict=self.dictionary)
        pkt["User-Name"] = user
        if password is not None:
            if chap:
                pw = password.encode()
                chap_id = bytes([secrets.randbelow(256)])
                challenge = os.urandom(16) if chap_challenge else pkt.authenticator
                pkt["CHAP-Password"] = chap_id + hashlib.md5(chap_id + pw + challenge).digest()
                if chap_challenge:
                    pkt["CHAP-Challenge"] = challenge
            else:
                pkt["User-Password"] = pkt.PwCrypt(password)
        pkt["NAS-IP-Address"] = self.nas_ip
        pkt["NAS-Identifier"] = self.nas_identifier
        pkt["NAS-Port-Type"] = 19  # Wireless-802.11
        pkt["Service-Type"] = 1  # Login-User
        pkt["Calling-Station-Id"] = mac
        pkt["Called-Station-Id"] = "11-22-33-44-55-66:hotspot"
        for name, value in extra:
            pkt.AddAttribute(name, value)
        use_ma = self.message_authenticator if message_authenticator is None \
            else message_authenticator
        if use_ma:
            pkt.add_message_authenticator()
        else:
            pkt.message_authenticator = False
        return pkt

    def accounting_request(
        self,
        status: str,
        *,
        user: str | None = None,
        session_id: str | None = None,
        mac: str = "AA-BB-CC-DD-EE-01",
        extra: Iterable[tuple[str, Any]] = (),
        **counters: int,
    ) -> pp.AcctPacket:
        pkt = pp.AcctPacket(code=pp.AccountingRequest, id=self._next_id(), secret=self.secret,
                            dict=self.dictionary)
        pkt["Acct-Status-Type"] = ACCT_STATUS[status]
        pkt["NAS-IP-Address"] = self.nas_ip
        pkt["NAS-Identifier"] = self.nas_identifier
        if user is not None:
            pkt["User-Name"] = user
        if session_id is not None:
            pkt["Acct-Session-Id"] = session_id
            pkt["Calling-Station-Id"] = mac
            pkt["NAS-Port-Type"] = 19
        for name, value in counters.items():
            pkt[name.replace("_", "-")] = value
        for name, value in extra:
            pkt.AddAttribute(name, value)
        return pkt

    def status_server(self, port: str = "auth") -> pp.Packet:
        cls = pp.AuthPacket if port == "auth" else pp.AcctPacket
        pkt = cls(code=pp.StatusServer, id=self._next_id(), secret=self.secret,
                  authenticator=os.urandom(16), dict=self.dictionary)
        pkt["NAS-Identifier"] = self.nas_identifier
        pkt.add_message_authenticator()
        return pkt

    def new_session_id(self) -> str:
        self._session_counter += 1
        return f"{os.getpid():x}{self._session_counter:08x}"

    # -- sending --------------------------------------------------------------------

    @staticmethod
    def encode(pkt: pp.Packet) -> bytes:
        return bytes(pkt.RequestPacket())

    async def send(self, pkt: pp.Packet, *, acct: bool | None = None,
                   data: bytes | None = None) -> Answer:
        """Send, retransmitting the same bytes on timeout; verify the reply."""
        if acct is None:
            acct = pkt.code == pp.AccountingRequest
        address = self.acct_address if acct else self.auth_address
        assert address is not None, "no accounting address configured"
        raw = data if data is not None else self.encode(pkt)
        stream = await self._connect(address)
        try:
            for attempt in range(1, self.retries + 2):
                await stream.send(raw)
                try:
                    reply_raw = await self._await_reply(stream, raw)
                except TimeoutError:
                    continue
                return self._verify(pkt, raw, reply_raw, attempt)
            raise NoReply(f"no reply from {address} after {self.retries + 1} attempts")
        finally:
            stream.close()

    async def _connect(self, address: tuple[str, int]) -> Any:
        if self.source is None:
            return await asyncio_dgram.connect(address)
        sock = socket.socket(socket.AF_INET6 if ":" in self.source else socket.AF_INET,
                             socket.SOCK_DGRAM)
        try:
            sock.bind((self.source, 0))
            sock.connect(address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return await asyncio_dgram.from_socket(sock)

    async def _await_reply(self, stream: asyncio_dgram.aio.DatagramClient, raw: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            data, _ = await asyncio.wait_for(stream.recv(), remaining)
            if len(data) >= 20 and data[1] == raw[1]:
                return bytes(data)

    def _verify(self, pkt: pp.Packet, raw: bytes, reply_raw: bytes, attempts: int) -> Answer:
        reply = pkt.CreateReply(packet=reply_raw)
        if not pkt.VerifyReply(reply, reply_raw, enforce_ma=True):
            raise BadReply("reply failed Response/Message-Authenticator verification")
        if pkt.code in (pp.AccessRequest, pp.StatusServer) and reply_raw[20:21] != b"\x50":
            raise BadReply("Message-Authenticator is not the first attribute (BlastRADIUS)")
        return Answer(reply.code, reply_raw, reply, attempts)

    async def send_raw(self, data: bytes, *, acct: bool = False,
                       wait: float = 0.3) -> bytes | None:
        """Send arbitrary bytes once; return whatever comes back within ``wait``."""
        address = self.acct_address if acct else self.auth_address
        assert address is not None
        stream = await self._connect(address)
        try:
            await stream.send(data)
            try:
                got, _ = await asyncio.wait_for(stream.recv(), wait)
            except TimeoutError:
                return None
            return bytes(got)
        finally:
            stream.close()


def _dictionary() -> Dictionary:
    return load_dictionary()
