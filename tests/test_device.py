"""One device, whatever way the NAS writes its MAC (Calling-Station-Id)."""

import pytest

from radiusd.device import looks_like_mac, normalise_mac


@pytest.mark.parametrize("written", [
    "AA:BB:CC:DD:EE:FF",  # MikroTik
    "aa-bb-cc-dd-ee-ff",  # CoovaChilli, RFC 3580 §3.21
    "AA-BB-CC-DD-EE-FF",
    "aabb.ccdd.eeff",  # Cisco
    "aabbccddeeff",
    "AABBCC-DDEEFF",
    " aa:bb:cc:dd:ee:ff ",
])
def test_every_vendor_format_is_one_device(written: str) -> None:
    assert normalise_mac(written) == "aabbccddeeff"


@pytest.mark.parametrize("value", [
    None, "", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "gg:bb:cc:dd:ee:ff",
    "+77012345678", "8 701 234 56 78", "11-22-33-44-55-66:hotspot",
])
def test_what_is_not_a_mac_is_no_device(value: str | None) -> None:
    assert normalise_mac(value) is None


def test_mac_authentication_user_names_are_recognised() -> None:
    assert looks_like_mac("AA:BB:CC:DD:EE:FF")
    assert looks_like_mac("aabbccddeeff")
    assert not looks_like_mac("+77012345678")
    assert not looks_like_mac("87012345678")
