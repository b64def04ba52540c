"""Disconnect-Requests to a RadSec NAS go over its own TLS connection (RFC 6614 §2.5,
issue 16 item 3): a revoked session is ended on the NAS that holds the connection,
its signed ACK or NAK comes back on it and is recorded on the session."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from radiusd.clock import ManualClock
from radiusd.radius.wire import ZERO16, parse
from tests.otp_support import REJECT, acct, enter, log_in, session_row
from tests.radsec_support import (
    Pki,
    RadsecNas,
    address,
    client_context,
    make_pki,
    radsec_config,
    radsec_server,
)

DISCONNECT_REQUEST, DISCONNECT_ACK, DISCONNECT_NAK = 40, 41, 42
ACCT_SESSION_ID, ERROR_CAUSE = 44, 101
SECRET = b"radsec"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(tmp_path: Path, pki: Pki) -> Any:
    c = radsec_config(tmp_path, pki, clients=[
        {"name": "nas1", "address": "127.0.0.1", "radsec": True,
         "certificate_name": "nas1.example", "coa": "disconnect"}])
    return c.model_copy(update={
        "otp": c.otp.model_copy(update={"max_lifetime_seconds": 3600.0}),
        "accounting": c.accounting.model_copy(update={"stale_after_seconds": 7200.0})})


def answer(request: bytes, code: int, attributes: bytes = b"") -> bytes:
    """The NAS's answer (RFC 5176 §2.3): Response Authenticator over the request's."""
    length = (20 + len(attributes)).to_bytes(2, "big")
    head = bytes((code, request[1])) + length
    return head + hashlib.md5(head + request[4:20] + attributes + SECRET).digest() + attributes


async def online(server: Any, nas: RadsecNas, session: str) -> str:
    code, klass = await log_in(server, nas)  # type: ignore[arg-type]
    await acct(nas, "Start", session, klass=klass)  # type: ignore[arg-type]
    return code


async def test_max_lifetime_sends_the_disconnect_over_the_nas_connection_and_records_the_ack(
    tmp_path: Path, pki: Pki,
) -> None:
    clock = ManualClock(time.time())
    async with radsec_server(config(tmp_path, pki), clock) as server:
        nas = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        code = await online(server, nas, "rs-1")
        clock.advance(3601)
        await server.reaper.run_once()
        request = await nas.read_packet(timeout=10)
        assert request[0] == DISCONNECT_REQUEST
        # RFC 5176 §2.3: signed with the client's secret ("radsec")
        assert hashlib.md5(request[:4] + ZERO16 + request[20:] + SECRET).digest() \
            == request[4:20]
        packet = parse(request)
        assert packet.attributes[0][0] == 80  # Message-Authenticator first
        assert packet.first(ACCT_SESSION_ID) == b"rs-1"
        nas.writer.write(answer(request, DISCONNECT_ACK))
        await server.disconnects.join()
        row = await session_row(server, "rs-1")
        assert row["disconnect_answer"] == "ack"
        assert "Disconnect-ACK from 127.0.0.1" in row["disconnect_detail"]
        assert (await enter(nas, code)).code == REJECT  # type: ignore[arg-type]
        await nas.close()


async def test_a_forged_answer_is_ignored_and_the_real_nak_is_recorded(
    tmp_path: Path, pki: Pki,
) -> None:
    clock = ManualClock(time.time())
    async with radsec_server(config(tmp_path, pki), clock) as server:
        nas = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        await online(server, nas, "rs-2")
        clock.advance(3601)
        await server.reaper.run_once()
        request = await nas.read_packet(timeout=10)
        forged = bytearray(answer(request, DISCONNECT_ACK))
        forged[5] ^= 1  # a Response Authenticator that does not verify
        nas.writer.write(bytes(forged))
        cause = bytes((ERROR_CAUSE, 6)) + (503).to_bytes(4, "big")
        nas.writer.write(answer(request, DISCONNECT_NAK, cause))
        await server.disconnects.join()
        row = await session_row(server, "rs-2")
        assert row["disconnect_answer"] == "nak"
        assert "503" in row["disconnect_detail"]
        assert server.stats.dropped["radsec.coa_forged.response_authenticator"] == 1
        await nas.close()


def by_hand(server: Any) -> None:
    """The server's own handoff poll stopped: the test runs each look itself."""
    for task in server.background:
        if task.get_name() == "radsec-handoffs":
            task.cancel()


async def closed(server: Any, nas: RadsecNas) -> None:
    await nas.close()
    assert server.radsec is not None
    for _ in range(100):  # bounded: the server notices the close
        if not server.radsec.connections:
            break
        await asyncio.sleep(0.02)
    assert not server.radsec.connections


