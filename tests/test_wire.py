"""RADIUS framing and verification, sans-IO, on the worked examples with exact bytes in
RFC 2865 §7.1 / §7.2 and RFC 5997 §6, plus every kind of malformed datagram.

Expected authenticators are recomputed here with hashlib/hmac straight from the RFC
formulas, independently of `radiusd.radius.wire`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest

from radiusd.radius import wire
from radiusd.radius.wire import Code, Malformed
from radiusd.testing.nas import SimulatedNAS

SECRET = b"xyzzy5461"  # the secret of every RFC 2865 §7 and RFC 5997 §6 example

# RFC 2865 §7.1: NAS 192.168.1.16, port 3, user "nemo", password "arctangent".
PAP_REQUEST = bytes.fromhex(
    "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb"
    "98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d"
    "93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8"
    "01 10 05 06 00 00 00 03"
)
# ... and its Access-Accept: Service-Type Login, Login-Service Telnet, Login-IP-Host.
PAP_ACCEPT = bytes.fromhex(
    "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf"
    "9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00"
    "0e 06 c0 a8 01 03"
)
ACCEPT_ATTRS = [(6, b"\x00\x00\x00\x01"), (15, b"\x00\x00\x00\x00"), (14, b"\xc0\xa8\x01\x03")]

# RFC 2865 §7.2: user "flopsy" with CHAP (no CHAP-Challenge: the Request
# Authenticator is the challenge), NAS port 20, Framed-User, PPP.
CHAP_REQUEST = bytes.fromhex(
    "01 01 00 47 2a ee 86 f0 8d 0d 55 96 9c a5 97 8e"
    "0d 33 67 a2 01 08 66 6c 6f 70 73 79 03 13 16 e9"
    "75 57 c3 16 18 58 95 f2 93 ff 63 44 07 72 75 04"
    "06 c0 a8 01 10 05 06 00 00 00 14 06 06 00 00 00"
    "02 07 06 00 00 00 01"
)

# RFC 5997 §6: Status-Server to the auth port (Message-Authenticator, NAS-Identifier
# absent) and its Access-Accept; the same to the accounting port and its
# Accounting-Response. The RFC prints the latter with code 02; its authenticator is
# the one for code 05 (RFC 5997 erratum), which is what is used here.
STATUS_AUTH = bytes.fromhex(
    "0c da 00 26 8a 54 f4 68 6f b3 94 c5 28 66 e3 02"
    "18 5d 06 23 50 12 5a 66 5e 2e 1e 84 11 f3 e2 43"
    "82 20 97 c8 4f a3"
)
STATUS_AUTH_REPLY = bytes.fromhex("02 da 00 14 ef 0d 55 2a 4b f2 d6 93 ec 2b 6f e8 b5 41 1d 66")
STATUS_ACCT = bytes.fromhex(
    "0c b3 00 26 92 5f 6b 66 dd 5f ed 57 1f cb 1d b7"
    "ad 38 82 60 50 12 e8 d6 ea bd a9 10 87 5c d9 1f"
    "da de 26 36 78 58"
)
STATUS_ACCT_REPLY = bytes.fromhex("05 b3 00 14 0f 6f 92 14 5f 10 7e 2f 50 4e 86 0a 48 60 66 9c")


# -- independent reference computations (RFC formulas, not wire.py) -------------------


def response_authenticator(reply: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """RFC 2865 §3: MD5(Code+ID+Length+RequestAuth+Attributes+Secret)."""
    return hashlib.md5(reply[:4] + request_authenticator + reply[20:] + secret).digest()


def attributes_of(raw: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 20
    while pos < len(raw):
        t, n = raw[pos], raw[pos + 1]
        out.append((t, raw[pos + 2 : pos + n]))
        pos += n
    return out


def reply_message_authenticator(reply: bytes, request_authenticator: bytes,
                                secret: bytes) -> bytes:
    """RFC 3579 §3.2 for a reply: HMAC-MD5 over the reply with the Request Authenticator
    in the authenticator field and the Message-Authenticator value zeroed. Assumes the
    Message-Authenticator is the first attribute, which is what we require."""
    assert reply[20:22] == b"\x50\x12"
    data = reply[:4] + request_authenticator + reply[20:22] + bytes(16) + reply[38:]
    return hmac.new(secret, data, hashlib.md5).digest()


def sign_request(raw: bytearray, secret: bytes, *, accounting: bool = False) -> bytes:
    """Fill in the Message-Authenticator of a request (zero Request Authenticator for
    Accounting-Request, RFC 5080 §2.2.1), then the Accounting-Request authenticator."""
    pos = 20
    while pos < len(raw):
        if raw[pos] == 80:
            raw[pos + 2 : pos + 18] = bytes(16)
            data = bytes(raw)
            if accounting:
                data = data[:4] + bytes(16) + data[20:]
            raw[pos + 2 : pos + 18] = hmac.new(secret, data, hashlib.md5).digest()
            break
        pos += raw[pos + 1]
    if accounting:
        raw[4:20] = hashlib.md5(bytes(raw[:4]) + bytes(16) + bytes(raw[20:]) + secret).digest()
    return bytes(raw)


def build(code: int, attrs: list[tuple[int, bytes]], identifier: int = 7,
          authenticator: bytes | None = None) -> bytearray:
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attrs)
    auth = authenticator if authenticator is not None else os.urandom(16)
    return bytearray(struct.pack("!BBH", code, identifier, 20 + len(body)) + auth + body)


def flip(data: bytes, index: int, bit: int = 0x01) -> bytes:
    b = bytearray(data)
    b[index] ^= bit
    return bytes(b)


# -- RFC 2865 §7.1: PAP ----------------------------------------------------------------


def test_rfc2865_pap_request_header_and_attributes_are_parsed() -> None:
    p = wire.parse(PAP_REQUEST)
    assert p.code == Code.ACCESS_REQUEST
    assert p.identifier == 0
    assert p.authenticator == bytes.fromhex("0f403f9473978057bd83d5cb98f4227a")
    assert [t for t, _ in p.attributes] == [1, 2, 4, 5]
    assert p.first(1) == b"nemo"
    assert p.first(4) == bytes([192, 168, 1, 16])
    assert p.first(5) == (3).to_bytes(4, "big")
    assert len(p.first(2) or b"") == 16
    assert not p.has_message_authenticator
    assert p.raw == PAP_REQUEST


def test_rfc2865_pap_password_decrypts_to_arctangent() -> None:
    p = wire.parse(PAP_REQUEST)
    hidden = p.first(wire.USER_PASSWORD)
    assert hidden is not None
    assert wire.decrypt_user_password(hidden, SECRET, p.authenticator) == b"arctangent"


def test_pap_password_with_the_wrong_secret_does_not_decrypt() -> None:
    p = wire.parse(PAP_REQUEST)
    hidden = p.first(wire.USER_PASSWORD)
    assert hidden is not None
    assert wire.decrypt_user_password(hidden, b"xyzzy5462", p.authenticator) != b"arctangent"


@pytest.mark.parametrize("size", [0, 15, 17, 31, 144])
def test_hidden_password_of_impossible_size_is_refused(size: int) -> None:
    assert wire.decrypt_user_password(bytes(size), SECRET, bytes(16)) is None


def test_long_pap_password_round_trips_through_pyrad_hiding() -> None:
    """Multi-block §5.2 chaining, checked against pyrad's independent encoder."""
    nas = SimulatedNAS(("127.0.0.1", 1812), secret=SECRET)
    password = "p" * 40  # three 16-octet blocks
    p = wire.parse(nas.encode(nas.access_request("nemo", password)))
    hidden = p.first(wire.USER_PASSWORD)
    assert hidden is not None and len(hidden) == 48
    assert wire.decrypt_user_password(hidden, SECRET, p.authenticator) == password.encode()


