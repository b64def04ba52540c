"""Rules §4: the login is a mobile number; what people type becomes E.164."""

import pytest

from radiusd import phone


@pytest.mark.parametrize("typed", [
    "8 701 234 56 78",
    "+7 (701) 234-56-78",
    "77012345678",
    "87012345678",
    "+77012345678",
    "  +7 701 234 5678 ",
    "7012345678",
])
def test_what_people_type_becomes_e164(typed: str) -> None:
    assert phone.normalise(typed, "KZ", ["KZ"]) == "+77012345678"


@pytest.mark.parametrize(("typed", "reason"), [
    ("+7 727 250 00 00", "not_mobile"),  # Almaty landline
    ("8 727 250 00 00", "not_mobile"),
    ("+7 912 345 67 89", "region_not_allowed"),  # Russian mobile, same +7
    ("+44 7911 123456", "region_not_allowed"),
    ("+996 700 123 456", "region_not_allowed"),
    ("hello", "not_a_number"),
    ("12345", "not_a_number"),
    ("", "not_a_number"),
    ("   ", "not_a_number"),
    ("8" * 40, "not_a_number"),
    ("+7 701 234 56 78 99", "not_a_number"),
])
def test_numbers_that_get_no_password_say_why(typed: str, reason: str) -> None:
    with pytest.raises(phone.NumberRefused) as refused:
        phone.normalise(typed, "KZ", ["KZ"])
    assert refused.value.reason == reason


def test_allowed_regions_open_other_countries() -> None:
    assert phone.normalise("+7 912 345 67 89", "KZ", ["KZ", "RU"]) == "+79123456789"
    assert phone.normalise("+996 700 123 456", "KZ", ["KZ", "KG"]) == "+996700123456"


def test_default_region_reads_national_numbers() -> None:
    assert phone.normalise("0700 123 456", "KG", ["KG"]) == "+996700123456"


def test_mask_shows_country_operator_and_last_two_digits_only() -> None:
    assert phone.mask("+77012345678") == "+7 701 *** ** 78"
    assert "2345" not in phone.mask("+77012345678")


@pytest.mark.parametrize(("typed", "found"), [
    ("8 701 234 56 78", "+77012345678"),
    ("77012345678", "+77012345678"),  # country code without "+"
    ("+7 727 250 00 00", "+77272500000"),  # a landline: read back, never sent a code
    ("+44 7911 123456", "+447911123456"),  # any region
    ("hello", None),
    ("12345", None),
])
def test_stored_numbers_are_read_back_as_e164_whatever_their_kind(
        typed: str, found: str | None) -> None:
    assert phone.e164(typed, "KZ") == found


def test_region_codes_are_libphonenumbers() -> None:
    assert phone.is_region("KZ") and phone.is_region("GB")
    assert not phone.is_region("kz") and not phone.is_region("XX")


def test_warm_up_parses_an_example_mobile_of_each_region() -> None:
    phone._normalise.cache_clear()
    phone.warm("KZ", ["KZ", "MN"])  # a parse per region: its metadata loaded now
    assert phone._normalise.cache_info().currsize == 2