async def ack_next(nas: RadsecNas, sending: asyncio.Future[Any]) -> bytes:
    """The NAS reads the Disconnect-Request that `sending` sends, and ACKs it."""
    request = await nas.read_packet(timeout=10)
    assert request[0] == DISCONNECT_REQUEST
    nas.writer.write(answer(request, DISCONNECT_ACK))
    await sending
    return request


async def test_a_nas_that_connects_again_gets_the_disconnect_left_for_it(
    tmp_path: Path, pki: Pki,
) -> None:
    """No connection open when the session ends: the request is left in the store
    ("handed") and sent over the NAS's next connection, the ACK recorded."""
    clock = ManualClock(time.time())
    async with radsec_server(config(tmp_path, pki), clock) as server:
        by_hand(server)
        nas = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        code = await online(server, nas, "rs-3")
        await closed(server, nas)
        clock.advance(3601)
        await server.reaper.run_once()
        await server.disconnects.join()
        row = await session_row(server, "rs-3")
        assert row["stopped_at"] is not None  # ended here anyway
        assert row["disconnect_answer"] == "handed"
        assert await server.handoffs.run_once() == 0  # nobody holds its connection
        again = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        request = await ack_next(again, asyncio.ensure_future(server.handoffs.run_once()))
        assert parse(request).first(ACCT_SESSION_ID) == b"rs-3"
        row = await session_row(server, "rs-3")
        assert row["disconnect_answer"] == "ack"
        assert await server.handoffs.run_once() == 0  # sent once
        assert (await enter(again, code)).code == REJECT  # type: ignore[arg-type]
        await again.close()


async def test_a_disconnect_nobody_could_send_in_time_is_recorded_as_not_sent(
    tmp_path: Path, pki: Pki,
) -> None:
    from radiusd.handoff import TTL_SECONDS

    clock = ManualClock(time.time())
    async with radsec_server(config(tmp_path, pki), clock) as server:
        by_hand(server)
        nas = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        await online(server, nas, "rs-4")
        await closed(server, nas)
        clock.advance(3601)
        await server.reaper.run_once()
        await server.disconnects.join()
        clock.advance(TTL_SECONDS + 1)
        await server.handoffs.run_once()
        row = await session_row(server, "rs-4")
        assert row["disconnect_answer"] == "timeout"
        assert "not sent: no RadSec connection from client 'nas1' is open" \
            in row["disconnect_detail"]
        again = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        assert await server.handoffs.run_once() == 0  # given up: not sent late
        await again.close()


async def test_an_admin_kick_from_its_own_process_reaches_the_nas_over_the_servers_connection(
    tmp_path: Path, pki: Pki,
) -> None:
    """`radiusd sessions disconnect` runs in a process of its own, which holds no RadSec
    connection: it closes the session, leaves the request, and the server sends it."""
    from radiusd import admin_sessions
    from radiusd.store import sessions as stored_sessions

    clock = ManualClock(time.time())
    cfg = config(tmp_path, pki)
    async with radsec_server(cfg, clock) as server:
        by_hand(server)
        nas = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        code = await online(server, nas, "rs-5")
        login = (await session_row(server, "rs-5"))["login"]

        async def select(db: Any, at: float) -> Any:
            return await stored_sessions.revoke_of_login(db, login, at, "Admin-Reset")

        kicked = await admin_sessions._revoke(cfg, clock.now(), "admin", select)
        assert [answer for _, answer in kicked] == [
            "handed over: the radiusd holding client 'nas1''s RadSec connection sends it "
            "and records the answer here"]
        await ack_next(nas, asyncio.ensure_future(server.handoffs.run_once()))
        row = await session_row(server, "rs-5")
        assert (row["terminate_cause"], row["disconnect_answer"]) == ("Admin-Reset", "ack")
        assert (await enter(nas, code)).code == REJECT  # type: ignore[arg-type]
        await nas.close()


async def test_a_disconnector_without_the_radsec_listener_says_it_could_not_send() -> None:
    """What the admin commands' own process does for a RadSec client: it holds no
    connection, so nothing goes out over UDP with the "radsec" secret."""
    from radiusd.config import ClientConfig
    from radiusd.radius.coa import SessionTarget
    from radiusd.radius.disconnect import Disconnector, routes_from_config

    nas1 = ClientConfig(name="nas1", address="127.0.0.1", radsec=True,
                        certificate_name="nas1.example", coa="disconnect")
    disconnector = Disconnector(routes_from_config([nas1]), ManualClock())
    result = await disconnector.disconnect(SessionTarget("nas1", "127.0.0.1", "u"), 0.0)
    assert result.outcome == "timeout" and result.attempts == 0
    assert result.describe() == "not sent: no RadSec connection from client 'nas1' is open"
    assert disconnector.local_addresses() == []  # no UDP socket was opened
    await disconnector.close()
