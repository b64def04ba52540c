"""Which device is this? Calling-Station-Id normalised to 12 lower-case hex digits.

Vendors write MACs every way: MikroTik `AA:BB:CC:DD:EE:FF`, CoovaChilli
`AA-BB-CC-DD-EE-FF`, Cisco `aabb.ccdd.eeff`, some plain `aabbccddeeff` (RFC 3580 §3.21
recommends the dash form). One device must compare equal whatever the NAS wrote.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

_HEX = re.compile(r"[0-9a-fA-F]")
_SEPARATED = re.compile(
    r"^\s*([0-9a-fA-F]{2}[:\-.]?){5}[0-9a-fA-F]{2}\s*$"
    r"|^\s*[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\s*$"
    r"|^\s*[0-9a-fA-F]{6}-[0-9a-fA-F]{6}\s*$"
)


def normalise_mac(value: str | None) -> str | None:
    """``"AA-BB-CC-DD-EE-FF"`` -> ``"aabbccddeeff"``; None if it is not a MAC."""
    if not value or not _SEPARATED.match(value):
        return None
    digits = "".join(_HEX.findall(value)).lower()
    return digits if len(digits) == 12 else None


def looks_like_mac(value: str) -> bool:
    """MAC authentication (MikroTik `login-by=mac`) sends the MAC as User-Name."""
    return normalise_mac(value) is not None


def device_identity(calling_station_id: str | None, nas: str, nas_port: object) -> str:
    """What a password is bound to (Rules §7-§8). A MAC as 12 hex digits when the NAS
    sends one; otherwise the Calling-Station-Id as sent (some NAS send an IP address);
    without one, the NAS and its port. Never "any device"."""
    mac = normalise_mac(calling_station_id)
    if mac:
        return mac
    if calling_station_id and calling_station_id.strip():
        return "id:" + calling_station_id.strip().lower()[:64]
    return f"nas:{nas}:{nas_port if nas_port is not None else ''}"


def request_device(request: RequestLike) -> str:
    return device_identity(request.get("Calling-Station-Id"), request.client.name,
                           request.get("NAS-Port-Id") or request.get("NAS-Port"))


class _Client(Protocol):
    @property
    def name(self) -> str: ...


class RequestLike(Protocol):
    @property
    def client(self) -> _Client: ...

    def get(self, name: str) -> Any: ...
