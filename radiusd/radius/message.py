"""What the policy sees and returns: a decoded request and a reply to encode.

Policy code (auth, accounting) reads attributes by dictionary name and never sees
bytes on the wire; the listener turns a `Reply` into bytes with `wire.encode_reply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radiusd.radius.clients import Client
from radiusd.radius.dictionary import Codec, Key, split_attributes
from radiusd.radius.wire import Code, Packet, decrypt_user_password


class Request:
    __slots__ = ("_attrs", "client", "codec", "nas_address", "packet", "source")

    def __init__(
        self, packet: Packet, client: Client, source: tuple[str, int], codec: Codec
    ) -> None:
        self.packet = packet
        self.client = client
        self.source = source
        self.nas_address = source[0]
        self.codec = codec
        self._attrs: dict[Key, list[bytes]] | None = None

    @property
    def code(self) -> int:
        return self.packet.code

    @property
    def attrs(self) -> dict[Key, list[bytes]]:
        if self._attrs is None:
            self._attrs = split_attributes(self.packet.attributes)
        return self._attrs

    def raw(self, name: str) -> bytes | None:
        values = self.attrs.get(self.codec.attr(name).key)
        return values[0] if values else None

    def get(self, name: str) -> Any:
        """The first value of an attribute, decoded by its dictionary type, or None."""
        ad = self.codec.attr(name)
        values = self.attrs.get(ad.key)
        if not values:
            return None
        try:
            return self.codec.decode(ad, values[0])
        except Exception:  # a value of the wrong size for its type: treat as absent
            return None

    def has(self, name: str) -> bool:
        return self.codec.attr(name).key in self.attrs

    def user_password(self) -> bytes | None:
        """RFC 2865 §5.2: the clear-text User-Password, or None if absent or unusable."""
        hidden = self.raw("User-Password")
        if hidden is None:
            return None
        return decrypt_user_password(hidden, self.client.secret, self.packet.authenticator)


@dataclass(slots=True)
class Reply:
    code: int
    attributes: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, name: str, value: Any) -> Reply:
        self.attributes.append((name, value))
        return self

    @classmethod
    def reject(cls, message: str | None = None) -> Reply:
        r = cls(Code.ACCESS_REJECT)
        if message:
            r.add("Reply-Message", message)
        return r


@dataclass(slots=True)
class Drop:
    """No reply at all (RFC 2865 §3: silently discard). ``reason`` is a counter key."""

    reason: str


Outcome = Reply | Drop
