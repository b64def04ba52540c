"""Which provider and sender send an SMS: the venue recorded on its outbox row decides
(issue 15, radiusd.venues). A venue that names `[sms.providers.NAME]` is sent through
that provider; one that names none, a client in no venue and a row of a venue no
longer configured, through the top-level `[sms]` provider. A venue's `sender`
replaces the provider's own (Kannel's `from`, SMPP's source_addr, the HTTP body's
{sender}).

Providers are made once and kept across reloads; a reload that adds a provider
section makes it (`update`), and one whose section changed is made again.
"""

from __future__ import annotations

import contextlib
import logging

from radiusd.config import Config, SmsProviderConfig
from radiusd.sms import SmsProvider, build_provider
from radiusd.venues import Venues

log = logging.getLogger("radiusd.sms")


class SmsRoutes:
    """Venue name -> (provider, sender)."""

    def __init__(self, default: SmsProvider, config: Config, venues: Venues) -> None:
        self.default = default
        self.providers: dict[str, SmsProvider] = {}
        self._sections: dict[str, SmsProviderConfig] = {}
        self._retired: list[SmsProvider] = []
        self.venues = venues
        self.update(config, venues)

    def update(self, config: Config, venues: Venues) -> None:
        """The provider sections and venues of a (re)loaded config. The new providers
        are all made before anything changes (`ConfigError` leaves it as it was)."""
        made = {name: build_provider(section)
                for name, section in config.sms.providers.items()
                if self._sections.get(name) != section}
        for name, provider in made.items():
            old = self.providers.get(name)
            if old is not None:
                self._retired.append(old)  # closed at stop: a send may be in flight
            self.providers[name] = provider
            self._sections[name] = config.sms.providers[name]
        self.venues = venues

    def __call__(self, venue: str | None) -> tuple[SmsProvider, str]:
        v = self.venues.named(venue)
        provider = self.providers.get(v.sms_provider, self.default) \
            if v.sms_provider else self.default
        return provider, v.sender

    async def close(self) -> None:
        """Close the named providers (the worker closes the default one)."""
        for provider in [*self.providers.values(), *self._retired]:
            with contextlib.suppress(Exception):
                await provider.close()
        self.providers.clear()
        self._retired.clear()
