"""Seeded mutation fuzzing of the wire decoder, the endpoint and the real policy
(issue 11 item 6).

Datagrams start from the corpus in `tests/fuzz_corpus/` (valid requests of every kind
a NAS sends, plus broken ones) and from a live login made at the start of the run;
they are mutated (bit flips, byte inserts and deletes, lying Length fields, attribute
splicing, duplication, Proxy-State floods) and often re-signed, so that mutated
packets get past authentication into the policy. What must hold: `wire.parse` raises
nothing but `Malformed`; nothing raises out of `Endpoint.receive`, the dispatcher
(the real `OtpAuth` and `AccountingPolicy` on a temporary database) or
`Endpoint.finish`; every reply parses and verifies (RFC 2865 §3 Response
Authenticator, RFC 3579 §3.2 Message-Authenticator, Proxy-State copied in order);
and the server, which also reads some of the datagrams from its socket, still
answers at the end.

Deterministic (a fixed seed) and bounded twice, by count and by wall clock, so CI
stays fast. Run it longer locally (tests/fuzz_corpus/README.md)::

    RADIUSD_FUZZ_ITERATIONS=1000000 RADIUSD_FUZZ_SECONDS=600 RADIUSD_FUZZ_SEED=7 \\
        .venv/bin/python -m pytest -q tests/test_fuzz_endpoint.py

A failure names the seed, the iteration and the datagram in hex. Rebuild the corpus
with ``.venv/bin/python tests/test_fuzz_endpoint.py --write-corpus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.config import Config
from radiusd.radius import wire
from radiusd.radius.endpoint import Endpoint, Port, Process, Resend
from radiusd.radius.message import Drop
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import loopback_config, nas_for, running_server

CORPUS = Path(__file__).parent / "fuzz_corpus"
SECRET = b"testing123"
SEED = int(os.environ.get("RADIUSD_FUZZ_SEED", "11"))
ITERATIONS = int(os.environ.get("RADIUSD_FUZZ_ITERATIONS", "5000"))
SECONDS = float(os.environ.get("RADIUSD_FUZZ_SECONDS", "4"))
PARSE_ITERATIONS = int(os.environ.get("RADIUSD_FUZZ_PARSE_ITERATIONS", "30000"))

PHONE = "+77012345678"
MAC = "AA-BB-CC-DD-EE-01"
# Sources of the in-process datagrams: the signing NAS ("auto", latched once it
# signs), an old NAS that never signs (require_message_authenticator = false,
# Access-Challenge for "Get password"), and an address no client has.
SIGNED, UNSIGNED, STRANGER = ("127.0.0.1", 41000), ("::1", 41001), ("192.0.2.9", 41002)
SOURCES = [SIGNED] * 5 + [UNSIGNED] * 4 + [STRANGER]
VENDORS = (9, 311, 14122, 14559, 14823, 14988, 25053, 41112)
INTERESTING = (0, 1, 2, 3, 4, 17, 18, 19, 20, 0x7F, 0x80, 0xFE, 0xFF)
BATCH = 8  # requests dispatched at once: the policy sees concurrency, as in service

Mutation = Callable[["Mutator", bytes], bytes]


# -- packets, independent of radiusd.radius.wire's encoder ------------------------------


def frame(code: int, identifier: int, authenticator: bytes,
          attrs: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attrs)
    return struct.pack("!BBH", code, identifier, 20 + len(body)) + authenticator + body


def split(data: bytes) -> list[tuple[int, bytes]] | None:
    """The attributes of a datagram, or None when they do not frame."""
    out, pos = [], 20
    while pos < len(data):
        if pos + 2 > len(data) or data[pos + 1] < 2 or pos + data[pos + 1] > len(data):
            return None
        out.append((data[pos], data[pos + 2 : pos + data[pos + 1]]))
        pos += data[pos + 1]
    return out if len(data) >= 20 else None


def resign(data: bytes, secret: bytes = SECRET) -> bytes:
    """Make a framed request authentic again: Message-Authenticator (RFC 3579 §3.2,
    over a zero Request Authenticator for Accounting-Request) and the Accounting
    Request Authenticator (RFC 2866 §3)."""
    if len(data) < 20 or struct.unpack_from("!H", data, 2)[0] != len(data):
        return data
    attrs = split(data)
    if attrs is None:
        return data
    raw = bytearray(data)
    acct = data[0] == wire.Code.ACCOUNTING_REQUEST
    pos, ma = 20, -1
    for t, v in attrs:
        if t == wire.MESSAGE_AUTHENTICATOR and len(v) == 16 and ma < 0:
            ma = pos + 2
        pos += len(v) + 2
    if ma >= 0:
        raw[ma : ma + 16] = bytes(16)
        signed = bytes(raw[:4]) + bytes(16) + bytes(raw[20:]) if acct else bytes(raw)
        raw[ma : ma + 16] = hmac.new(secret, signed, hashlib.md5).digest()
    if acct:
        raw[4:20] = hashlib.md5(bytes(raw[:4]) + bytes(16) + bytes(raw[20:]) + secret).digest()
    return bytes(raw)


def rehide(hidden: bytes, old: bytes, new: bytes, secret: bytes = SECRET) -> bytes:
    """RFC 2865 §5.2: a User-Password hidden under ``old`` hidden under ``new`` instead."""
    if not hidden or len(hidden) % 16 or len(hidden) > 128:
        return hidden
    clear, last = b"", old
    for i in range(0, len(hidden), 16):
        key = hashlib.md5(secret + last).digest()
        clear += bytes(a ^ b for a, b in zip(hidden[i : i + 16], key, strict=True))
        last = hidden[i : i + 16]
    out, last = b"", new
    for i in range(0, len(clear), 16):
        key = hashlib.md5(secret + last).digest()
        last = bytes(a ^ b for a, b in zip(clear[i : i + 16], key, strict=True))
        out += last
    return out


def check_reply(request: bytes, reply: bytes, port: Port, secret: bytes = SECRET) -> None:
    """What a careful NAS checks of an answer (RFC 2865 §3, RFC 3579 §3.2, RFC 5997 §3,
    RFC 2865 §5.33), computed here, not with radiusd's own encoder."""
    req, rep = wire.parse(request), wire.parse(reply)
    assert rep.identifier == req.identifier
    allowed = {
        wire.Code.ACCESS_REQUEST: {wire.Code.ACCESS_ACCEPT, wire.Code.ACCESS_REJECT,
                                   wire.Code.ACCESS_CHALLENGE},
        wire.Code.ACCOUNTING_REQUEST: {wire.Code.ACCOUNTING_RESPONSE},
        wire.Code.STATUS_SERVER: {wire.Code.ACCESS_ACCEPT if port == "auth"
                                  else wire.Code.ACCOUNTING_RESPONSE},
    }[wire.Code(req.code)]
    assert rep.code in allowed, (req.code, rep.code)
    expected = hashlib.md5(reply[:4] + req.authenticator + reply[20:] + secret).digest()
    assert hmac.compare_digest(reply[4:20], expected), "Response Authenticator"
    if req.code != wire.Code.ACCOUNTING_REQUEST or req.has_message_authenticator:
        if req.code != wire.Code.ACCOUNTING_REQUEST:
            assert rep.ma_offset == 22, "Message-Authenticator must come first (BlastRADIUS)"
        assert rep.ma_offset >= 0, "reply to a signed request must be signed"
        vector = bytes(16) if req.code == wire.Code.ACCOUNTING_REQUEST else req.authenticator
        m = rep.ma_offset
        zeroed = reply[:4] + vector + reply[20:m] + bytes(16) + reply[m + 16 :]
        ma = hmac.new(secret, zeroed, hashlib.md5).digest()
        assert hmac.compare_digest(reply[m : m + 16], ma), "Message-Authenticator"
    assert rep.all(wire.PROXY_STATE) == req.all(wire.PROXY_STATE), "Proxy-State"