def test_rfc2865_accept_authenticator_matches_the_reference_formula() -> None:
    """Sanity check of this file's reference formula against the RFC's own bytes."""
    request = wire.parse(PAP_REQUEST)
    assert response_authenticator(PAP_ACCEPT, request.authenticator, SECRET) == PAP_ACCEPT[4:20]


def test_reply_to_rfc2865_pap_request_is_the_rfc_accept_signed_with_message_authenticator(
) -> None:
    request = wire.parse(PAP_REQUEST)
    reply = wire.encode_reply(request, Code.ACCESS_ACCEPT, ACCEPT_ATTRS, SECRET)
    assert reply[0] == Code.ACCESS_ACCEPT
    assert reply[1] == 0  # Identifier copied
    assert struct.unpack("!H", reply[2:4])[0] == len(reply) == len(PAP_ACCEPT) + 18
    # Message-Authenticator first (BlastRADIUS), then exactly the RFC's attributes.
    assert reply[20:22] == b"\x50\x12"
    assert reply[38:] == PAP_ACCEPT[20:]
    assert reply[22:38] == reply_message_authenticator(reply, request.authenticator, SECRET)
    assert reply[4:20] == response_authenticator(reply, request.authenticator, SECRET)


@pytest.mark.parametrize("code", [Code.ACCESS_ACCEPT, Code.ACCESS_REJECT, Code.ACCESS_CHALLENGE])
def test_every_access_reply_carries_message_authenticator_first(code: int) -> None:
    request = wire.parse(PAP_REQUEST)
    reply = wire.encode_reply(request, code, [(18, b"hello")], SECRET)
    attrs = attributes_of(reply)
    assert attrs[0][0] == wire.MESSAGE_AUTHENTICATOR
    assert [t for t, _ in attrs].count(wire.MESSAGE_AUTHENTICATOR) == 1
    assert attrs[0][1] == reply_message_authenticator(reply, request.authenticator, SECRET)
    assert reply[4:20] == response_authenticator(reply, request.authenticator, SECRET)


