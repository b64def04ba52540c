"""The real server on loopback, spoken to over UDP by the simulated NAS and by raw
datagrams: who gets an answer, who is silently dropped (and counted), and how
retransmissions are treated (RFC 2865 §3, RFC 2866 §3, RFC 3579 §3.2, RFC 5080 §2.2.2,
RFC 5997, BlastRADIUS).

"No reply" is shown without waiting for time to pass: after the datagram under test,
a Status-Server goes out on the same socket, and the first thing to come back must be
its answer (one listener reads datagrams in order). Drops are also read from the
server's counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncio_dgram
import pytest
from pyrad import packet as pp

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.config import ClientConfig
from radiusd.radius.clients import ClientTable
from radiusd.radius.dedup import DuplicateCache
from radiusd.radius.dictionary import default_codec
from radiusd.radius.endpoint import Endpoint, Process
from radiusd.radius.message import Outcome, Reply, Request
from radiusd.radius.wire import Code
from radiusd.stats import Stats
from radiusd.testing.nas import BadReply, NoReply, SimulatedNAS
from radiusd.testing.server import eventually, loopback_config, nas_for, running_server

SECRET = b"testing123"
PHONE = "+77011234567"


# -- helpers ---------------------------------------------------------------------------


def response_ok(request: bytes, reply: bytes, secret: bytes = SECRET) -> bool:
    """RFC 2865 §3 Response Authenticator, computed here independently."""
    expected = hashlib.md5(reply[:4] + request[4:20] + reply[20:] + secret).digest()
    return reply[1] == request[1] and expected == reply[4:20]


class Probe:
    """One UDP socket kept open (a fixed source port), as a NAS has."""

    def __init__(self, stream: asyncio_dgram.aio.DatagramClient, nas: SimulatedNAS,
                 acct: bool) -> None:
        self.stream = stream
        self.nas = nas
        self.acct = acct

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def recv(self, timeout: float = 3.0) -> bytes:
        data, _ = await asyncio.wait_for(self.stream.recv(), timeout)
        return bytes(data)

    async def exchange(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.recv()

    async def assert_dropped(self, data: bytes) -> None:
        """Send ``data``, then a Status-Server: only the Status-Server is answered."""
        await self.send(data)
        await self.assert_alive(avoid_id=data[1] if len(data) > 1 else None)

    async def assert_alive(self, avoid_id: int | None = None) -> None:
        status = self.nas.status_server("acct" if self.acct else "auth")
        if status.id == avoid_id:
            status.id = (status.id + 1) % 256
        raw = self.nas.encode(status)
        reply = await self.exchange(raw)
        assert reply[1] == raw[1], "a reply came back to the dropped datagram"
        assert reply[0] == (Code.ACCOUNTING_RESPONSE if self.acct else Code.ACCESS_ACCEPT)
        assert response_ok(raw, reply, self.nas.secret)


async def probe(nas: SimulatedNAS, acct: bool = False) -> Probe:
    address = nas.acct_address if acct else nas.auth_address
    assert address is not None
    return Probe(await asyncio_dgram.connect(address), nas, acct)


def client(require_ma: Any = "auto", address: Any = ("127.0.0.1", "::1"),
           secret: str = "testing123") -> dict[str, Any]:
    return {"name": "hotspot-1", "address": list(address), "secret": secret,
            "require_message_authenticator": require_ma}


@pytest.fixture
async def server_for(tmp_path: Path, clock: ManualClock) -> AsyncIterator[
        Callable[..., Any]]:
    """Start a server with a given client list (one per test)."""
    stack: list[Any] = []

    async def start(clients: list[dict[str, Any]], ipv6: bool = True) -> Server:
        sections: dict[str, Any] = {"clients": clients}
        cm = running_server(loopback_config(tmp_path, ipv6=ipv6, **sections), clock)
        stack.append(cm)
        return await cm.__aenter__()

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def quick(server: Server, family: int = 4, **kw: Any) -> SimulatedNAS:
    """A NAS that gives up fast: for requests expected to get no answer."""
    kw.setdefault("timeout", 0.3)
    kw.setdefault("retries", 0)
    return nas_for(server, family, **kw)


def value_offset(raw: bytes, attr_type: int) -> int:
    pos = 20
    while raw[pos] != attr_type:
        pos += raw[pos + 1]
    return pos + 2


def header(code: int, length: int, identifier: int = 99) -> bytes:
    return struct.pack("!BBH", code, identifier, length) + os.urandom(16)


class FixedAuth:
    """An auth policy that answers every Access-Request with ``code`` (tests only)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.calls = 0

    async def authorize(self, request: Request, now: float) -> object | Outcome:
        self.calls += 1
        reply = Reply(self.code).add("Reply-Message", "hello")
        if self.code == Code.ACCESS_CHALLENGE:
            reply.add("State", b"state-1")
        if self.code == Code.ACCESS_ACCEPT:
            reply.add("Session-Timeout", 3600).add("Class", b"token")
        return reply

    async def authenticate(self, request: Request, context: object, now: float) -> bool:
        return True

    async def post_auth(self, request: Request, context: object, ok: bool,
                        now: float) -> Outcome:
        return Reply(self.code)