# -- the corpus --------------------------------------------------------------------------


def load_corpus() -> list[tuple[Port, bytes]]:
    """``auth-*.bin`` go to the authentication port, ``acct-*.bin`` to accounting."""
    out: list[tuple[Port, bytes]] = []
    for path in sorted(CORPUS.glob("*.bin")):
        port: Port = "acct" if path.name.startswith("acct-") else "auth"
        out.append((port, path.read_bytes()))
    return out


def build_corpus() -> dict[str, bytes]:
    """The seed datagrams, made with pyrad (the simulated NAS) plus hand-made
    attributes where pyrad has no name for them. Secret testing123."""
    nas = SimulatedNAS(("127.0.0.1", 1812), secret=SECRET)
    enc = nas.encode

    def with_attrs(data: bytes, extra: list[tuple[int, bytes]]) -> bytes:
        attrs = split(data)
        assert attrs is not None
        return resign(frame(data[0], data[1], data[4:20], attrs + extra))

    def vsa(vendor: int, vtype: int, value: bytes) -> tuple[int, bytes]:
        inner = bytes((vtype, len(value) + 2)) + value
        return wire.VENDOR_SPECIFIC, vendor.to_bytes(4, "big") + inner

    pap = enc(nas.access_request(PHONE, "123456"))
    start = enc(nas.accounting_request("Start", user=PHONE, session_id="80000001", mac=MAC,
                                       extra=[("Class", b"opaque-session-token")]))
    many_ps = [(wire.PROXY_STATE, bytes([i]) * 200) for i in range(18)]
    seeds = {
        "auth-pap-signed": pap,
        "auth-pap-typed-unsigned": enc(nas.access_request("8 701 234 56 78", "123456",
                                                          message_authenticator=False)),
        "auth-get-password-signed": enc(nas.access_request(PHONE, "")),
        "auth-get-password-unsigned": enc(nas.access_request(PHONE, "",
                                                             message_authenticator=False)),
        "auth-chap-signed": enc(nas.access_request(PHONE, "123456", chap=True)),
        "auth-chap-authenticator-unsigned": enc(nas.access_request(
            PHONE, "123456", chap=True, chap_challenge=False, message_authenticator=False)),
        "auth-chap-get-password": enc(nas.access_request(PHONE, "", chap=True)),
        "auth-state-reply": enc(nas.access_request(
            PHONE, "123456", extra=[("State", b"challenge-state-0001")])),
        "auth-proxy-state": enc(nas.access_request(
            PHONE, "123456", extra=[("Proxy-State", b"proxy-1"), ("Proxy-State", b"p2")])),
        "auth-proxy-state-unsigned": enc(nas.access_request(
            PHONE, "", message_authenticator=False, extra=[("Proxy-State", b"ps")])),
        "auth-proxy-state-flood": with_attrs(pap, many_ps),
        "auth-vendor-attributes": with_attrs(pap, [
            vsa(14988, 10, bytes((10, 5, 50, 7))),  # Mikrotik-Host-IP
            vsa(14122, 1, b"isocc=kz,cc=7,ac=727,network=Cafe"),  # WISPr-Location-ID
            vsa(9, 1, b"audit-session-id=0A0000010000"),  # Cisco-AVPair
            vsa(14559, 1, b"\x00\x00\x00\x01"),  # ChilliSpot
            (wire.VENDOR_SPECIFIC, b"\x00\x00\x3a\x8c\x01"),  # a VSA cut short
        ]),
        "auth-eap-signed": with_attrs(enc(nas.access_request(PHONE)), [
            (79, b"\x02\x01\x00\x0e\x01" + PHONE.encode()[:9])]),
        "auth-eap-unsigned": enc(nas.access_request(
            PHONE, message_authenticator=False, extra=[("EAP-Message", b"\x02\x01\x00\x05\x01")])),
        "auth-long-user-name": enc(nas.access_request("7" * 200, "1" * 128)),
        "auth-status-server": enc(nas.status_server()),
        "acct-status-server": enc(nas.status_server("acct")),
        "acct-start": start,
        "acct-start-signed": with_attrs(start, [(wire.MESSAGE_AUTHENTICATOR, bytes(16))]),
        "acct-interim": enc(nas.accounting_request(
            "Interim-Update", user=PHONE, session_id="80000001", mac=MAC,
            Acct_Session_Time=300, Acct_Input_Octets=123456, Acct_Output_Octets=654321,
            Acct_Input_Gigawords=1)),
        "acct-stop": enc(nas.accounting_request(
            "Stop", user=PHONE, session_id="80000001", mac=MAC, Acct_Session_Time=600,
            Acct_Input_Octets=10, Acct_Output_Octets=20, Acct_Terminate_Cause=1)),
        "acct-accounting-on": enc(nas.accounting_request("Accounting-On")),
        "acct-accounting-off": enc(nas.accounting_request("Accounting-Off")),
        "acct-voucher-start": enc(nas.accounting_request(
            "Start", user="v123456", session_id="80000002", mac=MAC)),
        "auth-truncated-attribute": pap[:-7],
        "auth-truncated-header": pap[:11],
        "acct-length-lie": start[:2] + (len(start) + 40).to_bytes(2, "big") + start[4:],
    }
    return seeds