def test_proxy_state_is_copied_into_the_reply_in_order() -> None:
    raw = build(Code.ACCESS_REQUEST, [(1, b"nemo"), (33, b"first"), (80, bytes(16)),
                                      (4, b"\x0a\x00\x00\x01"), (33, b"second")])
    request = wire.parse(sign_request(raw, SECRET))
    reply = wire.encode_reply(request, Code.ACCESS_REJECT, [(18, b"no")], SECRET)
    attrs = attributes_of(reply)
    assert attrs[0][0] == wire.MESSAGE_AUTHENTICATOR
    assert [v for t, v in attrs if t == wire.PROXY_STATE] == [b"first", b"second"]
    assert reply[4:20] == response_authenticator(reply, request.authenticator, SECRET)
    assert attrs[0][1] == reply_message_authenticator(reply, request.authenticator, SECRET)


def test_reply_too_big_for_a_datagram_is_refused() -> None:
    request = wire.parse(PAP_REQUEST)
    with pytest.raises(ValueError):
        wire.encode_reply(request, Code.ACCESS_ACCEPT, [(18, b"x" * 253)] * 17, SECRET)


def test_attribute_value_longer_than_253_octets_is_refused() -> None:
    with pytest.raises(ValueError):
        wire.encode_attribute(18, b"x" * 254)


# -- RFC 2865 §7.2: CHAP ---------------------------------------------------------------


def chap_ok(packet: wire.Packet, password: bytes) -> bool:
    """RFC 2865 §2.2 / §5.3: MD5(CHAP-Ident + password + challenge), the challenge being
    CHAP-Challenge when present, else the Request Authenticator."""
    value = packet.first(3)
    if value is None or len(value) != 17:
        return False
    challenge = packet.first(60) or packet.authenticator
    expected = hashlib.md5(value[:1] + password + challenge).digest()
    return hmac.compare_digest(expected, value[1:])


def test_rfc2865_chap_request_is_parsed() -> None:
    p = wire.parse(CHAP_REQUEST)
    assert (p.code, p.identifier) == (Code.ACCESS_REQUEST, 1)
    assert p.authenticator == bytes.fromhex("2aee86f08d0d55969ca5978e0d3367a2")
    assert p.first(1) == b"flopsy"
    chap = p.first(3)
    assert chap is not None and len(chap) == 17
    assert chap[0] == 22  # CHAP Identifier
    assert chap[1:] == bytes.fromhex("e97557c316185895f293ff6344077275")
    assert p.first(60) is None  # no CHAP-Challenge: the Request Authenticator is used
    assert p.first(5) == (20).to_bytes(4, "big")
    assert p.first(6) == (2).to_bytes(4, "big")  # Framed-User
    assert p.first(7) == (1).to_bytes(4, "big")  # PPP


@pytest.mark.parametrize("with_challenge", [True, False])
def test_chap_response_from_pyrad_verifies_with_parsed_fields(with_challenge: bool) -> None:
    nas = SimulatedNAS(("127.0.0.1", 1812), secret=SECRET)
    pkt = nas.access_request("+77011234567", "483920", chap=True, chap_challenge=with_challenge)
    p = wire.parse(nas.encode(pkt))
    assert (p.first(60) is not None) == with_challenge
    assert chap_ok(p, b"483920")
    assert not chap_ok(p, b"483921")
    assert wire.message_authenticator_ok(p, SECRET)


# -- RFC 5997 §6: Status-Server --------------------------------------------------------


@pytest.mark.parametrize("raw", [STATUS_AUTH, STATUS_ACCT], ids=["auth", "acct"])
def test_rfc5997_status_server_message_authenticator_verifies(raw: bytes) -> None:
    p = wire.parse(raw)
    assert p.code == Code.STATUS_SERVER
    assert p.has_message_authenticator
    assert p.ma_offset == 22
    assert p.attributes == ((80, raw[22:38]),)
    assert wire.message_authenticator_ok(p, SECRET)
    assert not wire.message_authenticator_ok(p, b"xyzzy5461durr")


