"""RADIUS over TLS (RadSec, RFC 6614), sans-IO: what the TLS edge decides.

No sockets, no TLS objects, no clocks: `radsec_listener.py` moves bytes and asks these.

- `Framer`: a TCP byte stream cut into RADIUS packets by their Length field
  (RFC 6614 §2.4, RFC 6613 §2.3); a Length below 20 or above 4,096 octets loses the
  stream's framing for good, so that connection is closed (RFC 6613 §2.6.4).
- `CertificateClients`: which `[[clients]]` entry (``radsec = true``) a presented
  certificate is (RFC 6614 §2.3: name and/or fingerprint), and whether its source
  address falls in that entry's ``address``.
- `SourceLimit`: open connections per source address, bounded.
- `port_for` / `closes_connection`: auth and accounting share one connection
  (RFC 6614 §2.4); which drops end it (RFC 6613 §2.6.4).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from radiusd.config import ClientConfig
from radiusd.radius.clients import Client, normalise_address
from radiusd.radius.wire import MAX_PACKET, MIN_PACKET, Code, Malformed

Port = Literal["auth", "acct"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Framer:
    """Bytes in, whole RADIUS packets out (RFC 6614 §2.4: one TLS stream carries
    packets back to back, each as long as its Length field says).

    `feed` returns the packets completed by ``data``, in order, and keeps the rest;
    it raises `Malformed` ("short" / "too_long") for a Length RFC 2865 §3 forbids:
    after that there is no telling where the next packet starts."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Octets of a packet begun but not complete (0 between packets)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        packets: list[bytes] = []
        start = 0
        while len(buffer) - start >= 4:
            length = (buffer[start + 2] << 8) | buffer[start + 3]
            if length < MIN_PACKET:
                raise Malformed("short", f"Length {length} in the stream")
            if length > MAX_PACKET:
                raise Malformed("too_long", f"Length {length} in the stream")
            if len(buffer) - start < length:
                break
            packets.append(bytes(buffer[start:start + length]))
            start += length
        if start:
            del buffer[:start]
        return packets


def port_for(code: int) -> Port:
    """Which endpoint answers a packet on a RadSec connection (RFC 6614 §2.4: auth and
    accounting share it). Status-Server is answered as on the auth port (Access-Accept,
    RFC 5997 §3); any other code goes to auth too, which drops it as unexpected."""
    return "acct" if code == Code.ACCOUNTING_REQUEST else "auth"


# RFC 6613 §2.6.4 (which RFC 6614 §2.4 applies to TLS): over a stream, "silently
# discard" becomes "discard and close the connection" for malformed packets and for
# those whose authenticators do not verify. Other drops (an unexpected code, a
# duplicate, a policy drop) leave the connection open.
_CLOSING = frozenset({"bad_authenticator", "bad_message_authenticator"})


def closes_connection(reason: str) -> bool:
    return reason.startswith("malformed.") or reason in _CLOSING


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified peer certificate says about itself (RFC 6614 §2.3)."""

    names: frozenset[str]  # subject CN, subjectAltName DNS names and IP addresses
    fingerprint: str  # SHA-256 of the DER certificate, lower-case hex

    @classmethod
    def from_certificate(cls, peercert: dict[str, Any], fingerprint: str) -> Identity:
        """``peercert``: `ssl.SSLSocket.getpeercert()` of a verified certificate."""
        names: set[str] = set()
        for rdn in peercert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    names.add(_name(value))
        for kind, value in peercert.get("subjectAltName", ()):
            if kind == "DNS":
                names.add(_name(value))
            elif kind == "IP Address":
                try:
                    names.add(str(ipaddress.ip_address(value.strip())))
                except ValueError:
                    continue
        return cls(frozenset(names), fingerprint.lower())

    def describe(self) -> str:
        shown = ", ".join(sorted(self.names)) or "no names"
        return f"certificate {shown} (sha256 {self.fingerprint[:16]}...)"


def _name(value: str) -> str:
    """DNS names compare without case (RFC 4343); an IP address in its normal form."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip().lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class Refused:
    """The connection is closed; ``reason`` is for the log line, ``counter`` the
    `Stats` drop reason."""

    counter: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str | None
    fingerprint: str | None
    networks: tuple[IPNetwork, ...]
    client: Client


class CertificateClients:
    """The ``radsec = true`` clients, found by certificate and source address.

    A certificate is a client's when it carries the client's ``certificate_name`` (if
    set) and has its ``certificate_fingerprint`` (if set); RFC 6614 §2.3. The
    connection's source address must then fall in that client's ``address``, or the
    certificate of one NAS would let it speak from anywhere."""

    def __init__(self, configs: Iterable[ClientConfig], clients: Iterable[Client]) -> None:
        by_name = {c.name: c for c in clients}
        self._entries: list[_Entry] = []
        for c in configs:
            if not c.radsec:
                continue
            name = _name(c.certificate_name) if c.certificate_name else None
            self._entries.append(_Entry(name, c.certificate_fingerprint,
                                        tuple(c.networks()), by_name[c.name]))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def knows_address(self, host: str) -> bool:
        """Could any RadSec client connect from ``host``? Checked before the handshake,
        so strangers cost no TLS work."""
        ip = _ip(host)
        return ip is not None and any(_within(ip, e.networks) for e in self._entries)

    def match(self, identity: Identity, host: str) -> Client | Refused:
        ip = _ip(host)
        known = [e for e in self._entries
                 if (e.name is None or e.name in identity.names)
                 and (e.fingerprint is None or e.fingerprint == identity.fingerprint)]
        if not known:
            return Refused("radsec.unknown_certificate",
                           f"{identity.describe()} matches no client's certificate_name "
                           "or certificate_fingerprint")
        for entry in known:
            if ip is not None and _within(ip, entry.networks):
                return entry.client
        return Refused("radsec.wrong_address",
                       f"{identity.describe()} is client {known[0].client.name!r}'s, whose "
                       f"address does not include {host}")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(normalise_address(host))
    except ValueError:
        return None


def _within(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
            networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


class SourceLimit:
    """Open connections per source address, at most ``limit`` each (a NAS keeps one;
    a flood from one address must not take every descriptor)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def admit(self, host: str) -> bool:
        count = self._open.get(host, 0)
        if count >= self.limit:
            return False
        self._open[host] = count + 1
        return True

    def release(self, host: str) -> None:
        count = self._open.get(host, 0) - 1
        if count > 0:
            self._open[host] = count
        else:
            self._open.pop(host, None)

    def open(self, host: str) -> int:
        return self._open.get(host, 0)
