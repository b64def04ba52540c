"""The client (NAS) table: who may talk to us, with which secret. RFC 2865 §3.

A request is matched on its source address, most specific network first, as
FreeRADIUS's `client` sections are. Results are cached per address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from radiusd.config import ClientConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Client:
    name: str
    secret: bytes
    require_message_authenticator: str | bool  # "auto" | True | False
    otp_request: str
    # RFC 3579 §3.2 / FreeRADIUS 3.2.5 "auto": source addresses that have sent a
    # Message-Authenticator, after which it is required from them.
    ma_seen: set[str] = field(default_factory=set)

    def requires_message_authenticator(self, address: str) -> bool:
        if self.require_message_authenticator == "auto":
            return address in self.ma_seen
        return bool(self.require_message_authenticator)


def normalise_address(host: str) -> str:
    """Strip an IPv6 scope and unmap ::ffff:a.b.c.d so one NAS has one name."""
    host = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class ClientTable:
    def __init__(self, configs: list[ClientConfig]) -> None:
        entries: list[tuple[IPNetwork, Client]] = []
        self.clients: list[Client] = []
        for c in configs:
            client = Client(
                name=c.name,
                secret=c.secret.encode(),
                require_message_authenticator=c.require_message_authenticator,
                otp_request=c.otp_request,
            )
            self.clients.append(client)
            entries.extend((net, client) for net in c.networks())
        # Most specific first: a /32 entry wins over the /24 it sits in.
        entries.sort(key=lambda e: e[0].prefixlen, reverse=True)
        self._entries = entries
        self._cache: dict[str, Client | None] = {}

    def find(self, host: str) -> Client | None:
        try:
            return self._cache[host]
        except KeyError:
            pass
        addr = normalise_address(host)
        found: Client | None = None
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            ip = None
        if ip is not None:
            for net, client in self._entries:
                if ip.version == net.version and ip in net:
                    found = client
                    break
        if len(self._cache) > 65536:  # bounded: a spoofed flood must not grow it forever
            self._cache.clear()
        self._cache[host] = found
        return found
