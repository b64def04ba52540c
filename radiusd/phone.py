"""Is this a mobile number we may send a password to? Rules §4: the login is the
subscriber's mobile number. Parsing is Google's libphonenumber (`phonenumbers`); this
module is the only one that imports it (config's region codes, the journal's and the
admin CLI's numbers, the start-up warm-up all ask here)."""

from __future__ import annotations

import contextlib
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


class NumberRefused(Exception):
    """``reason`` is a message key: not_a_number | not_mobile | region_not_allowed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise(text: str, default_region: str, allowed_regions: list[str]) -> str:
    """What people type (`8 701 234 56 78`, `+7 (701) 234-56-78`, `77012345678`) ->
    E.164 (`+77012345678`), or raise `NumberRefused`.

    Parsing costs more than the rest of an Access-Request together, and a controller
    re-authenticates the same few numbers all day, so answers are cached (bounded).
    """
    result = _normalise(text, default_region, tuple(allowed_regions))
    if result.startswith("+"):
        return result
    raise NumberRefused(result)


@lru_cache(maxsize=65536)
def _normalise(text: str, default_region: str, allowed_regions: tuple[str, ...]) -> str:
    """E.164, or the refusal reason (which never starts with "+")."""
    try:
        return _parse(text, default_region, allowed_regions)
    except NumberRefused as e:
        return e.reason


def _parse(text: str, default_region: str, allowed_regions: tuple[str, ...]) -> str:
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 32:
        raise NumberRefused("not_a_number")
    number = _valid(cleaned, default_region, with_plus=cleaned.isdigit())
    if number is None:
        raise NumberRefused("not_a_number")
    region = phonenumbers.region_code_for_number(number)
    if region not in allowed_regions:
        raise NumberRefused("region_not_allowed")
    if phonenumbers.number_type(number) not in MOBILE_TYPES:
        raise NumberRefused("not_mobile")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


@lru_cache(maxsize=65536)
def region(e164: str) -> str:
    """The region (ISO 3166 code) of a number `normalise` returned, "" if none."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""
    except NumberParseException:
        return ""


def mask(e164: str) -> str:
    """`+77012345678` -> `+7 701 *** ** 78`: enough for the user to recognise, not
    enough for a shoulder-surfer."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return e164[:4] + "***" + e164[-2:]
    national = str(number.national_number)
    if len(national) < 7:
        return f"+{number.country_code} " + "*" * (len(national) - 2) + national[-2:]
    return f"+{number.country_code} {national[:3]} *** ** {national[-2:]}"


def is_region(code: str) -> bool:
    """A region code libphonenumber knows ("KZ"; upper case)."""
    return code in phonenumbers.SUPPORTED_REGIONS


def e164(text: str, region: str) -> str | None:
    """Any valid number as people type it (`8 701 234 56 78`) -> `+77012345678`, or
    None: mobile or not, any region. For reading back what is stored (the journal's
    export, the admin CLI's searches), not for deciding whom to send a password to
    (`normalise`)."""
    number = _valid(text.strip(), region, with_plus=True)
    return None if number is None else phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _valid(text: str, region: str, *, with_plus: bool) -> phonenumbers.PhoneNumber | None:
    """The valid number `text` is, read in `region`; failing that and `with_plus`, read
    with a "+" in front ("77012345678": the country code typed without it)."""
    candidates: list[tuple[str, str | None]] = [(text, region)]
    if with_plus:
        candidates.append(("+" + text, None))
    for candidate, reg in candidates:
        try:
            number = phonenumbers.parse(candidate, reg)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
    return None


def warm(default_region: str, allowed_regions: list[str]) -> None:
    """Load libphonenumber's metadata of these regions now (it loads lazily, on a
    number's first parse: milliseconds that would land on a first request)."""
    for code in {default_region, *allowed_regions}:
        example = phonenumbers.example_number_for_type(code, PhoneNumberType.MOBILE)
        if example is not None:
            with contextlib.suppress(NumberRefused):
                normalise(phonenumbers.format_number(example, PhoneNumberFormat.E164),
                          default_region, allowed_regions)
