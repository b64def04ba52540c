"""Alphabet choice and segmentation (3GPP TS 23.038/23.040), and the SMPP codec."""

from __future__ import annotations

import pytest

from radiusd.sms import smpp_pdu as p
from radiusd.sms.text import encode, gsm7_decode, gsm7_encode, is_gsm7, segments


@pytest.mark.parametrize("text", ["WiFi code: 482913", "Prix: 5€ [ok] {x} ~^|\\", "@£$¥è"])
def test_gsm7_text_round_trips(text: str) -> None:
    assert is_gsm7(text)
    assert gsm7_decode(gsm7_encode(text)) == text


@pytest.mark.parametrize("text", ["Код 482913", "құпия сөз", "emoji 🙂", "Grüße ß ç"])
def test_cyrillic_kazakh_and_others_are_not_gsm7(text: str) -> None:
    assert not is_gsm7(text)


def test_default_templates_fit_one_ucs2_segment() -> None:
    assert segments("Ваш код для Wi-Fi: 482913. Никому его не сообщайте.") == 1
    assert segments("Wi-Fi құпия сөзі: 482913. Оны ешкімге айтпаңыз.") == 1


def test_single_and_multipart_limits() -> None:
    assert encode("a" * 160).parts == [b"a" * 160]
    assert [len(x) for x in encode("a" * 161).parts] == [153, 8]
    assert encode("я" * 70).data_coding == 8 and len(encode("я" * 70).parts) == 1
    assert [len(x) // 2 for x in encode("я" * 71).parts] == [67, 4]


def test_escape_and_surrogate_pairs_are_never_split() -> None:
    parts = encode("a" * 152 + "€" + "b" * 10).parts  # € is two septets at 152..153
    assert parts[0] == b"a" * 152 and parts[1].startswith(b"\x1b\x65")
    parts = encode("я" * 66 + "🙂" + "я" * 10).parts  # the pair would straddle unit 67
    assert len(parts[0]) == 132 and parts[1].decode("utf-16-be").startswith("🙂")


def test_submit_sm_layout_matches_smpp_34() -> None:
    pdu = p.submit_sm(7, "WiFi", "+77011234578", b"hi", data_coding=0, registered_delivery=1)
    raw = pdu.encode()
    assert raw[:16] == bytes.fromhex("00000032 00000004 00000000 00000007".replace(" ", ""))
    assert raw[16:] == (b"\0" + b"\x05\x00WiFi\0" + b"\x01\x0177011234578\0"
                        + b"\0\0\0" + b"\0\0" + b"\x01\0\0\0\x02hi")


def test_reader_reassembles_fragmented_and_coalesced_pdus() -> None:
    a = p.empty(p.ENQUIRE_LINK, 1).encode()
    b = p.Pdu(p.SUBMIT_SM_RESP, 0, 2, b"M1\0").encode()
    r = p.PduReader()
    assert r.feed(a[:5]) == []
    got = r.feed(a[5:] + b[:20]) + r.feed(b[20:])
    assert [(x.command_id, x.sequence) for x in got] == [(p.ENQUIRE_LINK, 1),
                                                          (p.SUBMIT_SM_RESP, 2)]
    assert p.message_id(got[1].body) == "M1"


def test_reader_rejects_absurd_length() -> None:
    with pytest.raises(p.SmppError):
        p.PduReader().feed(b"\x00\x00\x00\x04" + b"\0" * 12)


def test_delivery_receipt_text_and_tlvs_are_parsed() -> None:
    body = (b"\0" + b"\x01\x0177011234578\0" + b"\x05\x00WiFi\0" + b"\x04\0\0" + b"\0\0"
            + b"\0\0\0\0" + bytes([len(b"id:M9 sub:001 dlvrd:001 stat:DELIVRD err:000")])
            + b"id:M9 sub:001 dlvrd:001 stat:DELIVRD err:000")
    d = p.parse_deliver_sm(body)
    assert d.is_receipt and p.parse_receipt(d) == ("M9", "DELIVRD")
    tlv = body + b"\x00\x1e\x00\x04M10\0" + b"\x04\x27\x00\x01\x05"
    assert p.parse_receipt(p.parse_deliver_sm(tlv)) == ("M10", "UNDELIV")