@pytest.mark.parametrize(
    ("raw", "rfc_reply", "code"),
    [(STATUS_AUTH, STATUS_AUTH_REPLY, Code.ACCESS_ACCEPT),
     (STATUS_ACCT, STATUS_ACCT_REPLY, Code.ACCOUNTING_RESPONSE)],
    ids=["auth", "acct"],
)
def test_reply_to_rfc5997_status_server_is_signed(raw: bytes, rfc_reply: bytes,
                                                 code: int) -> None:
    request = wire.parse(raw)
    # The RFC's reply authenticator follows the reference formula...
    assert response_authenticator(rfc_reply, request.authenticator, SECRET) == rfc_reply[4:20]
    # ...and ours is the RFC's reply plus a Message-Authenticator (always sent to a
    # Status-Server, RFC 5997 §3 lets it, BlastRADIUS wants it).
    reply = wire.encode_reply(request, code, [], SECRET)
    assert reply[:2] == rfc_reply[:2]
    assert len(reply) == 38
    assert reply[20:22] == b"\x50\x12"
    assert reply[22:38] == reply_message_authenticator(reply, request.authenticator, SECRET)
    assert reply[4:20] == response_authenticator(reply, request.authenticator, SECRET)


def test_reply_without_attributes_to_unsigned_accounting_request_matches_rfc_formula() -> None:
    raw = build(Code.ACCOUNTING_REQUEST, [(40, b"\x00\x00\x00\x01"), (44, b"abc")])
    request = wire.parse(sign_request(raw, SECRET, accounting=True))
    reply = wire.encode_reply(request, Code.ACCOUNTING_RESPONSE, [], SECRET)
    assert len(reply) == 20  # an unsigned Accounting-Request gets an unsigned response
    assert reply[4:20] == response_authenticator(reply, request.authenticator, SECRET)


def test_reply_to_signed_accounting_request_is_signed_over_a_zero_authenticator() -> None:
    """Accounting-Response: the HMAC covers 16 zero octets where the authenticator goes,
    as for the Accounting-Request (FreeRADIUS rad_sign, pyrad, radclient verify it so)."""
    raw = build(Code.ACCOUNTING_REQUEST, [(40, b"\x00\x00\x00\x01"), (80, bytes(16))])
    request = wire.parse(sign_request(raw, SECRET, accounting=True))
    assert wire.message_authenticator_ok(request, SECRET)
    reply = wire.encode_reply(request, Code.ACCOUNTING_RESPONSE, [], SECRET)
    assert reply[20:22] == b"\x50\x12"
    assert reply[22:38] == reply_message_authenticator(reply, bytes(16), SECRET)
    assert reply[22:38] != reply_message_authenticator(reply, request.authenticator, SECRET)
    assert reply[4:20] == response_authenticator(reply, request.authenticator, SECRET)


def test_reply_to_signed_accounting_request_verifies_with_pyrad() -> None:
    nas = SimulatedNAS(("127.0.0.1", 1813), secret=SECRET)
    pkt = nas.accounting_request("Start", user="+77011234567", session_id="abc")
    pkt.add_message_authenticator()
    raw = nas.encode(pkt)
    reply = wire.encode_reply(wire.parse(raw), Code.ACCOUNTING_RESPONSE, [], SECRET)
    assert pkt.VerifyReply(pkt.CreateReply(packet=reply), reply)


# -- authenticators: good ones pass, any flipped bit fails -----------------------------


def test_message_authenticator_rejects_every_single_flipped_bit() -> None:
    checked = 0
    for i in [0, 1, *range(4, len(STATUS_AUTH))]:  # all but Length, which must frame
        for bit in (0x01, 0x80):
            try:
                p = wire.parse(flip(STATUS_AUTH, i, bit))
            except Malformed:
                continue  # e.g. the attribute's length octet
            assert not wire.message_authenticator_ok(p, SECRET), (i, bit)
            checked += 1
    assert checked >= 2 * (len(STATUS_AUTH) - 4) - 4


def test_message_authenticator_absent_is_not_ok() -> None:
    assert not wire.message_authenticator_ok(wire.parse(PAP_REQUEST), SECRET)


