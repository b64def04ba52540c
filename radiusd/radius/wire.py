"""RADIUS framing, sans-IO: bytes in, a checked packet out; a reply in, bytes out.

No sockets, no clocks. Strict where RFC 2865 lets a server be strict, because every
lenient path is one an attacker can walk (BlastRADIUS, CVE-2024-3596).

- RFC 2865 §3: header, Length, Request/Response Authenticator.
- RFC 2865 §5: attribute framing; §5.2 User-Password hiding; §5.33 Proxy-State.
- RFC 2866 §3: Accounting-Request authenticator.
- RFC 3579 §3.2: Message-Authenticator (HMAC-MD5).
- RFC 5997 §3: Status-Server.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("!BBH16s")
MAX_PACKET = 4096  # RFC 2865 §3
MIN_PACKET = 20
ZERO16 = bytes(16)

MESSAGE_AUTHENTICATOR = 80
PROXY_STATE = 33
USER_PASSWORD = 2
VENDOR_SPECIFIC = 26


class Code(IntEnum):
    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12
    STATUS_CLIENT = 13
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43
    COA_ACK = 44
    COA_NAK = 45


KNOWN_CODES = frozenset(int(c) for c in Code)


class Malformed(Exception):
    """The datagram is not a RADIUS packet we may act on. ``reason`` is a counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Packet:
    """A framed packet: header fields and the attributes in wire order, values raw."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, bytes], ...]
    raw: bytes
    ma_offset: int  # offset of the Message-Authenticator value in raw, or -1

    @property
    def has_message_authenticator(self) -> bool:
        return self.ma_offset >= 0

    def first(self, attr_type: int) -> bytes | None:
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attributes if t == attr_type]


def parse(data: bytes) -> Packet:
    """Frame a datagram; raise :class:`Malformed` on anything that is not RADIUS.

    The Length field must equal the datagram size. RFC 2865 §3 lets a receiver treat
    surplus octets as padding; no NAS pads, so a mismatch is corruption or probing
    and is dropped (documented in docs/wire.md).
    """
    size = len(data)
    if size < MIN_PACKET:
        raise Malformed("short", f"{size} octets")
    if size > MAX_PACKET:
        raise Malformed("too_long", f"{size} octets")
    code, identifier, length, authenticator = HEADER.unpack_from(data)
    if code not in KNOWN_CODES:
        raise Malformed("unknown_code", str(code))
    if length != size:
        raise Malformed("length_mismatch", f"Length {length}, datagram {size}")
    attrs: list[tuple[int, bytes]] = []
    ma_offset = -1
    pos = MIN_PACKET
    while pos < size:
        if pos + 2 > size:
            raise Malformed("attribute_truncated", f"at {pos}")
        t = data[pos]
        alen = data[pos + 1]
        if alen < 2:
            raise Malformed("attribute_length", f"type {t} length {alen} at {pos}")
        end = pos + alen
        if end > size:
            raise Malformed("attribute_overrun", f"type {t} length {alen} at {pos}")
        if t == MESSAGE_AUTHENTICATOR:
            if alen != 18:
                raise Malformed("message_authenticator_length", f"length {alen}")
            if ma_offset >= 0:
                raise Malformed("message_authenticator_twice")
            ma_offset = pos + 2
        attrs.append((t, data[pos + 2 : end]))
        pos = end
    return Packet(code, identifier, authenticator, tuple(attrs), data, ma_offset)


def _hmac_md5(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.md5).digest()


def _zero_ma(raw: bytes, ma_offset: int) -> bytes:
    return raw[:ma_offset] + ZERO16 + raw[ma_offset + 16 :]


def message_authenticator_ok(packet: Packet, secret: bytes) -> bool:
    """RFC 3579 §3.2 for requests. For Accounting-Request it is computed with the
    Request Authenticator field zeroed (the convention of RFC 5176 §3.3 for requests
    whose authenticator is a hash, and what FreeRADIUS does); Access-Request and
    Status-Server use the one in the packet."""
    if packet.ma_offset < 0:
        return False
    data = _zero_ma(packet.raw, packet.ma_offset)
    if packet.code == Code.ACCOUNTING_REQUEST:
        data = data[:4] + ZERO16 + data[20:]
    expected = _hmac_md5(secret, data)
    got = packet.raw[packet.ma_offset : packet.ma_offset + 16]
    return hmac.compare_digest(expected, got)


def accounting_authenticator_ok(packet: Packet, secret: bytes) -> bool:
    """RFC 2866 §3: MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret)."""
    raw = packet.raw
    expected = hashlib.md5(raw[:4] + ZERO16 + raw[20:] + secret).digest()
    return hmac.compare_digest(expected, packet.authenticator)


def decrypt_user_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes | None:
    """RFC 2865 §5.2: undo the MD5 stream hiding; trailing NULs are padding.

    Returns None when the value cannot be a hidden password (not 16..128 octets in
    16-octet blocks).
    """
    n = len(hidden)
    if n < 16 or n > 128 or n % 16:
        return None
    out = bytearray()
    last = authenticator
    for i in range(0, n, 16):
        block = hidden[i : i + 16]
        key = hashlib.md5(secret + last).digest()
        out += (int.from_bytes(block) ^ int.from_bytes(key)).to_bytes(16)
        last = block
    return bytes(out).rstrip(b"\x00")


def password_garbled(packet: Packet, secret: bytes) -> bool:
    """Does this request's User-Password decode to something no one typed (bytes that
    are not UTF-8 text, or control characters)? RFC 2865 §5.2 hides it with the shared
    secret, so with the wrong secret it decodes to noise: the one sign of a secret
    mismatch an unsigned PAP request gives. 16 random octets pass as text with a
    chance below 1 in 10^6."""
    hidden = packet.first(USER_PASSWORD)
    if hidden is None:
        return False
    clear = decrypt_user_password(hidden, secret, packet.authenticator)
    if clear is None:
        return False  # not a hidden value at all: the policy answers that
    try:
        text = clear.decode()
    except UnicodeDecodeError:
        return True
    return any(c < " " or c == "\x7f" for c in text)


def encode_attribute(attr_type: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"attribute {attr_type}: value of {len(value)} octets exceeds 253")
    return bytes((attr_type, len(value) + 2)) + value


def encode_reply(
    request: Packet,
    code: int,
    attributes: list[tuple[int, bytes]],
    secret: bytes,
) -> bytes:
    """Build a reply with Message-Authenticator first (BlastRADIUS), Proxy-State copied
    in order (RFC 2865 §5.33) and a correct Response Authenticator (RFC 2865 §3).

    Every reply to Access-Request and Status-Server is signed; an Accounting-Response
    to an Accounting-Request is signed too when the request was, over a zeroed vector
    as FreeRADIUS's rad_sign does (no RFC defines it; radclient and pyrad verify it).
    """
    body = b"".join(encode_attribute(t, v) for t, v in attributes)
    body += b"".join(encode_attribute(PROXY_STATE, v) for v in request.all(PROXY_STATE))
    sign = request.code != Code.ACCOUNTING_REQUEST or request.has_message_authenticator
    if sign:
        body = bytes((MESSAGE_AUTHENTICATOR, 18)) + ZERO16 + body
    length = MIN_PACKET + len(body)
    if length > MAX_PACKET:
        raise ValueError(f"reply of {length} octets exceeds {MAX_PACKET}")
    head = struct.pack("!BBH", code, request.identifier, length)
    if sign:
        # Accounting-Response to an Accounting-Request: HMAC over a zero authenticator,
        # as for the request (FreeRADIUS rad_sign, pyrad); the rest use the request's.
        vector = ZERO16 if request.code == Code.ACCOUNTING_REQUEST else request.authenticator
        ma = _hmac_md5(secret, head + vector + body)
        body = body[:2] + ma + body[18:]
    response_auth = hashlib.md5(head + request.authenticator + body + secret).digest()
    return head + response_auth + body
