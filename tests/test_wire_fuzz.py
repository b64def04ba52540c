"""Property tests: no datagram, however broken, gets anything but `Malformed` out of the
decoder, and nothing at all out of `Endpoint.receive` (nor out of reading the
attributes of a request that passed it)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radiusd.config import ClientConfig
from radiusd.radius import wire
from radiusd.radius.clients import ClientTable
from radiusd.radius.dedup import DuplicateCache
from radiusd.radius.dictionary import default_codec
from radiusd.radius.endpoint import Endpoint, Port, Process
from radiusd.radius.message import Drop
from radiusd.stats import Stats
from radiusd.testing.nas import SimulatedNAS

SECRET = b"testing123"
SOURCE = ("127.0.0.1", 40000)
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _seeds() -> list[bytes]:
    nas = SimulatedNAS(("127.0.0.1", 1812), secret=SECRET)
    proxied = nas.access_request("+77011234567", "123456", extra=[("Proxy-State", b"ps")])
    return [
        nas.encode(nas.access_request("+77011234567", "123456")),
        nas.encode(nas.access_request("+77011234567", "123456", chap=True)),
        nas.encode(nas.access_request("+77011234567", message_authenticator=False)),
        nas.encode(proxied),
        nas.encode(nas.accounting_request("Start", user="+77011234567", session_id="s1")),
        nas.encode(nas.accounting_request(
            "Stop", user="+77011234567", session_id="s1", Acct_Session_Time=60,
            Acct_Input_Octets=10, Acct_Terminate_Cause=1)),
        nas.encode(nas.accounting_request("Accounting-On")),
        nas.encode(nas.status_server()),
        nas.encode(nas.status_server("acct")),
    ]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid packet with a few octets overwritten, inserted or removed, or cut."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate", "fix_length"]))
        if op == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            at = draw(st.integers(0, len(data) - 1))
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "fix_length" and len(data) >= 4:
            data[2:4] = min(len(data), 0xFFFF).to_bytes(2, "big")  # keep it framing
    return bytes(data)


@st.composite
def restructured(draw: st.DrawFn) -> bytes:
    """A valid packet whose attributes are replaced, added, dropped or given random values,
    then framed correctly again: reaches the attribute decoders, not just the framing."""
    seed = wire.parse(draw(st.sampled_from(SEEDS)))
    attrs = list(seed.attributes)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["value", "add", "drop", "vsa"]))
        if op == "value" and attrs:
            i = draw(st.integers(0, len(attrs) - 1))
            attrs[i] = (attrs[i][0], draw(st.binary(max_size=40)))
        elif op == "add":
            at = draw(st.integers(0, len(attrs)))
            attrs.insert(at, (draw(st.integers(1, 255)), draw(st.binary(max_size=40))))
        elif op == "drop" and attrs:
            del attrs[draw(st.integers(0, len(attrs) - 1))]
        elif op == "vsa":
            vendor = draw(st.sampled_from([9, 311, 14122, 14559, 14823, 14988, 25053, 41112]))
            inner = draw(st.binary(max_size=30))
            attrs.append((wire.VENDOR_SPECIFIC, vendor.to_bytes(4, "big") + inner))
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attrs)
    head = bytes((seed.code, seed.identifier)) + (20 + len(body)).to_bytes(2, "big")
    return head + seed.authenticator + body


def resign(data: bytes) -> bytes:
    """Make a framed packet authentic again (Message-Authenticator and the Accounting
    authenticator), so that mutations reach the attribute decoders behind them."""
    try:
        p = wire.parse(data)
    except wire.Malformed:
        return data
    raw = bytearray(data)
    acct = p.code == wire.Code.ACCOUNTING_REQUEST
    if p.ma_offset >= 0:
        raw[p.ma_offset : p.ma_offset + 16] = bytes(16)
        signed = bytes(raw[:4]) + bytes(16) + bytes(raw[20:]) if acct else bytes(raw)
        raw[p.ma_offset : p.ma_offset + 16] = hmac.new(SECRET, signed, hashlib.md5).digest()
    if acct:
        raw[4:20] = hashlib.md5(bytes(raw[:4]) + bytes(16) + bytes(raw[20:]) + SECRET).digest()
    return bytes(raw)


datagrams = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=20, max_size=4200),
    mutated(),
    mutated().map(resign),
    restructured().map(resign),
)


def endpoint(port: Port, require_ma: str | bool = "auto") -> Endpoint:
    clients = ClientTable([ClientConfig(
        name="nas", address=["127.0.0.1", "::1"], secret=SECRET.decode(),
        require_message_authenticator=require_ma)])  # type: ignore[arg-type]
    return Endpoint(port, clients, DuplicateCache(5.0), default_codec(), Stats())


def read_everything(action: Process) -> None:
    """What the policy does with a request: read attributes by name, decode passwords."""
    request = action.request
    codec = request.codec
    for key in request.attrs:
        ad = codec.by_key(key)
        if ad is not None:
            request.get(ad.name)
    request.user_password()
    for name in ("User-Name", "Acct-Status-Type", "Acct-Session-Id", "NAS-IP-Address",
                 "Calling-Station-Id", "Acct-Input-Gigawords", "CHAP-Password", "State"):
        request.get(name)


@FUZZ
@given(datagrams)
def test_parse_raises_nothing_but_malformed(data: bytes) -> None:
    try:
        p = wire.parse(data)
    except wire.Malformed as e:
        assert e.reason
        return
    assert p.raw == data
    assert 20 <= len(data) <= wire.MAX_PACKET
    assert sum(len(v) + 2 for _, v in p.attributes) == len(data) - 20
    wire.message_authenticator_ok(p, SECRET)
    wire.accounting_authenticator_ok(p, SECRET)
    hidden = p.first(wire.USER_PASSWORD)
    if hidden is not None:
        wire.decrypt_user_password(hidden, SECRET, p.authenticator)


@FUZZ
@given(data=datagrams, port=st.sampled_from(["auth", "acct"]),
       require_ma=st.sampled_from(["auto", True, False]))
def test_endpoint_receive_never_raises(data: bytes, port: Port, require_ma: str | bool) -> None:
    ep = endpoint(port, require_ma)
    action = ep.receive(data, SOURCE, 1.0)
    if isinstance(action, Drop):
        assert ep.stats.dropped[action.reason] == 1
        return
    assert isinstance(action, Process)
    read_everything(action)
    # The same datagram again is a duplicate of a request still being processed.
    again = ep.receive(data, SOURCE, 1.5)
    assert isinstance(again, Drop) and again.reason == "duplicate_in_progress"


@FUZZ
@given(data=datagrams)
def test_unknown_client_datagrams_never_raise(data: bytes) -> None:
    ep = endpoint("auth")
    action = ep.receive(data, ("192.0.2.7", 1812), 1.0)
    assert isinstance(action, Drop)
