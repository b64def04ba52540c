"""RFC 5176 Disconnect-Request client: what the NAS receives, what we believe back.

The sans-IO part (`CoaClient`) is driven with explicit times; the loopback part sends
to `radiusd.testing.coa_nas.CoaNas`, which reads our requests with pyrad.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import struct
from pathlib import Path

import pytest
from pyrad import packet as pp

from radiusd.cli import main
from radiusd.clock import ManualClock
from radiusd.config import ClientConfig, ConfigError, load
from radiusd.radius.coa import (
    Backoff,
    CoaClient,
    Done,
    SessionTarget,
    error_cause_name,
    session_attributes,
)
from radiusd.radius.dictionary import default_codec, load_dictionary
from radiusd.radius.disconnect import (
    CoaRoute,
    Disconnector,
    DisconnectQueue,
    DisconnectResult,
    routes_from_config,
)
from radiusd.radius.wire import Code
from radiusd.testing.coa_nas import CoaNas

SECRET = b"coa-secret-sixteen"
NAS = ("127.0.0.1", 3799)
T0 = 1_767_225_600.0
TARGET = SessionTarget(
    client="hotspot", nas_source="127.0.0.1", user_name="+77011234567",
    acct_session_id="81a0000f", calling_station_id="AA-BB-CC-DD-EE-01",
    framed_ip_address="10.5.50.23", nas_ip_address="127.0.0.1", nas_identifier="hs-1",
)
FAST = Backoff(initial=0.05, maximum=0.1, attempts=3, duration=0.5, jitter=0.0)


def disconnect_request(client: CoaClient, now: float = 0.0,
                       destination: tuple[str, int] = NAS) -> tuple[int, bytes]:
    ticket = client.submit(destination, Code.DISCONNECT_REQUEST,
                           session_attributes(TARGET, T0, default_codec()), SECRET, now)
    sent = client.datagrams_to_send()
    return ticket, sent[-1][0] if sent else b""


def answer(request: bytes, *, nak: bool = False, cause: int | None = None,
           sign: bool = True, secret: bytes = SECRET) -> bytes:
    """The NAS's answer, built by pyrad (RFC 5176 §3.4 Message-Authenticator)."""
    pkt = pp.CoAPacket(packet=request, secret=secret, dict=load_dictionary())
    reply = pkt.CreateReply()
    if nak:
        reply.code = pp.DisconnectNAK
    if cause is not None:
        reply["Error-Cause"] = cause
    if sign:
        reply.add_message_authenticator()
    return bytes(reply.ReplyPacket())


def freeradius_style_ack(request: bytes) -> bytes:
    """Disconnect-ACK signed as FreeRADIUS 3's rad_sign does: the Message-Authenticator
    over 16 zero octets instead of the Request Authenticator."""
    body = bytes((80, 18)) + bytes(16)
    head = struct.pack("!BBH", Code.DISCONNECT_ACK, request[1], 20 + len(body))
    ma = hmac.new(SECRET, head + bytes(16) + body, hashlib.md5).digest()
    body = body[:2] + ma
    return head + hashlib.md5(head + request[4:20] + body + SECRET).digest() + body


def only(done: list[Done]) -> Done:
    assert len(done) == 1, done
    return done[0]


# -- what the NAS receives --------------------------------------------------------------

def test_disconnect_request_identifies_the_session_and_passes_pyrad_verification() -> None:
    _, raw = disconnect_request(CoaClient())
    pkt = pp.CoAPacket(packet=raw, secret=SECRET, dict=load_dictionary())
    assert pkt.code == pp.DisconnectRequest
    assert pkt.VerifyCoARequest()
    assert pkt.message_authenticator and pkt.verify_message_authenticator()
    assert raw[20] == 80  # Message-Authenticator first
    assert pkt["User-Name"] == ["+77011234567"]
    assert pkt["Acct-Session-Id"] == ["81a0000f"]
    assert pkt["Calling-Station-Id"] == ["AA-BB-CC-DD-EE-01"]
    assert pkt["Framed-IP-Address"] == ["10.5.50.23"]
    assert pkt["NAS-IP-Address"] == ["127.0.0.1"]
    assert pkt["NAS-Identifier"] == ["hs-1"]
    assert pkt["Event-Timestamp"] == [int(T0)]


def test_a_request_signed_with_another_secret_fails_the_nas_check() -> None:
    _, raw = disconnect_request(CoaClient())
    pkt = pp.CoAPacket(packet=raw, secret=b"other", dict=load_dictionary())
    assert not pkt.VerifyCoARequest()
    assert not pkt.verify_message_authenticator()


