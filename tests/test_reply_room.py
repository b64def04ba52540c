"""A reply must fit in 4,096 octets (RFC 2865 §3) and carry the request's Proxy-State
unmodified (RFC 2865 §5.33). A signed request padded with Proxy-State so that no
reply can fit is dropped before any policy runs: no SMS, no state change, counted,
one log line a minute. Replies that cannot be encoded are logged the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os

import asyncio_dgram
import pytest
from pyrad import packet as pp

from radiusd.app import Server
from radiusd.config import ClientConfig
from radiusd.radius.clients import ClientTable
from radiusd.radius.dedup import DuplicateCache
from radiusd.radius.dictionary import default_codec
from radiusd.radius.endpoint import Endpoint, Process
from radiusd.radius.message import Reply
from radiusd.radius.wire import MAX_PACKET, PROXY_STATE, Code, parse
from radiusd.stats import Stats
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import eventually

PHONE = "+77011234567"


def get_password(nas: SimulatedNAS, proxy_state: int) -> bytes:
    """A signed "Get password" (no User-Password) carrying ``proxy_state`` octets of
    Proxy-State attributes (at least 3), each at most 255 octets on the wire."""
    pkt = pp.AuthPacket(code=pp.AccessRequest, id=os.urandom(1)[0], secret=nas.secret,
                        authenticator=os.urandom(16), dict=nas.dictionary)
    pkt["User-Name"] = PHONE
    left = proxy_state
    while left:
        size = 255 if left >= 258 or left == 255 else (left if left < 255 else left - 3)
        pkt.AddAttribute("Proxy-State", os.urandom(size - 2))
        left -= size
    pkt.add_message_authenticator()
    return nas.encode(pkt)


async def outbox_count(server: Server) -> int:
    row = await server.store.fetchone("SELECT COUNT(*) FROM sms_outbox")
    assert row is not None
    return int(row[0])


async def test_signed_request_whose_reply_cannot_fit_is_dropped_before_any_sms(
        server: Server, nas: SimulatedNAS, caplog: pytest.LogCaptureFixture) -> None:
    """Padded to 4,096 octets: the reply ("Password sent by SMS" + Proxy-State) would
    be longer than any RADIUS packet may be."""
    caplog.set_level(logging.INFO)
    stream = await asyncio_dgram.connect(nas.auth_address)
    try:
        for _ in range(3):
            data = get_password(nas, MAX_PACKET - 20 - (2 + len(PHONE)) - 18)
            assert len(data) == MAX_PACKET
            await stream.send(data)
        dropped = server.stats.dropped
        await eventually(lambda: dropped["reply_too_big"] + dropped["reply_encoding"] == 3)
    finally:
        stream.close()
    assert await outbox_count(server) == 0  # no SMS queued, so none sent
    assert server.stats.dropped["reply_too_big"] == 3
    row = await server.store.fetchone("SELECT COUNT(*) FROM passwords")
    assert row is not None and row[0] == 0  # and no password issued
    lines = [r for r in caplog.records if "Proxy-State" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None  # once a minute, no traceback
    assert not [r for r in caplog.records if r.exc_info]


async def test_signed_request_whose_reply_fits_gets_its_proxy_state_back(
        server: Server, nas: SimulatedNAS) -> None:
    stream = await asyncio_dgram.connect(nas.auth_address)
    try:
        data = get_password(nas, 2000)
        await stream.send(data)
        reply, _ = await asyncio.wait_for(stream.recv(), 5)
    finally:
        stream.close()
    assert reply[0] == Code.ACCESS_REJECT and reply[1] == data[1]  # "Password sent by SMS"
    sent = parse(data).all(PROXY_STATE)
    assert parse(reply).all(PROXY_STATE) == sent and len(sent) == 8  # all back, in order
    assert await outbox_count(server) == 1


def test_reply_that_cannot_be_encoded_is_logged_once_a_minute_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    clients = ClientTable([ClientConfig(name="nas", address="127.0.0.1",
                                        secret="testing123")])
    stats = Stats()
    endpoint = Endpoint("auth", clients, DuplicateCache(5.0), default_codec(), stats)
    nas = SimulatedNAS(("127.0.0.1", 1812))
    too_long = Reply.reject("x" * 300)  # a Reply-Message over 253 octets
    for i in range(3):
        action = endpoint.receive(nas.encode(nas.access_request(PHONE, "1")),
                                  ("127.0.0.1", 40000 + i), 100.0 + i)
        assert isinstance(action, Process)
        assert endpoint.finish(action, too_long, 100.0 + i) is None
    assert stats.dropped["reply_encoding"] == 3
    lines = [r for r in caplog.records if "cannot encode" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
