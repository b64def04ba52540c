"""Presses that race (issue 4 items 2, 9, 11): a user who taps "Get password" twice,
two tabs, or a NAS retransmitting, gets one SMS."""

import asyncio
from pathlib import Path

from otp_support import (
    ACCEPT,
    MAC,
    PHONE,
    REJECT,
    SENT_EN,
    enter,
    log_in,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    sms_code,
    sms_rows,
)

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import SimulatedNAS


async def test_two_simultaneous_presses_for_one_number_send_one_sms(
        server: Server, nas: SimulatedNAS) -> None:
    other = nas_of(server)  # a second tab / second controller socket
    answers = await asyncio.gather(
        nas.send(nas.access_request("8 701 234 56 78", "", mac=MAC)),
        other.send(other.access_request("+7 (701) 234-56-78", "", chap=True, mac=MAC)),
    )
    assert all(a.code == REJECT for a in answers)
    messages = sorted(reply_message(a) for a in answers)
    assert messages == [SENT_EN, "You can ask for a new password in 60 s"]
    assert len(await sms_rows(server, PHONE)) == 1
    assert len(await password_rows(server)) == 1
    assert (await enter(nas, await sms_code(server, PHONE))).code == ACCEPT


async def test_many_simultaneous_presses_send_one_sms(server: Server, nas: SimulatedNAS) -> None:
    nases = [nas_of(server) for _ in range(20)]
    answers = await asyncio.gather(*(
        n.send(n.access_request("8 701 234 56 78", "", mac=MAC)) for n in nases))
    assert sum(reply_message(a) == SENT_EN for a in answers) == 1
    assert len(await sms_rows(server, PHONE)) == 1


async def test_retransmitted_get_password_is_answered_from_cache_without_second_sms(
        server: Server, nas: SimulatedNAS) -> None:
    """RFC 5080 §2.2.2: the same packet again gets the same reply, not a new SMS."""
    import asyncio_dgram

    pkt = nas.access_request("8 701 234 56 78", "", mac=MAC)
    raw = nas.encode(pkt)
    stream = await asyncio_dgram.connect(nas.auth_address)  # one source port, like a NAS
    try:
        replies = []
        for _ in range(3):
            await stream.send(raw)
            data, _ = await asyncio.wait_for(stream.recv(), 2)
            replies.append(bytes(data))
    finally:
        stream.close()
    assert replies[0] == replies[1] == replies[2]
    assert reply_message(nas._verify(pkt, raw, replies[0], 1)) == SENT_EN
    assert len(await sms_rows(server, PHONE)) == 1


async def test_simultaneous_presses_with_zero_cooldown_leave_one_valid_code(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"resend_after_seconds": 0}) as server:
        nases = [nas_of(server) for _ in range(5)]
        await asyncio.gather(*(
            n.send(n.access_request("8 701 234 56 78", "", mac=MAC)) for n in nases))
        rows = await password_rows(server)
        assert len(rows) == 5
        assert [r["state"] for r in rows].count("issued") == 1
        # Of the five codes sent, exactly one works: the one not superseded.
        codes = [server.sealer.open(r["body"], b"sms").decode().split()[-1]
                 for r in await sms_rows(server, PHONE)]
        accepted = [c for c in codes if (await enter(nases[0], c)).code == ACCEPT]
        assert accepted == [await sms_code(server, PHONE)]


async def test_simultaneous_logins_of_different_users_all_succeed(
        server: Server, clock: ManualClock) -> None:
    users = [(f"8 701 000 00 {i:02d}", f"+770100000{i:02d}", f"AA-BB-CC-DD-00-{i:02d}")
             for i in range(10)]
    nases = [nas_of(server) for _ in users]
    results = await asyncio.gather(*(
        log_in(server, n, typed, e164, mac) for n, (typed, e164, mac) in zip(nases, users,
                                                                               strict=True)))
    assert len({klass for _, klass in results}) == len(users)
    assert len(await sms_rows(server)) == len(users)