def test_attributes_the_session_lacks_are_left_out() -> None:
    bare = SessionTarget(client="c", nas_source="10.0.0.1", acct_session_id="42")
    names = [default_codec().by_key(t) for t, _ in session_attributes(bare, T0,
                                                                      default_codec())]
    assert [a.name for a in names if a] == ["Acct-Session-Id", "Event-Timestamp"]


# -- answers ------------------------------------------------------------------------

def test_ack_ends_the_request() -> None:
    client = CoaClient()
    ticket, raw = disconnect_request(client)
    client.receive(answer(raw), NAS, 0.01)
    done = only(client.completed())
    assert (done.ticket, done.outcome, done.attempts) == (ticket, "ack", 1)
    assert client.outstanding == 0


def test_nak_keeps_its_error_cause_and_name() -> None:
    client = CoaClient()
    _, raw = disconnect_request(client)
    client.receive(answer(raw, nak=True, cause=503), NAS, 0.01)
    done = only(client.completed())
    assert (done.outcome, done.code, done.error_cause) == ("nak", Code.DISCONNECT_NAK, 503)
    assert error_cause_name(done.error_cause) == "Session-Context-Not-Found"
    assert error_cause_name(599) == "Error-Cause-599"


def test_an_unsigned_answer_is_taken_on_its_response_authenticator() -> None:
    client = CoaClient()
    _, raw = disconnect_request(client)
    client.receive(answer(raw, sign=False), NAS, 0.01)
    assert only(client.completed()).outcome == "ack"


def test_freeradius_zero_vector_message_authenticator_is_accepted() -> None:
    client = CoaClient()
    _, raw = disconnect_request(client)
    client.receive(freeradius_style_ack(raw), NAS, 0.01)
    assert only(client.completed()).outcome == "ack"


@pytest.mark.parametrize(("forge", "reason"), [
    ("secret", "response_authenticator"),
    ("identifier", "unknown_identifier"),
    ("source", "wrong_source"),
    ("code", "unexpected_code"),
    ("message_authenticator", "message_authenticator"),
    ("truncated", "malformed"),
])
def test_a_forged_ack_is_ignored_and_counted(forge: str, reason: str) -> None:
    client = CoaClient()
    _, raw = disconnect_request(client)
    real = answer(raw, nak=True, cause=503)
    good_ack = answer(raw)
    source = NAS
    if forge == "secret":
        forged = answer(raw, secret=b"guess")
    elif forge == "identifier":
        forged = good_ack[:1] + bytes(((raw[1] + 1) % 256,)) + good_ack[2:]
    elif forge == "source":
        forged, source = good_ack, ("127.0.0.2", 3799)
    elif forge == "code":  # an Accounting-Response, correctly signed
        b = bytearray(answer(raw, sign=False))
        b[0] = Code.ACCOUNTING_RESPONSE
        b[4:20] = hashlib.md5(bytes(b[:4]) + raw[4:20] + bytes(b[20:]) + SECRET).digest()
        forged = bytes(b)
    elif forge == "message_authenticator":  # right Response Authenticator, MA zeroed
        b = bytearray(good_ack)
        b[22:38] = bytes(16)
        b[4:20] = hashlib.md5(bytes(b[:4]) + raw[4:20] + bytes(b[20:]) + SECRET).digest()
        forged = bytes(b)
    else:
        forged = good_ack[:30]
    client.receive(forged, source, 0.01)
    assert client.completed() == []
    assert client.forged == {reason: 1}
    client.receive(real, NAS, 0.02)
    assert only(client.completed()).outcome == "nak"


def test_a_late_duplicate_answer_is_not_called_forged() -> None:
    client = CoaClient(Backoff(jitter=0.0))
    _, raw = disconnect_request(client)
    client.handle_timer(1.0)  # retransmitted; the NAS answers both
    client.receive(answer(raw), NAS, 1.01)
    client.receive(answer(raw), NAS, 1.02)
    assert only(client.completed()).outcome == "ack"
    assert client.forged == {}
    assert client.counters["late_duplicates"] == 1


# -- retransmission --------------------------------------------------------------------