class CountingAuth:
    """Wraps the server's auth policy and counts how often a request reaches it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def authorize(self, request: Request, now: float) -> object | Outcome:
        self.calls += 1
        result: object | Outcome = await self.inner.authorize(request, now)
        return result

    async def authenticate(self, request: Request, context: object, now: float) -> bool:
        ok: bool = await self.inner.authenticate(request, context, now)
        return ok

    async def post_auth(self, request: Request, context: object, ok: bool,
                        now: float) -> Outcome:
        out: Outcome = await self.inner.post_auth(request, context, ok, now)
        return out


# -- unknown clients -------------------------------------------------------------------


async def test_request_from_unknown_address_is_silently_discarded_and_counted(
    server_for: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    # Only ::1 is a client: 127.0.0.1 is not.
    server: Server = await server_for([client(address=["::1"])])
    nas4 = quick(server)
    caplog.set_level(logging.WARNING, logger="radiusd.radius")
    with pytest.raises(NoReply):
        await nas4.send(nas4.status_server())
    for _ in range(3):
        assert await nas4.send_raw(nas4.encode(nas4.access_request(PHONE, "1")), wait=0.1) \
            is None
    await eventually(lambda: server.stats.dropped["unknown_client"] == 4)
    logged = [r for r in caplog.records if "127.0.0.1" in r.getMessage()]
    assert len(logged) == 1  # at most once a minute per address
    assert "no client matches" in logged[0].getMessage()
    # The real client still gets answers.
    nas6 = nas_for(server, 6, timeout=1.0, retries=0)
    assert (await nas6.send(nas6.status_server())).code == Code.ACCESS_ACCEPT


def test_unknown_address_is_logged_again_after_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clients = ClientTable([ClientConfig(name="nas", address="10.0.0.0/24",
                                        secret="sixteen-chars-ok")])
    ep = Endpoint("auth", clients, DuplicateCache(5.0), default_codec(), Stats())
    datagram = header(Code.ACCESS_REQUEST, 20)
    caplog.set_level(logging.WARNING, logger="radiusd.radius")

    def logged(host: str) -> int:
        return sum(host in r.getMessage() for r in caplog.records)

    for now in (100.0, 130.0, 159.9):
        ep.receive(datagram, ("192.0.2.1", 1000), now)
    assert logged("192.0.2.1") == 1
    ep.receive(datagram, ("192.0.2.2", 1000), 150.0)  # another address: its own line
    assert logged("192.0.2.2") == 1
    ep.receive(datagram, ("192.0.2.1", 1000), 160.0)
    assert logged("192.0.2.1") == 2
    assert ep.stats.dropped["unknown_client"] == 5


# -- shared secret and authenticators --------------------------------------------------


async def test_wrong_secret_gets_no_reply(server: Server) -> None:
    wrong = quick(server, secret=b"not-the-secret")
    with pytest.raises(NoReply):
        await wrong.send(wrong.status_server())
    with pytest.raises(NoReply):
        await wrong.send(wrong.access_request(PHONE, "123456"))
    with pytest.raises(NoReply):
        await wrong.send(wrong.accounting_request("Start", user=PHONE, session_id="s1"))
    assert server.stats.dropped["bad_message_authenticator"] == 2
    assert server.stats.dropped["bad_authenticator"] == 1


async def test_unsigned_request_with_wrong_secret_gets_no_verifiable_reply(
    server_for: Callable[..., Any],
) -> None:
    server: Server = await server_for([client(require_ma=False)])
    wrong = quick(server, secret=b"not-the-secret", message_authenticator=False)
    with pytest.raises(BadReply):
        await wrong.send(wrong.access_request(PHONE, "123456"))


async def test_bad_message_authenticator_is_dropped(server: Server, nas: SimulatedNAS) -> None:
    raw = nas.encode(nas.access_request(PHONE, "123456"))
    tampered_ma = bytearray(raw)
    tampered_ma[value_offset(raw, 80)] ^= 0x01
    tampered_name = bytearray(raw)
    tampered_name[value_offset(raw, 1)] ^= 0x01  # User-Name
    p = await probe(nas)
    try:
        await p.assert_dropped(bytes(tampered_ma))
        await p.assert_dropped(bytes(tampered_name))
    finally:
        p.stream.close()
    assert server.stats.dropped["bad_message_authenticator"] == 2


async def test_bad_accounting_authenticator_is_dropped(server: Server, nas: SimulatedNAS) -> None:
    raw = bytearray(nas.encode(nas.accounting_request("Start", user=PHONE, session_id="s9")))
    flipped_auth = bytearray(raw)
    flipped_auth[4] ^= 0x01
    flipped_attr = bytearray(raw)
    flipped_attr[-1] ^= 0x01
    p = await probe(nas, acct=True)
    try:
        await p.assert_dropped(bytes(flipped_auth))
        await p.assert_dropped(bytes(flipped_attr))
        reply = await p.exchange(bytes(raw))  # the untouched one is answered
        assert reply[0] == Code.ACCOUNTING_RESPONSE and response_ok(bytes(raw), reply)
    finally:
        p.stream.close()
    assert server.stats.dropped["bad_authenticator"] == 2
    row = await server.store.fetchone("SELECT count(*) AS n FROM sessions")
    assert row is not None and row["n"] == 1


# -- require_message_authenticator -----------------------------------------------------


async def test_require_true_drops_access_request_without_message_authenticator(
    server_for: Callable[..., Any],
) -> None:
    server: Server = await server_for([client(require_ma=True)])
    nas = quick(server)
    with pytest.raises(NoReply):
        await nas.send(nas.access_request(PHONE, "123456", message_authenticator=False))
    assert server.stats.dropped["missing_message_authenticator"] == 1
    answer = await nas.send(nas.access_request(PHONE, "123456", message_authenticator=True))
    assert answer.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)


async def test_require_auto_requires_message_authenticator_once_seen(
    server_for: Callable[..., Any],
) -> None:
    server: Server = await server_for([client(require_ma="auto")])
    nas = quick(server)
    # Before it has sent one, a NAS without Message-Authenticator is served.
    first = await nas.send(nas.access_request(PHONE, "1", message_authenticator=False))
    assert first.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)
    signed = await nas.send(nas.access_request(PHONE, "1", message_authenticator=True))
    assert signed.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)
    # From then on an unsigned one is the BlastRADIUS downgrade: dropped.
    with pytest.raises(NoReply):
        await nas.send(nas.access_request(PHONE, "1", message_authenticator=False))
    assert server.stats.dropped["missing_message_authenticator"] == 1
    # Learned per client, as FreeRADIUS 3.2.5 does: another address of the same client
    # (a spoofer picking a neighbour) is held to it too.
    nas6 = quick(server, 6)
    with pytest.raises(NoReply):
        await nas6.send(nas6.access_request(PHONE, "1", message_authenticator=False))
    assert server.stats.dropped["missing_message_authenticator"] == 2


async def test_status_server_does_not_teach_auto_mode(server_for: Callable[..., Any]) -> None:
    server: Server = await server_for([client(require_ma="auto")])
    nas = quick(server)
    await nas.send(nas.status_server())  # always signed; says nothing about Access-Request
    answer = await nas.send(nas.access_request(PHONE, "1", message_authenticator=False))
    assert answer.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)


async def test_require_false_serves_old_routeros_without_message_authenticator(
    server_for: Callable[..., Any],
) -> None:
    server: Server = await server_for([client(require_ma=False)])
    nas = quick(server)
    for use_ma in (False, True, False, False):
        answer = await nas.send(nas.access_request(PHONE, "1", message_authenticator=use_ma))
        assert answer.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)
        assert answer.first_attribute_type == 80  # replies are signed all the same
    chap = await nas.send(nas.access_request(PHONE, "1", chap=True, message_authenticator=False))
    assert chap.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)
    assert not server.stats.dropped


@pytest.mark.parametrize("require_ma", ["auto", False])
async def test_unsigned_access_request_with_proxy_state_is_dropped(
    server_for: Callable[..., Any], require_ma: Any,
) -> None:
    server: Server = await server_for([client(require_ma=require_ma)])
    nas = quick(server)
    with pytest.raises(NoReply):
        await nas.send(nas.access_request(PHONE, "1", message_authenticator=False,
                                          extra=[("Proxy-State", b"\x01\x02")]))
    assert server.stats.dropped["proxy_state_without_message_authenticator"] == 1


async def test_unsigned_access_request_with_eap_message_is_dropped(
    server_for: Callable[..., Any],
) -> None:
    server: Server = await server_for([client(require_ma=False)])
    nas = quick(server)
    with pytest.raises(NoReply):
        await nas.send(nas.access_request(PHONE, message_authenticator=False,
                                          extra=[("EAP-Message", b"\x02\x01\x00\x05\x01")]))
    assert server.stats.dropped["missing_message_authenticator"] == 1


async def test_signed_access_request_with_proxy_state_gets_it_back_in_order(
    server: Server, nas: SimulatedNAS,
) -> None:
    answer = await nas.send(nas.access_request(
        PHONE, "1", extra=[("Proxy-State", b"one"), ("Proxy-State", b"two")]))
    assert answer.first_attribute_type == 80
    assert answer.all("Proxy-State") == [b"one", b"two"]


# -- every Access reply is signed, Message-Authenticator first ------------------------


@pytest.mark.parametrize(
    "code", [Code.ACCESS_ACCEPT, Code.ACCESS_REJECT, Code.ACCESS_CHALLENGE],
    ids=["accept", "reject", "challenge"])
@pytest.mark.parametrize(
    "how", ["pap", "chap", "chap-no-challenge", "pap-unsigned"])
async def test_access_reply_has_message_authenticator_first_and_verifies(
    server: Server, nas: SimulatedNAS, code: int, how: str,
) -> None:
    assert server.dispatcher is not None
    server.dispatcher.auth = FixedAuth(code)
    pkt = nas.access_request(PHONE, "123456", chap=how.startswith("chap"),
                             chap_challenge=how == "chap",
                             message_authenticator=not how.endswith("unsigned"))
    answer = await nas.send(pkt)  # SimulatedNAS verifies both authenticators
    assert answer.code == code
    assert answer.first_attribute_type == 80
    assert response_ok(_request_bytes(pkt), answer.raw)


def _request_bytes(pkt: pp.Packet) -> bytes:
    # The request as sent: header and authenticator are what the reply is bound to.
    return bytes([pkt.code, pkt.id, 0, 0]) + bytes(pkt.authenticator)


async def test_current_policy_answers_access_request_with_a_signed_reply(
    nas: SimulatedNAS,
) -> None:
    """Whatever the auth policy decides, the NAS gets a verifiable Accept or Reject."""
    for chap in (False, True):
        answer = await nas.send(nas.access_request(PHONE, "123456", chap=chap))
        assert answer.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)
        assert answer.first_attribute_type == 80


async def test_signed_accounting_request_gets_signed_response(nas: SimulatedNAS) -> None:
    pkt = nas.accounting_request("Start", user=PHONE, session_id="signed-1")
    pkt.add_message_authenticator()
    answer = await nas.send(pkt)
    assert answer.code == Code.ACCOUNTING_RESPONSE
    assert answer.first_attribute_type == 80


# -- malformed datagrams ---------------------------------------------------------------

MALFORMED: dict[str, tuple[bytes, str]] = {
    "short": (b"\x01\x02\x00\x13" + bytes(15), "short"),
    "too_long": (header(1, 4097) + bytes(4077), "too_long"),
    "length_larger": (header(1, 40) + b"\x01\x06abcd", "length_mismatch"),
    "length_smaller": (header(1, 20) + b"\x01\x06abcd", "length_mismatch"),
    "attribute_length_0": (header(1, 24) + b"\x01\x00ab", "attribute_length"),
    "attribute_length_1": (header(1, 24) + b"\x01\x01ab", "attribute_length"),
    "attribute_past_end": (header(1, 26) + b"\x01\x09abcd", "attribute_overrun"),
    "attribute_truncated": (header(1, 21) + b"\x01", "attribute_truncated"),
    "message_authenticator_long": (header(1, 39) + b"\x50\x13" + bytes(17),
                                   "message_authenticator_length"),
    "message_authenticator_short": (header(1, 30) + b"\x50\x0a" + bytes(8),
                                    "message_authenticator_length"),
    "message_authenticator_twice": (header(1, 56) + (b"\x50\x12" + bytes(16)) * 2,
                                    "message_authenticator_twice"),
    "unknown_code": (header(99, 20), "unknown_code"),
    "code_0": (header(0, 20), "unknown_code"),
}


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("acct", [False, True], ids=["auth", "acct"])
async def test_malformed_datagram_is_dropped_counted_and_server_keeps_answering(
    server: Server, nas: SimulatedNAS, data: bytes, reason: str, acct: bool,
) -> None:
    p = await probe(nas, acct=acct)
    try:
        await p.assert_dropped(data)
    finally:
        p.stream.close()
    assert server.stats.dropped == {f"malformed.{reason}": 1}


async def test_burst_of_every_malformed_kind_does_not_stall_the_server(
    server: Server, nas: SimulatedNAS,
) -> None:
    p = await probe(nas)
    try:
        for data, _ in MALFORMED.values():
            await p.send(data)
        await p.assert_alive()
    finally:
        p.stream.close()
    assert sum(server.stats.dropped.values()) == len(MALFORMED)
    answer = await nas.send(nas.access_request(PHONE, "123456"))
    assert answer.code in (Code.ACCESS_ACCEPT, Code.ACCESS_REJECT)


# -- codes and ports -------------------------------------------------------------------


@pytest.mark.parametrize("acct", [False, True], ids=["auth", "acct"])
async def test_status_server_without_message_authenticator_is_dropped(
    server: Server, nas: SimulatedNAS, acct: bool,
) -> None:
    nas_id = b"sim-nas"
    data = header(Code.STATUS_SERVER, 20 + 2 + len(nas_id)) + bytes((32, 2 + len(nas_id))) \
        + nas_id
    p = await probe(nas, acct=acct)
    try:
        await p.assert_dropped(data)
    finally:
        p.stream.close()
    assert server.stats.dropped == {"missing_message_authenticator": 1}


async def test_access_request_to_accounting_port_is_dropped(
    server: Server, nas: SimulatedNAS,
) -> None:
    p = await probe(nas, acct=True)
    try:
        await p.assert_dropped(nas.encode(nas.access_request(PHONE, "123456")))
    finally:
        p.stream.close()
    assert server.stats.dropped == {"unexpected_code": 1}


async def test_accounting_request_to_auth_port_is_dropped(
    server: Server, nas: SimulatedNAS,
) -> None:
    p = await probe(nas)
    try:
        await p.assert_dropped(nas.encode(nas.accounting_request("Accounting-On")))
    finally:
        p.stream.close()
    assert server.stats.dropped == {"unexpected_code": 1}


@pytest.mark.parametrize("code", [Code.ACCESS_ACCEPT, Code.ACCOUNTING_RESPONSE,
                                  Code.DISCONNECT_REQUEST, Code.COA_REQUEST,
                                  Code.STATUS_CLIENT])
async def test_non_request_codes_are_dropped(server: Server, nas: SimulatedNAS,
                                             code: int) -> None:
    p = await probe(nas)
    try:
        await p.assert_dropped(header(code, 20))
    finally:
        p.stream.close()
    assert server.stats.dropped == {"unexpected_code": 1}


# -- duplicates, RFC 5080 §2.2.2 -------------------------------------------------------


async def test_retransmission_gets_the_byte_identical_reply_without_reprocessing(
    server: Server, nas: SimulatedNAS,
) -> None:
    assert server.dispatcher is not None
    counting = CountingAuth(server.dispatcher.auth)
    server.dispatcher.auth = counting
    raw = nas.encode(nas.access_request(PHONE, "123456"))
    p = await probe(nas)
    try:
        first = await p.exchange(raw)
        again = await p.exchange(raw)
        third = await p.exchange(raw)
    finally:
        p.stream.close()
    assert response_ok(raw, first)
    assert again == first and third == first
    assert counting.calls == 1
    assert server.stats.counts["duplicate.resent"] == 2


async def test_same_bytes_from_another_source_port_is_a_new_request(
    server: Server, nas: SimulatedNAS,
) -> None:
    assert server.dispatcher is not None
    counting = CountingAuth(server.dispatcher.auth)
    server.dispatcher.auth = counting
    raw = nas.encode(nas.access_request(PHONE, "123456"))
    for _ in range(2):
        p = await probe(nas)
        try:
            assert response_ok(raw, await p.exchange(raw))
        finally:
            p.stream.close()
    assert counting.calls == 2
    assert server.stats.counts["duplicate.resent"] == 0


async def test_duplicate_arriving_while_original_is_processed_is_dropped(
    server: Server, nas: SimulatedNAS, monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[Any] = []
    entered = asyncio.Event()
    release = asyncio.Event()
    original = server.store.write

    async def slow_write(ops: Any) -> None:
        if "dup-1" in repr(ops):  # only this session's record; other writers pass
            writes.append(ops)
            entered.set()
            await release.wait()
        await original(ops)

    monkeypatch.setattr(server.store, "write", slow_write)
    raw = nas.encode(nas.accounting_request("Start", user=PHONE, session_id="dup-1"))
    p = await probe(nas, acct=True)
    try:
        await p.send(raw)
        await asyncio.wait_for(entered.wait(), 3)
        await p.send(raw)  # the NAS retransmits while the record is being written
        await p.send(raw)
        await eventually(lambda: server.stats.dropped["duplicate_in_progress"] == 2)
        release.set()
        reply = await p.recv()
        assert reply[0] == Code.ACCOUNTING_RESPONSE and response_ok(raw, reply)
        await p.assert_alive()  # exactly one reply came for the three copies
        assert await p.exchange(raw) == reply  # and, once answered, it is resent
    finally:
        p.stream.close()
    assert len(writes) == 1
    row = await server.store.fetchone("SELECT count(*) AS n FROM sessions")
    assert row is not None and row["n"] == 1


async def test_request_dropped_by_policy_may_be_retried(
    server: Server, nas: SimulatedNAS,
) -> None:
    """A Drop from the policy leaves nothing in the cache: the retransmission is
    processed (e.g. after a transient failure), not ignored."""
    raw = nas.encode(nas.accounting_request("Start", user=PHONE))  # no Acct-Session-Id
    p = await probe(nas, acct=True)
    try:
        await p.assert_dropped(raw)
        await p.assert_dropped(raw)
    finally:
        p.stream.close()
    assert server.stats.dropped == {"acct_session_id_missing": 2}


# -- shutdown --------------------------------------------------------------------------


async def test_stop_lets_an_in_flight_request_finish_and_reply(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = Server(loopback_config(tmp_path), clock)
    await server.start()
    entered = asyncio.Event()
    release = asyncio.Event()
    original = server.store.write

    async def slow_write(ops: Any) -> None:
        if "in-flight-1" in repr(ops):
            entered.set()
            await release.wait()
        await original(ops)

    monkeypatch.setattr(server.store, "write", slow_write)
    nas = nas_for(server)
    raw = nas.encode(nas.accounting_request("Start", user=PHONE, session_id="in-flight-1"))
    p = await probe(nas, acct=True)
    stopping: asyncio.Task[None] | None = None
    try:
        await p.send(raw)
        await asyncio.wait_for(entered.wait(), 3)
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0)  # let stop() begin: it must now wait for the request
        assert not stopping.done()
        release.set()
        reply = await p.recv()
        assert reply[0] == Code.ACCOUNTING_RESPONSE and response_ok(raw, reply)
        await asyncio.wait_for(stopping, 10)
    finally:
        p.stream.close()
        if stopping is None or not stopping.done():
            release.set()
            await server.stop()
    with sqlite3.connect(tmp_path / "radiusd.db") as db:
        n = db.execute("SELECT count(*) FROM sessions WHERE acct_session_id = 'in-flight-1'")
        assert n.fetchone()[0] == 1


async def test_wrong_secret_is_logged_once_a_minute_while_it_happens(
    server: Server, caplog: pytest.LogCaptureFixture,
) -> None:
    """The most common NAS misconfiguration shows in the log, not only in counters."""
    caplog.set_level(logging.WARNING, logger="radiusd.radius")
    wrong = quick(server)
    wrong.secret = b"not-the-secret"
    for _ in range(3):
        with pytest.raises(NoReply):
            await wrong.send(wrong.status_server())
    lines = [r.getMessage() for r in caplog.records if "shared secret" in r.getMessage()]
    assert len(lines) == 1
    assert "client localhost" in lines[0] and "testing123" not in lines[0]


def test_the_same_bytes_on_the_auth_and_the_acct_port_are_two_requests() -> None:
    """Found by the endpoint fuzzer: the duplicate cache is shared by both ports, and a
    Status-Server sent byte for byte to 1812 and then to 1813 from one source port got
    the cached Access-Accept from 1813 (RFC 5997 §3: Accounting-Response there)."""
    clients = ClientTable([ClientConfig(name="nas", address="127.0.0.1", secret="testing123")])
    dedup, codec, stats = DuplicateCache(5.0), default_codec(), Stats()
    auth = Endpoint("auth", clients, dedup, codec, stats)
    acct = Endpoint("acct", clients, dedup, codec, stats)
    nas = SimulatedNAS(("127.0.0.1", 1812), secret=b"testing123")
    datagram = nas.encode(nas.status_server("auth"))
    source = ("127.0.0.1", 40000)
    first = auth.receive(datagram, source, 1.0)
    assert isinstance(first, Process)
    reply = auth.finish(first, Reply(Code.ACCESS_ACCEPT), 1.0)
    assert reply is not None and reply[0] == Code.ACCESS_ACCEPT
    second = acct.receive(datagram, source, 1.1)
    assert isinstance(second, Process), second
    answer = acct.finish(second, Reply(Code.ACCOUNTING_RESPONSE), 1.1)
    assert answer is not None and answer[0] == Code.ACCOUNTING_RESPONSE
