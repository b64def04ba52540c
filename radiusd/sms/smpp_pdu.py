"""SMPP 3.4 PDUs, sans-IO: bytes in, `Pdu` out, and the few encoders an ESME needs.

Section numbers are those of the SMPP v3.4 specification (Issue 1.2). Nothing here
touches a socket or a clock; `radiusd.sms.smpp` moves the bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("!IIII")  # §3.2: command_length, command_id, status, sequence
MAX_PDU = 64 * 1024  # far above any PDU an SMSC sends an ESME; guards the reader

# §5.1.2.1 command ids
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
RESP_BIT = 0x80000000

# §5.1.3 command_status values this client acts on
ESME_ROK = 0x00000000
ESME_RINVCMDID = 0x00000003
ESME_RSYSERR = 0x00000008
ESME_RBINDFAIL = 0x0000000D
ESME_RINVPASWD = 0x0000000E
ESME_RINVSYSID = 0x0000000F
ESME_RMSGQFUL = 0x00000014
ESME_RTHROTTLED = 0x00000058
ESME_RX_T_APPN = 0x00000064  # temporary application error
# Statuses worth trying again later; anything else for submit_sm is permanent.
TEMPORARY = frozenset({ESME_RSYSERR, ESME_RMSGQFUL, ESME_RTHROTTLED, ESME_RX_T_APPN})

# §5.3.2 optional parameter tags
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_MESSAGE_STATE = 0x0427

ESM_UDHI = 0x40  # §5.2.12: short_message starts with a user data header
ESM_RECEIPT_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04

# §5.2.5/§5.2.6: type of number / numbering plan
TON_INTERNATIONAL, TON_NATIONAL, TON_ALPHANUMERIC = 1, 2, 5
NPI_UNKNOWN, NPI_ISDN = 0, 1


class SmppError(Exception):
    """The peer broke the protocol (bad framing); the session must be dropped."""


@dataclass(frozen=True, slots=True)
class Pdu:
    command_id: int
    status: int
    sequence: int
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP_BIT)

    def encode(self) -> bytes:
        return HEADER.pack(HEADER.size + len(self.body), self.command_id, self.status,
                           self.sequence) + self.body


@dataclass(slots=True)
class PduReader:
    """Reassembles PDUs from a TCP byte stream (§3.2: length-prefixed)."""

    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Pdu]:
        self._buf += data
        out: list[Pdu] = []
        while len(self._buf) >= HEADER.size:
            length, command_id, status, seq = HEADER.unpack_from(self._buf)
            if length < HEADER.size or length > MAX_PDU:
                raise SmppError(f"PDU length {length} is out of range")
            if len(self._buf) < length:
                break
            out.append(Pdu(command_id, status, seq, bytes(self._buf[HEADER.size:length])))
            del self._buf[:length]
        return out


def cstring(value: str, max_len: int, what: str) -> bytes:
    """§3.1: C-Octet String; ``max_len`` counts the terminating NUL."""
    raw = value.encode("ascii")
    if len(raw) >= max_len:
        raise ValueError(f"{what} is longer than {max_len - 1} characters")
    return raw + b"\0"


def bind(command_id: int, seq: int, system_id: str, password: str, system_type: str) -> Pdu:
    """§4.1.1: bind_transmitter / bind_transceiver / bind_receiver."""
    body = (cstring(system_id, 16, "system_id") + cstring(password, 9, "password")
            + cstring(system_type, 13, "system_type")
            + bytes((0x34, 0, 0)) + b"\0")  # interface_version, addr_ton, addr_npi, range
    return Pdu(command_id, 0, seq, body)


def address(addr: str) -> tuple[int, int, str]:
    """TON/NPI for an address: "+7701..." international, digits national,
    anything else alphanumeric (a sender name such as "WiFi")."""
    if addr.startswith("+") and addr[1:].isdigit():
        return TON_INTERNATIONAL, NPI_ISDN, addr[1:]
    if addr.isdigit():
        return TON_NATIONAL if len(addr) > 8 else 3, NPI_ISDN, addr  # 3: network specific
    return TON_ALPHANUMERIC, NPI_UNKNOWN, addr


def submit_sm(seq: int, source: str, destination: str, short_message: bytes, *,
              data_coding: int, esm_class: int = 0, registered_delivery: int = 0,
              service_type: str = "") -> Pdu:
    """§4.4.1: submit_sm with the payload in short_message (≤ 254 octets)."""
    if len(short_message) > 254:
        raise ValueError("short_message longer than 254 octets")
    s_ton, s_npi, s_addr = address(source)
    d_ton, d_npi, d_addr = address(destination)
    body = (
        cstring(service_type, 6, "service_type")
        + bytes((s_ton, s_npi)) + cstring(s_addr, 21, "source_addr")
        + bytes((d_ton, d_npi)) + cstring(d_addr, 21, "destination_addr")
        + bytes((esm_class, 0, 0))  # esm_class, protocol_id, priority_flag
        + b"\0\0"  # schedule_delivery_time, validity_period: SMSC defaults
        + bytes((registered_delivery, 0, data_coding, 0, len(short_message)))
        + short_message
    )
    return Pdu(SUBMIT_SM, 0, seq, body)


def empty(command_id: int, seq: int, status: int = 0) -> Pdu:
    return Pdu(command_id, status, seq)


def deliver_sm_resp(seq: int) -> Pdu:
    return Pdu(DELIVER_SM_RESP, 0, seq, b"\0")  # message_id unused, NULL


def _take_cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.find(b"\0", pos)
    if end < 0:
        raise SmppError("unterminated C-Octet String")
    return body[pos:end].decode("latin-1"), end + 1


def message_id(body: bytes) -> str:
    """§4.4.2: submit_sm_resp carries message_id (absent when status is an error)."""
    if not body:
        return ""
    return _take_cstring(body, 0)[0]


@dataclass(frozen=True, slots=True)
class Deliver:
    """What matters of a deliver_sm (§4.6.1): a mobile-originated SMS or a receipt."""

    source: str
    destination: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]

    @property
    def is_receipt(self) -> bool:
        return self.esm_class & ESM_RECEIPT_MASK == ESM_DELIVERY_RECEIPT


def parse_deliver_sm(body: bytes) -> Deliver:
    try:
        pos = 0
        _service, pos = _take_cstring(body, pos)
        pos += 2
        source, pos = _take_cstring(body, pos)
        pos += 2
        destination, pos = _take_cstring(body, pos)
        esm_class = body[pos]
        pos += 3  # esm_class, protocol_id, priority_flag
        _, pos = _take_cstring(body, pos)  # schedule_delivery_time
        _, pos = _take_cstring(body, pos)  # validity_period
        pos += 2  # registered_delivery, replace_if_present_flag
        data_coding = body[pos]
        sm_length = body[pos + 2]
        pos += 3
        short_message = body[pos:pos + sm_length]
        pos += sm_length
        tlvs: dict[int, bytes] = {}
        while pos + 4 <= len(body):
            tag, length = struct.unpack_from("!HH", body, pos)
            tlvs[tag] = body[pos + 4:pos + 4 + length]
            pos += 4 + length
    except IndexError:
        raise SmppError("truncated deliver_sm") from None
    return Deliver(source, destination, esm_class, data_coding, short_message, tlvs)


_RECEIPT_RE = re.compile(rb"id:(\S+).*?stat:(\w+)", re.IGNORECASE | re.DOTALL)

# §5.2.28 message_state values
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}


def parse_receipt(d: Deliver) -> tuple[str, str] | None:
    """(message id, final state) of a delivery receipt (Appendix B text format, or the
    receipted_message_id / message_state TLVs when the SMSC sends them)."""
    ref = state = None
    m = _RECEIPT_RE.search(d.short_message)
    if m:
        ref, state = m.group(1).decode("latin-1"), m.group(2).decode("latin-1").upper()
    if TAG_RECEIPTED_MESSAGE_ID in d.tlvs:
        ref = d.tlvs[TAG_RECEIPTED_MESSAGE_ID].rstrip(b"\0").decode("latin-1")
    if d.tlvs.get(TAG_MESSAGE_STATE):
        state = MESSAGE_STATES.get(d.tlvs[TAG_MESSAGE_STATE][0], state)
    if ref is None:
        return None
    return ref, state or "UNKNOWN"