def write_corpus() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.bin"):
        old.unlink()
    for name, data in build_corpus().items():
        (CORPUS / f"{name}.bin").write_bytes(data)


# -- mutations ---------------------------------------------------------------------------


class Mutator:
    """Byte- and attribute-level mutations, driven by one seeded `random.Random`."""

    def __init__(self, rng: random.Random, seeds: list[bytes]) -> None:
        self.rng = rng
        self.seeds = seeds

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        structured = rng.random() < 0.6  # keep the framing: reach the decoders behind it
        for _ in range(rng.randint(1, 4)):
            data = rng.choice(STRUCTURED if structured else MUTATIONS)(self, data)
        if rng.random() < 0.5 and 20 <= len(data) <= wire.MAX_PACKET:
            data = data[:2] + len(data).to_bytes(2, "big") + data[4:]  # frames again
        if rng.random() < 0.8:
            data = self.renew(data)
        if rng.random() < (0.9 if structured else 0.5):
            data = resign(data)
        return data

    def renew(self, data: bytes) -> bytes:
        """A new Identifier and Request Authenticator, as a NAS gives each new request
        (else the duplicate cache answers it, RFC 5080 §2.2.2), with User-Password
        hidden again under the new authenticator (RFC 2865 §5.2)."""
        if len(data) < 20:
            return data
        authenticator = self.rng.randbytes(16)
        attrs = split(data)
        if data[0] == wire.Code.ACCESS_REQUEST and attrs is not None:
            attrs = [(t, rehide(v, data[4:20], authenticator) if t == wire.USER_PASSWORD
                      else v) for t, v in attrs]
            return frame(data[0], self.rng.randrange(256), authenticator, attrs)
        return bytes((data[0], self.rng.randrange(256))) + data[2:4] + authenticator + data[20:]

    # bytes

    def flip_bits(self, data: bytes) -> bytes:
        if not data:
            return data
        raw = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(8)
        return bytes(raw)

    def set_byte(self, data: bytes) -> bytes:
        if not data:
            return data
        raw = bytearray(data)
        raw[self.rng.randrange(len(raw))] = self.rng.choice(INTERESTING)
        return bytes(raw)

    def insert_bytes(self, data: bytes) -> bytes:
        at = self.rng.randint(0, len(data))
        return data[:at] + self.rng.randbytes(self.rng.randint(1, 16)) + data[at:]

    def delete_bytes(self, data: bytes) -> bytes:
        if not data:
            return data
        at = self.rng.randrange(len(data))
        return data[:at] + data[at + self.rng.randint(1, 16):]

    def truncate(self, data: bytes) -> bytes:
        return data[: self.rng.randint(0, len(data))]

    def lie_length(self, data: bytes) -> bytes:
        """Header Length that disagrees with the datagram (or, sometimes, agrees)."""
        if len(data) < 4:
            return data
        n = len(data)
        length = self.rng.choice([n, n, n - 1, n + 1, 20, 19, 4096, 4097, 0xFFFF,
                                  self.rng.randrange(0x10000)])
        return data[:2] + (length & 0xFFFF).to_bytes(2, "big") + data[4:]

    def change_code(self, data: bytes) -> bytes:
        if not data:
            return data
        code = self.rng.choice([1, 2, 3, 4, 5, 11, 12, 13, 40, 43, 0, 255,
                                self.rng.randrange(256)])
        return bytes((code,)) + data[1:]

    # attributes (framing kept valid, so the decoders behind it are reached)

    def _attrs(self, data: bytes) -> list[tuple[int, bytes]] | None:
        return split(data) if len(data) >= 20 else None

    def _reframe(self, data: bytes, attrs: list[tuple[int, bytes]]) -> bytes:
        attrs = [(t, v[:253]) for t, v in attrs]
        return frame(data[0], data[1], data[4:20], attrs)

    def flip_in_value(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if not attrs:
            return data
        i = self.rng.randrange(len(attrs))
        value = bytearray(attrs[i][1])
        if value:
            value[self.rng.randrange(len(value))] ^= 1 << self.rng.randrange(8)
        attrs[i] = (attrs[i][0], bytes(value))
        return self._reframe(data, attrs)

    def attribute_length_lie(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if not attrs:
            return data
        i = self.rng.randrange(len(attrs))
        pos = 20 + sum(len(v) + 2 for _, v in attrs[:i])
        raw = bytearray(data)
        raw[pos + 1] = self.rng.choice([0, 1, 2, 3, 17, 19, 255, self.rng.randrange(256)])
        return bytes(raw)

    def splice(self, data: bytes) -> bytes:
        """Attributes of another seed spliced in: Proxy-State into Accounting, CHAP
        into a Status-Server, a second Message-Authenticator..."""
        attrs = self._attrs(data)
        other = split(self.rng.choice(self.seeds))
        if attrs is None or not other:
            return data
        start = self.rng.randrange(len(other))
        piece = other[start : start + self.rng.randint(1, 4)]
        at = self.rng.randint(0, len(attrs))
        return self._reframe(data, attrs[:at] + piece + attrs[at:])

    def duplicate(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if not attrs:
            return data
        i = self.rng.randrange(len(attrs))
        copies = [attrs[i]] * self.rng.choice([1, 1, 2, 30])
        return self._reframe(data, attrs[: i + 1] + copies + attrs[i + 1 :])

    def drop_attribute(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if not attrs:
            return data
        del attrs[self.rng.randrange(len(attrs))]
        return self._reframe(data, attrs)

    def replace_value(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if not attrs:
            return data
        i = self.rng.randrange(len(attrs))
        rng = self.rng
        value = rng.choice([
            b"", b"\x00", b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff", b"\xff" * 8,
            rng.randbytes(rng.choice([1, 3, 4, 5, 8, 16, 17, 32, 128, 253])),
            b"\xc3\x28\xa0\xa1", b"+77012345678", b"8 (701) 234-56-78", b"v123456",
            b"0" * 253, b"%s%n{code}\r\n", "Ұлан".encode(),
            attrs[i][1][: rng.randint(0, len(attrs[i][1]))],
        ])
        attrs[i] = (attrs[i][0], value)
        return self._reframe(data, attrs)

    def add_attribute(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if attrs is None:
            return data
        rng = self.rng
        if rng.random() < 0.4:
            vendor = rng.choice(VENDORS)
            inner = bytes((rng.randrange(256), rng.choice([0, 1, 2, 6, 40]))) + rng.randbytes(
                rng.randint(0, 8))
            new = (wire.VENDOR_SPECIFIC, vendor.to_bytes(4, "big") + inner)
        else:
            t = rng.choice([1, 2, 3, 4, 8, 24, 25, 30, 31, 32, 40, 44, 60, 79, 80, 87,
                            rng.randrange(256)])
            new = (t, rng.randbytes(rng.choice([0, 1, 4, 16, 18, 40])))
        attrs.insert(rng.randint(0, len(attrs)), new)
        return self._reframe(data, attrs)

    def sign(self, data: bytes) -> bytes:
        """Add a Message-Authenticator where there is none (`resign` fills it)."""
        attrs = self._attrs(data)
        if attrs is None or any(t == wire.MESSAGE_AUTHENTICATOR for t, _ in attrs):
            return data
        return self._reframe(data, [(wire.MESSAGE_AUTHENTICATOR, bytes(16)), *attrs])

    def proxy_state_flood(self, data: bytes) -> bytes:
        attrs = self._attrs(data)
        if attrs is None:
            return data
        room = wire.MAX_PACKET - len(data) - self.rng.choice([0, 1, 100, 900, 1100, 2000])
        while room >= 3:
            n = min(253, room - 2)
            attrs.append((wire.PROXY_STATE, self.rng.randbytes(n)))
            room -= n + 2
        return self._reframe(data, attrs)


MUTATIONS: list[Mutation] = [
    Mutator.flip_bits, Mutator.set_byte, Mutator.insert_bytes, Mutator.delete_bytes,
    Mutator.truncate, Mutator.lie_length, Mutator.change_code,
    Mutator.attribute_length_lie, Mutator.splice, Mutator.splice, Mutator.duplicate,
    Mutator.drop_attribute, Mutator.replace_value, Mutator.replace_value,
    Mutator.add_attribute, Mutator.sign, Mutator.proxy_state_flood,
]
STRUCTURED: list[Mutation] = [
    Mutator.splice, Mutator.duplicate, Mutator.drop_attribute, Mutator.replace_value,
    Mutator.add_attribute, Mutator.flip_in_value, Mutator.sign,
]


# -- the corpus itself ---------------------------------------------------------------------


def test_corpus_holds_real_packets_of_every_kind() -> None:
    corpus = {p.stem: p.read_bytes() for p in CORPUS.glob("*.bin")}
    assert 20 <= len(corpus) <= 48
    codes = set()
    for name, data in corpus.items():
        if "truncated" in name or "length-lie" in name:
            with pytest.raises(wire.Malformed):
                wire.parse(data)
            continue
        p = wire.parse(data)
        codes.add(p.code)
        if p.code == wire.Code.ACCOUNTING_REQUEST:
            assert wire.accounting_authenticator_ok(p, SECRET), name
        if p.has_message_authenticator:
            assert wire.message_authenticator_ok(p, SECRET), name
    assert codes == {wire.Code.ACCESS_REQUEST, wire.Code.ACCOUNTING_REQUEST,
                     wire.Code.STATUS_SERVER}


# -- the decoder ---------------------------------------------------------------------------


def test_mutated_datagrams_get_nothing_but_malformed_out_of_the_decoder() -> None:
    rng = random.Random(SEED)
    seeds = [data for _, data in load_corpus()]
    mutator = Mutator(rng, seeds)
    deadline = time.monotonic() + SECONDS
    framed = 0
    for i in range(PARSE_ITERATIONS):
        if time.monotonic() > deadline:
            break
        data = mutator.mutate(rng.choice(seeds))
        try:
            p = wire.parse(data)
        except wire.Malformed as e:
            assert e.reason, data.hex()
            continue
        except Exception as e:  # pragma: no cover - the failure we look for
            pytest.fail(f"seed {SEED} iteration {i}: wire.parse({data.hex()}) raised {e!r}")
        framed += 1
        assert p.raw == data and 20 <= len(data) <= wire.MAX_PACKET
        assert sum(len(v) + 2 for _, v in p.attributes) == len(data) - 20
        assert split(data) == list(p.attributes)
        wire.message_authenticator_ok(p, SECRET)
        wire.accounting_authenticator_ok(p, SECRET)
        hidden = p.first(wire.USER_PASSWORD)
        if hidden is not None:
            wire.decrypt_user_password(hidden, SECRET, p.authenticator)
    assert framed > 0  # the mutations keep some packets framed: the decoder is exercised


# -- the endpoint and the policy, in a running server ------------------------------------------


async def live_seeds(server: Server) -> list[tuple[Port, bytes]]:
    """A login that works on this server right now (code from the SMS, Class from the
    Access-Accept) and its accounting: seeds that reach the deep end of the policy."""
    nas = nas_for(server, timeout=1.0, retries=2)
    answer = await nas.send(nas.access_request(PHONE, "", mac=MAC))
    assert answer.code == wire.Code.ACCESS_REJECT
    row = await server.store.fetchone(
        "SELECT body FROM sms_outbox WHERE recipient = ? ORDER BY created_at DESC", (PHONE,))
    assert row is not None
    text = server.sealer.open(row["body"], b"sms").decode()
    code = "".join(ch for ch in text if ch.isdigit())[-server.config.otp.length:]
    pap = nas.encode(nas.access_request(PHONE, code, mac=MAC))
    chap = nas.encode(nas.access_request(PHONE, code, chap=True, mac=MAC))
    accepted = await nas.send(nas.access_request(PHONE, code, mac=MAC))
    assert accepted.code == wire.Code.ACCESS_ACCEPT
    klass = accepted.get("Class")
    session = [("Class", klass)] if isinstance(klass, bytes) else []
    out: list[tuple[Port, bytes]] = [("auth", pap), ("auth", chap)]
    for status, counters in (("Start", {}), ("Interim-Update", {"Acct_Session_Time": 60}),
                             ("Stop", {"Acct_Session_Time": 120, "Acct_Terminate_Cause": 1})):
        out.append(("acct", nas.encode(nas.accounting_request(
            status, user=PHONE, session_id="live0001", mac=MAC, extra=session, **counters))))
    return out


def fuzz_config(tmp_path: Path) -> Config:
    sections: dict[str, Any] = {"clients": [
        {"name": "signing-nas", "address": "127.0.0.1", "secret": SECRET.decode()},
        {"name": "old-nas", "address": "::1", "secret": SECRET.decode(),
         "require_message_authenticator": False, "otp_request": "challenge"},
    ]}
    return loopback_config(tmp_path, **sections)


async def test_mutated_datagrams_never_break_the_endpoint_the_policy_or_the_server(
        tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_server(fuzz_config(tmp_path), clock) as server:
        assert server.dispatcher is not None
        dispatch = server.dispatcher
        endpoints: dict[Port, Endpoint] = {ls.endpoint.port: ls.endpoint
                                           for ls in server.listeners}
        address = {port: server.addresses(port)[0] for port in endpoints}
        seeds = load_corpus() + await live_seeds(server)
        rng = random.Random(SEED)
        mutator = Mutator(rng, [data for _, data in seeds])
        loop = asyncio.get_running_loop()
        reached = answered = 0
        codes: Counter[str] = Counter()
        pending: list[tuple[int, Port, bytes, Process]] = []

        first: dict[tuple[Port, tuple[str, int], bytes, bytes], bytes] = {}

        def verify(i: int, request: bytes, reply: bytes, port: Port) -> None:
            try:
                check_reply(request, reply, port)
            except (AssertionError, wire.Malformed) as e:
                raise AssertionError(f"seed {SEED} iteration {i}: bad reply {reply.hex()} "
                                     f"to {request.hex()}: {e}") from e

        async def settle() -> None:
            nonlocal answered
            batch, pending[:] = list(pending), []
            outcomes = await asyncio.gather(*(dispatch(a.request, port)
                                              for _, port, _, a in batch),
                                            return_exceptions=True)
            for (i, port, data, action), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    raise AssertionError(f"seed {SEED} iteration {i}: the {port} policy raised "
                                         f"{outcome!r} on {data.hex()}") from outcome
                reply = endpoints[port].finish(action, outcome, loop.time())
                if reply is None:
                    assert isinstance(outcome, Drop)
                    continue
                answered += 1
                codes[wire.Code(reply[0]).name] += 1
                verify(i, data, reply, port)

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            deadline = time.monotonic() + SECONDS
            done = 0
            for i in range(ITERATIONS):
                if time.monotonic() > deadline:
                    break
                done += 1
                port, seed = rng.choice(seeds)
                if rng.random() < 0.05:
                    port = "acct" if port == "auth" else "auth"
                data = mutator.mutate(seed)
                if i % 16 == 0:  # through the real listener too
                    with contextlib.suppress(OSError):  # a full buffer: UDP may drop
                        sock.sendto(data, address[port])
                source = rng.choice(SOURCES)
                try:
                    action = endpoints[port].receive(data, source, loop.time())
                except Exception as e:
                    raise AssertionError(f"seed {SEED} iteration {i}: receive raised {e!r} on "
                                         f"{data.hex()} from {source}") from e
                key = (port, source, data[:2], data[4:20])
                if isinstance(action, Resend):
                    # RFC 5080 §2.2.2: a duplicate is the same source, Identifier and
                    # Request Authenticator, sent to the same port; its answer is the
                    # one the first copy got.
                    original = first.get(key)
                    assert original is not None, (
                        f"seed {SEED} iteration {i}: {data.hex()} to the {port} port got a "
                        f"cached reply {action.data.hex()} to a request this port never saw")
                    verify(i, original, action.data, port)
                elif isinstance(action, Process):
                    first[key] = data  # what the cache will answer copies with
                    reached += 1
                    pending.append((i, port, data, action))
                    if len(pending) >= BATCH:
                        await settle()
                if i % 200 == 199:  # let time pass: TTLs, limits, the duplicate window
                    await settle()
                    clock.advance(rng.choice([1.0, 30.0, 61.0, 301.0, 3601.0]))
            await settle()

        # Still serving: a NAS's watchdog and a new "Get password" are answered.
        nas = nas_for(server, timeout=1.0, retries=3)
        assert (await nas.send(nas.status_server())).code == wire.Code.ACCESS_ACCEPT
        assert (await nas.send(nas.status_server("acct"), acct=True)).code == \
            wire.Code.ACCOUNTING_RESPONSE
        clock.advance(86400.0)
        got = await nas.send(nas.access_request("+77017654321", "", mac="AA-BB-CC-00-00-09"))
        assert got.code == wire.Code.ACCESS_REJECT
        failures = {"policy_error", "internal_error", "reply_encoding"} & set(server.stats.dropped)
        assert not failures, server.stats.summary()
    print(f"fuzz seed {SEED}: {done} datagrams, {reached} reached the policy, "
          f"{answered} answered {dict(codes)}; dropped {dict(server.stats.dropped)}")
    # Some mutated packets got through authentication into the policy, and were answered.
    assert reached > 0 and answered > 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-corpus"]:
        write_corpus()
        print(f"wrote {len(list(CORPUS.glob('*.bin')))} files to {CORPUS}")
    else:
        print("usage: python tests/test_fuzz_endpoint.py --write-corpus", file=sys.stderr)
        sys.exit(2)
