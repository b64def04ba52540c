"""Attribute names and types from FreeRADIUS-format dictionaries, read by pyrad.

The packet framing is ours (`wire.py`); pyrad gives the dictionary parser and the
value codecs (`pyrad.tools`). Lookups are precomputed once per attribute name so the
hot path is a dict hit, not pyrad's per-call name resolution.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pyrad import tools
from pyrad.dictionary import Dictionary

from radiusd.radius.wire import VENDOR_SPECIFIC

Key = int | tuple[int, int]  # attribute code, or (vendor id, vendor type) in a VSA


def dictionary_dir() -> Path:
    """Where `dictionaries/` is: $RADIUSD_DICTIONARIES, the source tree, or the install."""
    env = os.environ.get("RADIUSD_DICTIONARIES")
    candidates = [Path(env)] if env else []
    candidates += [
        Path(__file__).resolve().parents[2] / "dictionaries",
        Path(sys.prefix) / "share" / "radiusd" / "dictionaries",
        Path("/usr/local/share/radiusd/dictionaries"),
    ]
    for c in candidates:
        if (c / "dictionary").is_file():
            return c
    raise FileNotFoundError(
        "no RADIUS dictionaries found; set RADIUSD_DICTIONARIES to the dictionaries/ folder"
    )


@dataclass(frozen=True, slots=True)
class AttrDef:
    name: str
    key: Key
    type: str
    values: dict[str, int]  # named values (VALUE lines), name -> number
    names: dict[int, str]  # number -> name


class Codec:
    """Name <-> key, and typed values <-> bytes."""

    def __init__(self, d: Dictionary) -> None:
        self.dictionary = d
        self._by_name: dict[str, AttrDef] = {}
        self._by_key: dict[Key, AttrDef] = {}
        for name, attr in d.attributes.items():
            if getattr(attr, "is_sub_attribute", False) or attr.type == "tlv":
                continue
            key: Key = attr.code
            if attr.vendor:
                key = (int(d.vendors.GetForward(attr.vendor)), attr.code)
            values: dict[str, int] = {}
            for vname, vraw in attr.values.forward.items():
                if isinstance(vraw, bytes) and len(vraw) in (1, 2, 4):
                    vraw = int.from_bytes(vraw, "big")
                if isinstance(vraw, int):
                    values[vname] = vraw
            ad = AttrDef(name, key, attr.type, values, {v: k for k, v in values.items()})
            self._by_name[name] = ad
            self._by_key.setdefault(key, ad)

    def attr(self, name: str) -> AttrDef:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"attribute {name!r} is not in the dictionaries") from None

    def by_key(self, key: Key) -> AttrDef | None:
        return self._by_key.get(key)

    def decode(self, ad: AttrDef, raw: bytes) -> Any:
        if ad.type == "string":
            return raw.decode("utf-8", errors="replace")
        if ad.type in ("octets", "abinary"):
            return raw
        return tools.DecodeAttr(ad.type, raw)

    def encode(self, name: str, value: Any) -> tuple[int, bytes]:
        """One attribute ready for `wire.encode_reply`: (type, value), VSAs wrapped."""
        ad = self.attr(name)
        if isinstance(value, str) and ad.type in ("integer", "byte", "short") \
                and value in ad.values:
            value = ad.values[value]
        if ad.type == "string" and isinstance(value, str):
            raw = value.encode("utf-8")
        else:
            raw = tools.EncodeAttr(ad.type, value)
        if isinstance(ad.key, tuple):
            vendor, vtype = ad.key
            inner = bytes((vtype, len(raw) + 2)) + raw
            return VENDOR_SPECIFIC, struct.pack("!I", vendor) + inner
        return ad.key, raw


def split_attributes(attributes: tuple[tuple[int, bytes], ...]) -> dict[Key, list[bytes]]:
    """Group values by key, splitting RFC 2865 §5.26 Vendor-Specific into (vendor, type).

    A VSA whose inner framing is not the RFC's recommended format is kept whole under
    26, as FreeRADIUS does.
    """
    out: dict[Key, list[bytes]] = {}
    for t, v in attributes:
        if t != VENDOR_SPECIFIC:
            out.setdefault(t, []).append(v)
            continue
        subs = _vsa(v)
        if subs is None:
            out.setdefault(t, []).append(v)
        else:
            for key, sv in subs:
                out.setdefault(key, []).append(sv)
    return out


def _vsa(v: bytes) -> list[tuple[Key, bytes]] | None:
    if len(v) < 6:
        return None
    vendor = int.from_bytes(v[:4], "big")
    pos, n = 4, len(v)
    subs: list[tuple[Key, bytes]] = []
    while pos < n:
        if pos + 2 > n:
            return None
        st, sl = v[pos], v[pos + 1]
        if sl < 2 or pos + sl > n:
            return None
        subs.append(((vendor, st), v[pos + 2 : pos + sl]))
        pos += sl
    return subs


@cache
def load_dictionary() -> Dictionary:
    """Our dictionaries, read once. pyrad warns that it skips Vendor-Specific's
    FreeRADIUS type `vsa` (kept for radclient); it splits VSAs itself, so mute that."""
    logger = logging.getLogger("pyrad")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return Dictionary(str(dictionary_dir() / "dictionary"))
    finally:
        logger.setLevel(level)


@cache
def default_codec() -> Codec:
    return Codec(load_dictionary())