def test_retransmissions_repeat_the_same_datagram_with_growing_waits() -> None:
    """RFC 5080 §2.2.1: same Identifier and Request Authenticator; 1, 2, 4, 8 s apart,
    five sends, then the request ends as a timeout 20 s after the first."""
    client = CoaClient(Backoff(jitter=0.0))
    _, raw = disconnect_request(client)
    sent_at = [0.0]
    t = 0.0
    done: list[Done] = []
    while not done:
        at = client.next_timer()
        assert at is not None and at > t
        t = at
        client.handle_timer(t)
        for data, dest in client.datagrams_to_send():
            assert (data, dest) == (raw, NAS)
            sent_at.append(t)
        done = client.completed()
    assert sent_at == [0.0, 1.0, 3.0, 7.0, 15.0]
    assert (only(done).outcome, only(done).attempts, t) == ("timeout", 5, 20.0)
    assert client.outstanding == 0


def test_an_answer_to_a_retransmission_ends_the_request() -> None:
    client = CoaClient(Backoff(jitter=0.0))
    _, raw = disconnect_request(client)
    client.handle_timer(1.0)
    assert client.datagrams_to_send() == [(raw, NAS)]
    client.receive(answer(raw), NAS, 1.5)
    done = only(client.completed())
    assert (done.outcome, done.attempts) == ("ack", 2)
    client.handle_timer(3.0)
    assert client.datagrams_to_send() == []


def test_past_256_outstanding_requests_to_one_nas_wait_for_an_identifier() -> None:
    client = CoaClient(window=256)
    sent = []
    for _ in range(300):
        client.submit(NAS, Code.DISCONNECT_REQUEST,
                      session_attributes(TARGET, T0, default_codec()), SECRET, 0.0)
        sent += client.datagrams_to_send()
    assert len(sent) == 256
    assert len({data[1] for data, _ in sent}) == 256
    assert client.outstanding == 300
    client.receive(answer(sent[7][0]), NAS, 0.1)
    assert only(client.completed()).outcome == "ack"
    (nxt, dest), = client.datagrams_to_send()
    assert dest == NAS and nxt[1] == sent[7][0][1]  # the freed identifier, reused
    # another NAS has its own 256
    client.submit(("127.0.0.2", 3799), Code.DISCONNECT_REQUEST, [], SECRET, 0.1)
    assert len(client.datagrams_to_send()) == 1


def test_by_default_32_requests_are_outstanding_to_one_nas_and_the_rest_wait() -> None:
    client = CoaClient()
    for _ in range(40):
        client.submit(NAS, Code.DISCONNECT_REQUEST, [], SECRET, 0.0)
    sent = client.datagrams_to_send()
    assert len(sent) == 32 and client.outstanding == 40
    client.receive(answer(sent[0][0], sign=False), NAS, 0.1)
    assert len(client.datagrams_to_send()) == 1


def test_a_window_beyond_the_identifier_space_is_refused() -> None:
    with pytest.raises(ValueError, match=r"window must be 1\.\.256"):
        CoaClient(window=257)


def test_past_max_waiting_a_request_ends_at_once_as_queue_full() -> None:
    client = CoaClient(window=1, max_waiting=1)
    for _ in range(3):
        client.submit(NAS, Code.DISCONNECT_REQUEST, [], SECRET, 0.0)
    assert only(client.completed()).outcome == "queue_full"
    assert client.outstanding == 2


# -- over loopback, against the simulated NAS ------------------------------------------

def routes(port: int, *, coa: str = "disconnect") -> dict[str, CoaRoute]:
    return routes_from_config([ClientConfig(
        name="hotspot", address="127.0.0.1", secret="testing123", coa=coa,  # type: ignore[arg-type]
        coa_port=port, coa_secret=SECRET.decode())])


async def kick(nas: CoaNas, *, backoff: Backoff = FAST, coa: str = "disconnect",
               targets: list[SessionTarget] | None = None
               ) -> tuple[list[DisconnectResult], Disconnector]:
    _, port = await nas.start()
    d = Disconnector(routes(port, coa=coa), ManualClock(T0), backoff=backoff,
                     bind_v4="127.0.0.1")
    try:
        results = await asyncio.wait_for(asyncio.gather(
            *(d.disconnect(t, T0) for t in targets or [TARGET])), 10)
    finally:
        await d.close()
        nas.close()
    return list(results), d


async def test_the_nas_acks_and_the_result_says_so() -> None:
    nas = CoaNas(secret=SECRET)
    (result,), _ = await kick(nas)
    assert (result.outcome, result.attempts, result.error_cause) == ("ack", 1, None)
    assert result.describe().startswith("Disconnect-ACK from 127.0.0.1 port ")
    (got,) = nas.received
    assert got.authenticator_ok and got.message_authenticator_ok
    assert got.message_authenticator_first
    assert got.get("Acct-Session-Id") == "81a0000f"


