"""Message text on the air: GSM 03.38 7-bit or UCS-2, and segmentation.

One SMS carries 140 octets: 160 GSM-7 septets or 70 UCS-2 characters. A longer
text is split into parts, each with a concatenation header (UDH, 3GPP TS 23.040
§9.2.3.24.1) that costs 6 octets: 153 septets or 67 UCS-2 characters per part.
Cyrillic and Kazakh letters are not in GSM-7, so Russian and Kazakh texts go as
UCS-2 (SMPP data_coding 8; Kannel coding=2).
"""

from __future__ import annotations

from dataclasses import dataclass

# 3GPP TS 23.038 §6.2.1: the default alphabet, in code order; 0x1B is the escape.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# §6.2.1.1: the extension table, reached through the escape (two septets each).
GSM7_EXTENSION = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
    "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}
_BASIC_CODE = {ch: i for i, ch in enumerate(GSM7_BASIC) if ch != "\x1b"}

SINGLE_OCTETS = 140
UDH_CONCAT_LEN = 6  # 05 00 03 ref total seq

DATA_CODING_DEFAULT = 0  # SMSC default alphabet (GSM-7)
DATA_CODING_UCS2 = 8


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 default alphabet or its extension."""
    return all(ch in _BASIC_CODE or ch in GSM7_EXTENSION for ch in text)


def gsm7_encode(text: str) -> bytes:
    """Unpacked septets, one per octet, as SMPP carries them for data_coding 0."""
    out = bytearray()
    for ch in text:
        code = _BASIC_CODE.get(ch)
        if code is not None:
            out.append(code)
        else:
            out += bytes((0x1B, GSM7_EXTENSION[ch]))  # KeyError: not GSM-7
    return bytes(out)


def gsm7_decode(data: bytes) -> str:
    reverse_ext = {v: k for k, v in GSM7_EXTENSION.items()}
    out, escape = [], False
    for b in data:
        if escape:
            out.append(reverse_ext.get(b, " "))
            escape = False
        elif b == 0x1B:
            escape = True
        else:
            out.append(GSM7_BASIC[b & 0x7F])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Encoded:
    data_coding: int
    parts: list[bytes]  # payloads without the UDH


def encode(text: str) -> Encoded:
    """Pick the alphabet and split into parts that fit one SMS each (with UDH if >1)."""
    if is_gsm7(text):
        septets = [gsm7_encode(ch) for ch in text]
        return Encoded(DATA_CODING_DEFAULT, _split(septets, 160, 153))
    # UTF-16BE is UCS-2 for the BMP; characters outside it take two units (a pair),
    # which must stay in one part.
    units = [ch.encode("utf-16-be") for ch in text]
    return Encoded(DATA_CODING_UCS2, _split(units, SINGLE_OCTETS, SINGLE_OCTETS - UDH_CONCAT_LEN))


def _split(chunks: list[bytes], single: int, multi: int) -> list[bytes]:
    """Join per-character chunks into parts; a character is never split across parts.

    ``single``/``multi`` are in octets for UCS-2 and in septets (= octets unpacked)
    for GSM-7."""
    whole = b"".join(chunks)
    if len(whole) <= single:
        return [whole]
    parts: list[bytes] = []
    cur = bytearray()
    for chunk in chunks:
        if len(cur) + len(chunk) > multi:
            parts.append(bytes(cur))
            cur = bytearray()
        cur += chunk
    if cur:
        parts.append(bytes(cur))
    return parts


def concat_udh(ref: int, total: int, seq: int) -> bytes:
    """TS 23.040 §9.2.3.24.1: concatenated short messages, 8-bit reference."""
    return bytes((5, 0x00, 3, ref & 0xFF, total, seq))


def segments(text: str) -> int:
    """How many SMS the text costs (what an operator pays for)."""
    return len(encode(text).parts)
