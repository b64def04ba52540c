"""The client (NAS) table: who may talk to us, with which secret. RFC 2865 §3.

A request is matched on its source address, most specific network first, as
FreeRADIUS's `client` sections are. Results are cached per address.

The match is a longest-prefix match whose cost does not grow with the number of
entries (issue 15: 10,000 `[[clients]]`): the networks are kept in one dict per
prefix length (network address as an integer -> client), and an address is looked
up once per prefix length in use, longest first: at most 33 lookups for IPv4 and
129 for IPv6 however many clients there are, a handful in practice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from radiusd.config import ClientConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Client:
    name: str
    secret: bytes
    require_message_authenticator: str | bool  # "auto" | True | False
    otp_request: str
    # FreeRADIUS 3.2.5 "auto": once this client has sent a Message-Authenticator it
    # is required from the whole client (every address of a CIDR entry), so a spoofer
    # cannot pick a neighbouring address. Persisted by name (`store.clients`), so a
    # restart does not re-arm it: `ClientTable.restore` at start, `latch` once.
    ma_latched: bool = False
    # Which attributes carry a venue's rate limit to it (radiusd.venues.rate_attributes).
    vendor: str = "none"

    def requires_message_authenticator(self) -> bool:
        if self.require_message_authenticator == "auto":
            return self.ma_latched
        return bool(self.require_message_authenticator)

    @property
    def trusted_unsigned(self) -> bool:
        """The operator said this NAS cannot sign (`false`): its unsigned requests are
        taken at their word. Under "auto" they are not, until it signs."""
        return self.require_message_authenticator is False


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
        # (version) -> [(prefix length, {network as int: client})], longest first.
        by_length: dict[int, dict[int, dict[int, Client]]] = {4: {}, 6: {}}
        self.clients: list[Client] = []
        for c in configs:
            client = Client(
                name=c.name,
                secret=c.secret.encode(),
                require_message_authenticator=c.require_message_authenticator,
                otp_request=c.otp_request,
                vendor=c.vendor,
            )
            self.clients.append(client)
            if c.radsec:
                continue  # RFC 6614: TLS only, found by certificate (radius/radsec.py)
            for net in c.networks():
                # The first entry listed for a network answers (Config.warnings says so).
                by_length[net.version].setdefault(net.prefixlen, {}).setdefault(
                    int(net.network_address), client)
        # Most specific first: a /32 entry wins over the /24 it sits in.
        self._lengths = {
            version: [(plen, (1 << (32 if version == 4 else 128)) - (1 << ((32 if version == 4
                                                                            else 128) - plen)),
                       nets) for plen, nets in sorted(lengths.items(), reverse=True)]
            for version, lengths in by_length.items()}
        self._cache: dict[str, Client | None] = {}
        self.on_latch: Callable[[Client], None] = lambda client: None

    def restore(self, latched: Iterable[str]) -> None:
        """The clients that signed before (this node or another): latched again."""
        names = set(latched)
        for client in self.clients:
            if client.name in names:
                client.ma_latched = True

    def latch(self, client: Client) -> None:
        """This client signed an Access-Request: latch it, and tell `on_latch` (which
        persists it) the first time only."""
        if not client.ma_latched:
            client.ma_latched = True
            self.on_latch(client)

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
            value = int(ip)
            for _, mask, nets in self._lengths[ip.version]:
                found = nets.get(value & mask)
                if found is not None:
                    break
        if len(self._cache) > 65536:  # bounded: a spoofed flood must not grow it forever
            self._cache.clear()
        self._cache[host] = found
        return found