async def test_a_nak_is_recorded_with_its_error_cause_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "radiusd.coa")
    (result,), _ = await kick(CoaNas(secret=SECRET, answer="nak", error_cause=503))
    assert (result.outcome, result.error_cause) == ("nak", 503)
    assert result.error_cause_name == "Session-Context-Not-Found"
    assert "Error-Cause 503 Session-Context-Not-Found" in result.describe()
    assert ["Disconnect-NAK" in r.getMessage() for r in caplog.records] == [True]


async def test_a_lost_request_is_sent_again_with_the_same_bytes() -> None:
    nas = CoaNas(secret=SECRET, drop_first=1)
    (result,), d = await kick(nas)
    assert (result.outcome, result.attempts) == ("ack", 2)
    first, second = nas.received
    assert first.raw == second.raw
    assert d.counters()["counters"]["retransmissions"] == 1


async def test_a_nas_that_never_answers_ends_in_a_timeout_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "radiusd.coa")
    nas = CoaNas(secret=SECRET, answer="none")
    other = SessionTarget(client="hotspot", nas_source="127.0.0.1", acct_session_id="2")
    results, d = await kick(nas, targets=[TARGET, other])
    assert [(r.outcome, r.attempts) for r in results] == [("timeout", 3), ("timeout", 3)]
    assert len(nas.received) == 6
    assert len([r for r in caplog.records if "no answer from" in r.getMessage()]) == 1
    assert ("radiusd_coa_timeouts_total", {}, 2) in d.samples()


@pytest.mark.parametrize(("forge", "reason"), [
    ("authenticator", "response_authenticator"),
    ("identifier", "unknown_identifier"),
    ("source", "wrong_source"),
    ("message_authenticator", "message_authenticator"),
])
async def test_a_forged_ack_from_the_network_is_ignored_and_counted(
        forge: str, reason: str) -> None:
    nas = CoaNas(secret=SECRET, answer="nak", error_cause=502, forge=forge)  # type: ignore[arg-type]
    (result,), d = await kick(nas)
    assert (result.outcome, result.error_cause) == ("nak", 502)
    assert ("radiusd_coa_forged_total", {"reason": reason}, 1) in d.samples()


async def test_only_forged_answers_end_in_a_timeout() -> None:
    nas = CoaNas(secret=SECRET, forge="authenticator", forge_only=True)
    (result,), d = await kick(nas)
    assert result.outcome == "timeout"
    assert d.counters()["forged"]["response_authenticator"] == 3


async def test_coa_off_sends_nothing() -> None:
    nas = CoaNas(secret=SECRET)
    (result,), _ = await kick(nas, coa="off")
    assert result.outcome == "off" and nas.received == []
    assert result.describe() == "not sent: coa is \"off\" for client 'hotspot'"


async def test_the_queue_sends_every_target_and_records_each_result() -> None:
    nas = CoaNas(secret=SECRET)
    _, port = await nas.start()
    d = Disconnector(routes(port), ManualClock(T0), backoff=FAST, bind_v4="127.0.0.1")
    recorded: list[DisconnectResult] = []

    async def record(result: DisconnectResult) -> None:
        recorded.append(result)

    queue = DisconnectQueue(d, record, max_pending=20)
    worker = asyncio.create_task(queue.run())
    try:
        targets = [SessionTarget(client="hotspot", nas_source="127.0.0.1",
                                 acct_session_id=str(i)) for i in range(20)]
        assert all(queue.put(t) for t in targets)
        assert not queue.put(TARGET)  # the 21st: refused, counted
        await asyncio.wait_for(queue.join(), 10)
    finally:
        worker.cancel()
        await d.close()
        nas.close()
    assert sorted(r.target.acct_session_id or "" for r in recorded) == \
        sorted(t.acct_session_id or "" for t in targets)
    assert {r.outcome for r in recorded} == {"ack"}
    assert queue.refused == 1


# -- where it goes: config ---------------------------------------------------------------

def test_destination_is_coa_address_else_nas_ip_address_else_the_source() -> None:
    def route(**kw: object) -> CoaRoute:
        return CoaRoute.from_config(ClientConfig(name="c", address="10.0.0.0/24",
                                                 secret="sixteen-chars-ok", **kw))  # type: ignore[arg-type]

    by_source = SessionTarget(client="c", nas_source="10.0.0.9")
    assert route().destination(TARGET) == ("127.0.0.1", 3799)
    assert route().destination(by_source) == ("10.0.0.9", 3799)
    assert route(coa_address="192.0.2.1", coa_port=1700).destination(TARGET) == \
        ("192.0.2.1", 1700)
    assert route().secret == b"sixteen-chars-ok"
    assert route(coa_secret="another-secret-16").secret == b"another-secret-16"
    assert not route().enabled and route(coa="disconnect").enabled