def test_accounting_authenticator_accepts_good_and_rejects_flipped_bits() -> None:
    raw = build(Code.ACCOUNTING_REQUEST,
                [(40, b"\x00\x00\x00\x02"), (44, b"sess-1"), (1, b"+77011234567"),
                 (46, b"\x00\x00\x00\x3c")], identifier=200)
    good = sign_request(raw, SECRET, accounting=True)
    assert wire.accounting_authenticator_ok(wire.parse(good), SECRET)
    assert not wire.accounting_authenticator_ok(wire.parse(good), b"testing123")
    for i in [1, *range(4, len(good))]:
        mutated = flip(good, i)
        try:
            p = wire.parse(mutated)
        except Malformed:
            continue  # an attribute length byte: no longer framed
        assert not wire.accounting_authenticator_ok(p, SECRET), i


def test_accounting_request_from_pyrad_verifies() -> None:
    nas = SimulatedNAS(("127.0.0.1", 1812), secret=b"s3cret")
    pkt = nas.accounting_request("Start", user="+77011234567", session_id="abc")
    assert wire.accounting_authenticator_ok(wire.parse(nas.encode(pkt)), b"s3cret")


def test_accounting_message_authenticator_uses_zero_request_authenticator() -> None:
    raw = build(Code.ACCOUNTING_REQUEST, [(40, b"\x00\x00\x00\x01"), (80, bytes(16))])
    good = wire.parse(sign_request(raw, SECRET, accounting=True))
    assert wire.message_authenticator_ok(good, SECRET)
    # Signed as if it were an Access-Request (with the authenticator in the packet):
    wrong = bytearray(good.raw)
    ma = slice(good.ma_offset, good.ma_offset + 16)
    wrong[ma] = bytes(16)
    wrong[ma] = hmac.new(SECRET, bytes(wrong), hashlib.md5).digest()
    assert not wire.message_authenticator_ok(wire.parse(bytes(wrong)), SECRET)


# -- malformed datagrams -----------------------------------------------------------------


def header(code: int, length: int) -> bytes:
    return struct.pack("!BBH", code, 1, length) + bytes(16)


MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "short"),
    "short_19": (PAP_REQUEST[:19], "short"),
    "over_4096": (header(1, 4097) + bytes(4077), "too_long"),
    "over_4096_length_field_ok": (header(1, 4096) + b"\x12\x06abcd" + bytes(4071), "too_long"),
    "length_larger_than_datagram": (PAP_REQUEST[:-1], "length_mismatch"),
    "length_smaller_than_datagram": (PAP_REQUEST + b"\x00", "length_mismatch"),
    "length_field_below_20": (header(1, 19) + b"\x01\x03x", "length_mismatch"),
    "attribute_length_0": (header(1, 24) + b"\x01\x00ab", "attribute_length"),
    "attribute_length_1": (header(1, 24) + b"\x01\x01ab", "attribute_length"),
    "attribute_past_end": (header(1, 26) + b"\x01\x08abcd", "attribute_overrun"),
    "second_attribute_past_end": (header(1, 28) + b"\x01\x03a\x01\x09abc",
                                  "attribute_overrun"),
    "lone_type_octet": (header(1, 24) + b"\x01\x03a\x01", "attribute_truncated"),
    "message_authenticator_length_17": (header(1, 37) + b"\x50\x11" + bytes(15),
                                        "message_authenticator_length"),
    "message_authenticator_length_19": (header(1, 39) + b"\x50\x13" + bytes(17),
                                        "message_authenticator_length"),
    "message_authenticator_length_2": (header(1, 22) + b"\x50\x02",
                                       "message_authenticator_length"),
    "two_message_authenticators": (header(1, 56) + (b"\x50\x12" + bytes(16)) * 2,
                                   "message_authenticator_twice"),
    "code_0": (header(0, 20), "unknown_code"),
    "code_6": (header(6, 20), "unknown_code"),
    "code_255": (header(255, 20), "unknown_code"),
}


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_datagram_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as err:
        wire.parse(data)
    assert err.value.reason == reason


def test_smallest_packet_without_attributes_parses() -> None:
    p = wire.parse(header(Code.ACCESS_REQUEST, 20))
    assert p.attributes == ()
    assert p.ma_offset == -1


def test_largest_packet_parses() -> None:
    attrs = b"".join(b"\x12\xff" + bytes(253) for _ in range(15)) + b"\x12\xfb" + bytes(249)
    p = wire.parse(header(Code.ACCESS_REQUEST, 4096) + attrs)
    assert len(p.raw) == 4096
    assert len(p.attributes) == 16


def test_empty_attribute_value_is_allowed() -> None:
    p = wire.parse(header(Code.ACCESS_REQUEST, 22) + b"\x12\x02")
    assert p.attributes == ((18, b""),)