@pytest.mark.parametrize(("line", "message"), [
    ('coa = "on"', "clients[0].coa: must be 'disconnect' or 'off'"),
    ('coa_address = "nas.example"', "clients[0].coa_address: 'nas.example' is not an IP"),
    ("coa_port = 0", "clients[0].coa_port: must be greater than or equal to 1"),
    ('coa_port = "3799"', "clients[0].coa_port: must be a whole number"),
    ('coa_secret = ""', "clients[0].coa_secret: must not be empty"),
    ('coa_secret = "short"', "clients[0].coa_secret: client 'a': too short (5 characters"),
    ('coa_secret = "testing123"', "clients[0].coa_secret: client 'a': 'testing123' is a"),
])
def test_bad_coa_keys_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text(f'[[clients]]\nname = "a"\naddress = "10.0.0.1"\n'
                    f'secret = "sixteen-chars-ok"\n{line}\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert f"{path}: {message}" in str(e.value)


def test_coa_defaults_are_off_port_3799_and_the_client_secret(tmp_path: Path) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text('[[clients]]\nname = "a"\naddress = "10.0.0.1"\nsecret = "sixteen-chars-ok"\n')
    (c,) = load(path).clients
    assert (c.coa, c.coa_address, c.coa_port, c.coa_secret) == ("off", None, 3799, None)


def test_check_config_says_where_disconnect_requests_go(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text('[[clients]]\nname = "a"\naddress = "10.0.0.1"\nsecret = "sixteen-chars-ok"\n'
                    'coa = "disconnect"\ncoa_address = "10.0.0.2"\ncoa_port = 1700\n'
                    '[[clients]]\nname = "b"\naddress = "10.0.1.1"\n'
                    'secret = "sixteen-chars-ok-b"\n')
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "    Disconnect-Request to 10.0.0.2 port 1700\n" in out
    assert out.count("Disconnect-Request") == 1


def test_an_unusable_nas_ip_address_falls_back_to_the_source() -> None:
    route = CoaRoute.from_config(ClientConfig(name="c", address="10.0.0.0/24",
                                              secret="sixteen-chars-ok"))
    for bad in ("0.0.0.0", "224.0.0.1", "not-an-ip"):
        t = SessionTarget(client="c", nas_source="10.0.0.9", nas_ip_address=bad)
        assert route.destination(t) == ("10.0.0.9", 3799)


def test_a_value_that_cannot_be_encoded_is_left_out() -> None:
    odd = SessionTarget(client="c", nas_source="10.0.0.1", acct_session_id="1",
                        framed_ip_address="fe80::1", user_name="u" * 300)
    names = [default_codec().by_key(t) for t, _ in session_attributes(odd, T0,
                                                                     default_codec())]
    assert [a.name for a in names if a] == ["Acct-Session-Id", "Event-Timestamp"]


async def test_an_ipv6_nas_gets_its_disconnect_over_ipv6() -> None:
    nas = CoaNas(secret=SECRET)
    _, port = await nas.start("::1")
    d = Disconnector(routes(port), ManualClock(T0), backoff=FAST, bind_v6="::1")
    target = SessionTarget(client="hotspot", nas_source="::1", acct_session_id="6")
    try:
        result = await asyncio.wait_for(d.disconnect(target, T0), 10)
    finally:
        await d.close()
        nas.close()
    assert (result.outcome, result.destination) == ("ack", ("::1", port))
    assert nas.received[0].source[0] == "::1"


@pytest.mark.parametrize(("value", "name"), [
    (201, "Residual-Context-Removed"), (401, "Unsupported-Attribute"),
    (402, "Missing-Attribute"), (403, "NAS-Identification-Mismatch"),
    (404, "Invalid-Request"), (501, "Administratively-Prohibited"),
    (503, "Session-Context-Not-Found"), (504, "Session-Context-Not-Removable"),
    (506, "Resources-Unavailable"), (508, "Multiple-Session-Selection-Unsupported"),
])
def test_error_causes_have_their_rfc_5176_names(value: int, name: str) -> None:
    assert error_cause_name(value) == name
