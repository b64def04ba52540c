"""Configuration: one TOML file, validated by pydantic, with embedded defaults.

The keys are a contract operators script against (see `radiusd.example.toml`):
extend them compatibly, never rename them. Every error names the file and the key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_SECRET = "testing123"  # what FreeRADIUS ships for localhost; trials only
RADSEC_SECRET = "radsec"  # RFC 6614 §2.3: the shared secret over TLS, by default
# A client's secret: at least this many characters, never a known placeholder (issue 14).
MIN_SECRET_LENGTH = 16
PLACEHOLDER_SECRETS = frozenset({"change-me-to-a-long-random-string"})
_MAKE_SECRET = "make one with: openssl rand -base64 24"


class ConfigError(Exception):
    """A configuration problem, already worded for the operator (file and key)."""


class _Section(BaseModel):
    # strict: TOML has types, so "6" for a number is a mistake to report, not coerce.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``"0.0.0.0:1812"`` or ``"[::]:1812"`` into host and port."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: write IPv6 as \"[::1]:1812\"")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{value!r}: write \"ADDRESS:PORT\", e.g. \"0.0.0.0:1812\"")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port)


ListenList = Annotated[list[str], Field(min_length=1)]


class ServerConfig(_Section):
    auth_listen: ListenList = ["0.0.0.0:1812", "[::]:1812"]
    acct_listen: ListenList = ["0.0.0.0:1813", "[::]:1813"]
    # RFC 5080 §2.2.2: how long a reply is kept for retransmissions.
    duplicate_window_seconds: float = Field(default=5.0, gt=0, le=60)
    # Requests being processed at once; past it they wait, at most as many again per
    # listening address (then the oldest is dropped as "overloaded").
    max_in_flight: int = Field(default=4096, ge=1)
    # A request that waited longer than this before processing is dropped and counted
    # ("queue_timeout"): the NAS has retransmitted or failed over by then, and an answer
    # after its timeout is useless (RouterOS waits 300 ms by default).
    max_queue_ms: int = Field(default=200, ge=1, le=60_000)
    # Processes of this server on this box, sharing the listen ports (SO_REUSEPORT;
    # radiusd.workers). More than 1 needs [database] url: the workers share nothing but
    # the database, and only PostgreSQL takes writes from several processes at once.
    workers: int = Field(default=1, ge=1, le=256)
    # Where `serve` writes its process id, for `radiusd reload` (radiusd.reload);
    # empty: none (send SIGHUP yourself). Relative: to the config file's directory.
    pid_file: str = ""
    # RADIUS over TLS (RFC 6614, docs/radsec.md), e.g. ["0.0.0.0:2083", "[::]:2083"];
    # empty: off. Needs [radsec] certificate, private_key and ca_file.
    radsec_listen: list[str] = []

    @field_validator("auth_listen", "acct_listen")
    @classmethod
    def _listen_ok(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_listen(item)
        return v

    @field_validator("radsec_listen")
    @classmethod
    def _radsec_listen_ok(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_listen(item)
        return v


class DatabaseConfig(_Section):
    path: str = "radiusd.db"
    # Group commit: at most this many requests' writes share one transaction.
    batch_max: int = Field(default=256, ge=1)
    # PostgreSQL instead of the SQLite file (docs/store.md), e.g.
    # "postgresql://user:pass@host:5432/radiusd"; pool_size: its connections per process.
    url: str | None = None
    pool_size: int = Field(default=10, ge=2, le=1000)

    @field_validator("url")
    @classmethod
    def _url_ok(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError('must be a PostgreSQL URL, e.g. '
                             '"postgresql://user:pass@host:5432/radiusd"')
        return v

    @model_validator(mode="after")
    def _one_store(self) -> DatabaseConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError("path and url are both set: keep path for a SQLite file or "
                             "url for PostgreSQL, not both")
        return self


class ClientConfig(_Section):
    """One NAS (or a network of them) allowed to talk to us; RFC 2865 §3 shared secret."""

    name: str = Field(min_length=1)
    address: str | list[str]
    # RFC 6614 (docs/radsec.md): this NAS talks RADIUS over TLS only (never over UDP),
    # identified by its certificate: certificate_name (subject CN, or a subjectAltName
    # DNS name or IP address) and/or certificate_fingerprint (SHA-256 of the DER
    # certificate, hex); its source address must still fall in `address`. `secret`
    # defaults to "radsec" (RFC 6614 §2.3).
    radsec: bool = False
    certificate_name: str | None = Field(default=None, min_length=1)
    certificate_fingerprint: str | None = None
    secret: str = Field(min_length=1)
    require_message_authenticator: Literal["auto"] | bool = "auto"
    # "reject": "Get password" answers Access-Reject with a Reply-Message;
    # "challenge": Access-Challenge with State (RFC 2865 §4.4).
    otp_request: Literal["reject", "challenge"] = "reject"
    # RFC 5176 Disconnect-Request to the NAS when a session is revoked (docs/coa.md):
    # "disconnect" sends it, "off" does not. Address default: the session's
    # NAS-IP-Address, else the address its packets came from; secret default: `secret`.
    coa: Literal["disconnect", "off"] = "off"
    coa_address: str | None = None
    coa_port: int = Field(default=3799, ge=1, le=65535)
    coa_secret: str | None = Field(default=None, min_length=1)
    # Which attributes carry a venue's `rate_limit` to this NAS (radiusd.venues):
    # Mikrotik-Rate-Limit, ChilliSpot-Bandwidth-Max-Up/Down, WISPr-Bandwidth-Max-Up/Down,
    # or none.
    vendor: Literal["mikrotik", "coovachilli", "wispr", "none"] = "none"

    @model_validator(mode="before")
    @classmethod
    def _radsec_secret(cls, data: Any) -> Any:
        """RFC 6614 §2.3: over TLS the shared secret is "radsec" unless configured."""
        if isinstance(data, dict) and data.get("radsec") is True and "secret" not in data:
            return {**data, "secret": RADSEC_SECRET}
        return data

    @field_validator("certificate_fingerprint")
    @classmethod
    def _fingerprint_ok(cls, v: str | None) -> str | None:
        if v is None:
            return v
        text = v.strip().lower()  # also as openssl prints it: "sha256 Fingerprint=AB:.."
        for prefix in ("sha256 fingerprint=", "sha256:"):
            text = text.removeprefix(prefix)
        hexa = text.replace(":", "")
        if len(hexa) != 64 or any(c not in "0123456789abcdef" for c in hexa):
            raise ValueError(f"{v!r} is not a SHA-256 fingerprint (64 hex digits, colons "
                             "allowed); print one with: openssl x509 -noout -fingerprint "
                             "-sha256 -in nas.pem")
        return hexa

    @model_validator(mode="after")
    def _radsec_identity(self) -> ClientConfig:
        named = self.certificate_name is not None or self.certificate_fingerprint is not None
        if self.radsec and not named:
            raise ValueError(f"client {self.name!r}: radsec = true needs certificate_name "
                             "and/or certificate_fingerprint (how its certificate is known)")
        if named and not self.radsec:
            raise ValueError(f"client {self.name!r}: certificate_name and "
                             "certificate_fingerprint need radsec = true")
        if self.radsec and ({"coa_address", "coa_port"} & self.model_fields_set):
            raise ValueError(f"client {self.name!r}: coa_address and coa_port are not used "
                             "with radsec = true: Disconnect-Requests go over the NAS's own "
                             "RadSec connection (RFC 6614 §2.5)")
        return self

    @field_validator("coa_address")
    @classmethod
    def _coa_address_ok(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address (e.g. \"10.0.0.1\"); "
                             "leave it out to use the session's NAS-IP-Address") from None

    @field_validator("coa_secret")
    @classmethod
    def _coa_secret_ok(cls, v: str | None, info: ValidationInfo) -> str | None:
        """The Disconnect-Request's shared secret (RFC 5176 §2.3): the same rules as
        `secret` (a forged Disconnect-ACK would hide a user still online)."""
        if v is None:
            return v
        if len(v.encode()) > 128:
            raise ValueError("a shared secret longer than 128 octets is not interoperable")
        name = info.data.get("name")
        who = f"client {name!r}: " if name else ""
        if v in PLACEHOLDER_SECRETS or v == DEFAULT_SECRET:
            raise ValueError(f"{who}{v!r} is a well-known placeholder; {_MAKE_SECRET}")
        if len(v) < MIN_SECRET_LENGTH:
            raise ValueError(f"{who}too short ({len(v)} characters, at least "
                             f"{MIN_SECRET_LENGTH}); {_MAKE_SECRET}")
        return v

    @field_validator("require_message_authenticator", mode="before")
    @classmethod
    def _require_ma_ok(cls, v: object) -> object:
        if v == "auto" or isinstance(v, bool):
            return v
        raise ValueError('must be "auto", true or false (no quotes around true/false)')

    @field_validator("address")
    @classmethod
    def _address_ok(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("give at least one IP address or CIDR network")
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR network (e.g. \"10.0.0.0/24\")"
                ) from None
        return v

    @field_validator("secret")
    @classmethod
    def _secret_ok(cls, v: str, info: ValidationInfo) -> str:
        """RFC 2865 §3: the secret should be at least as long as a hash (16 octets)
        and not guessable; a short or well-known one lets anyone on the path forge
        replies and read passwords offline."""
        if len(v.encode()) > 128:
            raise ValueError("a shared secret longer than 128 octets is not interoperable")
        if info.data.get("radsec"):
            return v  # RFC 6614 §2.3: TLS protects the packets; "radsec" is the norm
        address, name = info.data.get("address"), info.data.get("name")
        who = f"client {name!r}: " if name else ""
        if v in PLACEHOLDER_SECRETS:
            raise ValueError(f"{who}{v!r} is the example file's placeholder; {_MAKE_SECRET}")
        if v == DEFAULT_SECRET:
            items = [address] if isinstance(address, str) else address
            if items is None or all(
                    ipaddress.ip_network(item, strict=False).is_loopback for item in items):
                return v  # FreeRADIUS's localhost default: trials on this machine only
            raise ValueError(f"{who}{v!r} is FreeRADIUS's well-known default, allowed "
                             f"for loopback addresses only; {_MAKE_SECRET}")
        if len(v) < MIN_SECRET_LENGTH:
            raise ValueError(f"{who}too short ({len(v)} characters, at least "
                             f"{MIN_SECRET_LENGTH}); {_MAKE_SECRET}")
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        items = [self.address] if isinstance(self.address, str) else self.address
        return [ipaddress.ip_network(item, strict=False) for item in items]


class SmsFileConfig(_Section):
    path: str = "outbox.jsonl"


class SmsKannelConfig(_Section):
    url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    username: str = ""
    password: str = ""
    sender: str = "WiFi"
    timeout_seconds: float = Field(default=10.0, gt=0)


class SmsHttpConfig(_Section):
    url: str = ""
    method: Literal["POST", "GET", "PUT"] = "POST"
    headers: dict[str, str] = {}
    body: str = '{"to": "{to}", "text": "{text}", "sender": "{sender}"}'
    body_format: Literal["json", "form"] = "json"
    sender: str = "WiFi"
    success_status: list[int] = [200, 201, 202]
    success_field: str = ""  # dotted JSON path that must be truthy, e.g. "result.ok"
    timeout_seconds: float = Field(default=10.0, gt=0)


class SmsSmppConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    source_addr: str = "WiFi"
    bind: Literal["transmitter", "transceiver"] = "transmitter"
    window: int = Field(default=10, ge=1)
    enquire_link_seconds: float = Field(default=30.0, gt=0)


class SmsProviderConfig(_Section):
    """A named provider, `[sms.providers.NAME]`, for venues (radiusd.venues): the same
    keys as `[sms]`'s provider, e.g. provider = "kannel" and `[sms.providers.NAME.kannel]`."""

    provider: Literal["log", "file", "kannel", "http", "smpp"] = "log"
    file: SmsFileConfig = SmsFileConfig()
    kannel: SmsKannelConfig = SmsKannelConfig()
    http: SmsHttpConfig = SmsHttpConfig()
    smpp: SmsSmppConfig = SmsSmppConfig()

    @model_validator(mode="after")
    def _provider_configured(self) -> SmsProviderConfig:
        if self.provider == "http" and not self.http.url:
            raise ValueError('provider = "http" needs its http table\'s url = "https://..."')
        return self


def _templates_have_code(v: dict[str, str]) -> dict[str, str]:
    for lang, text in v.items():
        if "{code}" not in text:
            raise ValueError(f"template for {lang!r} must contain {{code}}")
    return v


class SmsConfig(_Section):
    provider: Literal["log", "file", "kannel", "http", "smpp"] = "log"
    max_age_seconds: float = Field(default=600.0, gt=0)
    file: SmsFileConfig = SmsFileConfig()
    kannel: SmsKannelConfig = SmsKannelConfig()
    http: SmsHttpConfig = SmsHttpConfig()
    smpp: SmsSmppConfig = SmsSmppConfig()
    # Message templates by language with "{code}"; empty means the built-in text.
    templates: dict[Literal["kk", "ru", "en"], str] = {}
    # Named providers a venue may use (`[[venues]] sms.provider`); the one above stays
    # the default for clients in no venue and venues that name none.
    providers: dict[str, SmsProviderConfig] = {}

    @model_validator(mode="after")
    def _provider_configured(self) -> SmsConfig:
        if self.provider == "http" and not self.http.url:
            raise ValueError('[sms] provider = "http" needs [sms.http] url = "https://..."')
        return self

    @field_validator("templates")
    @classmethod
    def _templates_ok(cls, v: dict[str, str]) -> dict[str, str]:
        return _templates_have_code(v)


class OtpConfig(_Section):
    """Rules §5–§9: the one-time password and its abuse limits."""

    default_region: str = "KZ"
    allowed_regions: list[str] = ["KZ"]
    length: int = Field(default=6, ge=4, le=12)
    ttl_seconds: float = Field(default=300.0, gt=0)
    max_lifetime_seconds: float = Field(default=86400.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    resend_after_seconds: float = Field(default=60.0, ge=0)
    per_number_hourly: int = Field(default=5, ge=1)
    per_number_daily: int = Field(default=10, ge=1)
    per_device_hourly: int = Field(default=10, ge=1)
    per_nas_minute: int = Field(default=60, ge=1)
    global_per_minute: int = Field(default=300, ge=1)
    # What SMS may cost a day (a sliding 24 h), counted on every front door (RADIUS and
    # the HTTP API alike); only presses that send an SMS count. See docs/otp.md.
    per_nas_daily: int = Field(default=2000, ge=1)  # per RADIUS client (NAS)
    global_daily: int = Field(default=10000, ge=1)  # the whole server
    # Toll fraud (SMS pumping) walks a range of numbers: SMS per day to one block of
    # 10,000 numbers (the number without its last four digits).
    per_prefix_daily: int = Field(default=50, ge=1)
    # SMS per day to numbers of allowed_regions other than default_region, together.
    foreign_daily: int = Field(default=200, ge=1)
    # Wrong codes per hour before a device, or a NAS (the address it sends from), is
    # refused without comparing: the guess budget (docs/otp.md, "Guessing").
    wrong_per_device_hourly: int = Field(default=10, ge=1)
    wrong_per_nas_hourly: int = Field(default=100, ge=1)
    language: Literal["kk", "ru", "en"] = "en"
    # A new login of a number ends its other sessions (Disconnect-Request, docs/coa.md).
    one_session_per_number: bool = False
    session_timeout_seconds: int = Field(default=0, ge=0)  # 0: not sent
    idle_timeout_seconds: int = Field(default=0, ge=0)  # 0: not sent
    # Sealing key file, created 0600 when missing. Empty: $RADIUSD_KEY_FILE, else
    # /etc/radiusd/radiusd.key as root, else ~/.config/radiusd/radiusd.key; a
    # radiusd.key left in the working directory by earlier versions is used first
    # (docs/keys.md). A relative path is relative to the config file's directory.
    key_file: str = ""
    key: str = ""  # base64 key; overrides key_file when set

    @field_validator("default_region")
    @classmethod
    def _region_ok(cls, v: str) -> str:
        return _region(v)

    @field_validator("allowed_regions")
    @classmethod
    def _regions_ok(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one region, e.g. [\"KZ\"]")
        return [_region(r) for r in v]


def _region(v: str) -> str:
    from radiusd import phone  # libphonenumber's metadata only when a config is read

    code = v.upper()
    if not phone.is_region(code):
        raise ValueError(f"{v!r} is not a two-letter region code such as \"KZ\"")
    return code


class AccountingConfig(_Section):
    interim_interval_seconds: int = Field(default=300, ge=60)
    # 0 means 3 x interim interval + 60 s margin.
    stale_after_seconds: float = Field(default=0, ge=0)
    reaper_interval_seconds: float = Field(default=60.0, gt=0)
    # Rules §8 without accounting: a password accepted with no Accounting-Start within
    # this many seconds expires (single-use on a NAS that sends no accounting); 0: never.
    start_grace_seconds: float = Field(default=120.0, ge=0)

    def stale_after(self) -> float:
        return self.stale_after_seconds or 3 * self.interim_interval_seconds + 60


class JournalConfig(_Section):
    vouchers: bool = False
    store_document_number: bool = False
    retention_days: int = Field(default=0, ge=0)  # 0: keep forever


class HttpConfig(_Section):
    listen: list[str] = []  # off unless configured, e.g. ["0.0.0.0:8080"]
    # POST /api/v1/otp per client IP, on top of the RADIUS limits (Rules §6 costs money).
    per_ip_per_minute: int = Field(default=5, ge=1)
    per_ip_hourly: int = Field(default=30, ge=1)
    # All of POST /api/v1/otp together, per minute: below [otp] global_per_minute, so
    # abuse over the web cannot use up the budget of people at the NAS login pages.
    api_per_minute: int = Field(default=100, ge=1)
    # Reverse proxies whose X-Forwarded-For is believed (exact IP addresses).
    trusted_proxies: list[str] = []
    # Hosts the portal may send a login to (link-login-only, uamip, login_url).
    # Empty: IP addresses in private, link-local and loopback ranges only (where
    # controllers live), so a crafted link cannot send a user's code elsewhere.
    # List names or addresses to allow them; "*" allows any host (not advised).
    portal_login_hosts: list[str] = []
    # Web origins whose pages may call POST /api/v1/otp from a browser (CORS), e.g.
    # ["https://portal.example"]. Empty: same-origin pages and non-browser callers only,
    # so other websites cannot make their visitors' browsers send SMS.
    allowed_origins: list[str] = []
    # CoovaChilli's uamsecret (HS_UAMSECRET). Set: the hosted page posts the CoovaChilli
    # login to POST /portal/chilli-logon, which answers the challenge with the secret
    # and redirects to chilli's /logon. Empty: the browser answers it (no uamsecret).
    coovachilli_uamsecret: str = ""
    # The portal's own public origins, e.g. ["http://wifi.example.kz:8080"]. Set: a
    # browser's Origin must be one of these or of allowed_origins (Host is not trusted:
    # a DNS-rebinding page sends a matching Host). Empty: Origin is compared with Host.
    public_origins: list[str] = []
    # Connection bounds (README: "Putting the portal on an open network").
    # A connection with no request for this long is closed (idle keep-alive, or a
    # client that connects and sends nothing).
    idle_timeout_seconds: float = Field(default=20.0, gt=0, le=3600)
    # A request head must arrive whole within this many seconds of its first byte,
    # and its body within as long again after the head (slowloris); else 408, closed.
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # Open connections per client (IPv4 address or IPv6 /64); a configured NAS's
    # address (its NAT) gets 20 times more; trusted_proxies are not capped per address.
    max_connections_per_address: int = Field(default=64, ge=1)
    # Open connections in all; lowered at start to what the open-file limit leaves
    # after the descriptors already open and 128 kept for the store, SMS and RADIUS.
    max_connections: int = Field(default=4096, ge=1)
    # GET /healthz says the SMS side is degraded (503) while a queued SMS has waited
    # longer than this many seconds.
    sms_stall_seconds: float = Field(default=60.0, gt=0)
    # Client addresses (CIDR) that may read GET /metrics; others get 404.
    metrics_allow: list[str] = ["127.0.0.0/8", "::1/128"]
    # Own listener(s) for GET /metrics (and /healthz), e.g. ["127.0.0.1:9812"]; set,
    # /metrics is served there only. Empty: on the `listen` addresses.
    metrics_listen: list[str] = []

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _listen_ok(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_listen(item)
        return v

    @field_validator("metrics_allow")
    @classmethod
    def _networks_ok(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or network (CIDR)") from None
        return v

    @field_validator("public_origins", "allowed_origins")
    @classmethod
    def _origins_ok(cls, v: list[str]) -> list[str]:
        for item in v:  # what browsers send in Origin: scheme://host[:port], no path
            scheme, sep, rest = item.partition("://")
            if scheme not in ("http", "https") or not sep or not rest \
                    or any(c in rest for c in "/?#@\\ "):
                raise ValueError(f"{item!r}: write an origin as scheme://host[:port], "
                                 'e.g. "https://wifi.example.kz" (no path, no slash)')
        return v


def parse_rate(text: str) -> int:
    """ "2M" -> 2_000_000 bit/s: a whole number with an optional k, M or G suffix
    (decimal, as MikroTik reads them)."""
    scale = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000,
             "g": 1_000_000_000, "G": 1_000_000_000}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit() or int(digits) == 0:
        raise ValueError
    return int(digits) * scale


class VenueSmsConfig(_Section):
    """A venue's SMS: which provider section sends it, from which sender, with which
    text (radiusd.venues)."""

    # A name under [sms.providers]; empty: the top-level [sms] provider.
    provider: str = ""
    # The sender name or number the SMS comes from; empty: the provider's own.
    sender: str = ""
    templates: dict[Literal["kk", "ru", "en"], str] = {}

    @field_validator("templates")
    @classmethod
    def _templates_ok(cls, v: dict[str, str]) -> dict[str, str]:
        return _templates_have_code(v)


class VenueConfig(_Section):
    """One venue (README "Venues"): its clients, and what it changes of the top-level
    settings. A key left out keeps the top-level value (`[otp]`, `[sms]`)."""

    name: str = Field(min_length=1)
    clients: list[str] = []  # names of [[clients]] tables
    language: Literal["kk", "ru", "en"] | None = None
    # [otp] limits, for this venue's presses (docs/otp.md "Limits"; global_* count the
    # venue's own SMS).
    resend_after_seconds: float | None = Field(default=None, ge=0)
    per_number_hourly: int | None = Field(default=None, ge=1)
    per_number_daily: int | None = Field(default=None, ge=1)
    per_device_hourly: int | None = Field(default=None, ge=1)
    per_nas_minute: int | None = Field(default=None, ge=1)
    per_nas_daily: int | None = Field(default=None, ge=1)
    global_per_minute: int | None = Field(default=None, ge=1)
    global_daily: int | None = Field(default=None, ge=1)
    per_prefix_daily: int | None = Field(default=None, ge=1)
    foreign_daily: int | None = Field(default=None, ge=1)
    sms: VenueSmsConfig = VenueSmsConfig()
    # SMS a calendar day in `timezone`, exact across nodes (radiusd.venues); none: no cap.
    sms_daily_budget: int | None = Field(default=None, ge=1)
    # IANA name, e.g. "Asia/Almaty"; empty: the server's local time.
    timezone: str = ""
    # Session profile (Access-Accept): 0 sends none; left out, [otp]'s.
    session_timeout_seconds: int | None = Field(default=None, ge=0)
    idle_timeout_seconds: int | None = Field(default=None, ge=0)
    rate_limit: str = ""  # "UP/DOWN", e.g. "2M/8M" (bit/s; k, M, G)
    daily_time_seconds: int | None = Field(default=None, ge=1)  # per number, per day

    @field_validator("timezone")
    @classmethod
    def _timezone_ok(cls, v: str) -> str:
        if not v:
            return v
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a time zone name such as \"Asia/Almaty\"") \
                from None
        return v

    @field_validator("rate_limit")
    @classmethod
    def _rate_ok(cls, v: str) -> str:
        if not v:
            return v
        up, sep, down = v.partition("/")
        try:
            if not sep:
                raise ValueError
            parse_rate(up.strip())
            parse_rate(down.strip())
        except ValueError:
            raise ValueError(f"{v!r}: write UP/DOWN in bit/s with k, M or G, "
                             'e.g. "2M/8M"') from None
        return v
class RadsecConfig(_Section):
    """RADIUS over TLS (RFC 6614, docs/radsec.md): this server's certificate and key
    (PEM) and the CA(s) that NAS client certificates are verified against."""

    certificate: str = ""
    private_key: str = ""
    ca_file: str = ""
    # A connection with no packet for this long is closed (RFC 6614 §2.4: NAS keep it
    # open with Status-Server watchdogs).
    idle_timeout_seconds: float = Field(default=600.0, gt=0, le=86400)
    # The TLS handshake must be over within this many seconds of the connection.
    handshake_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Open RadSec connections per source address (a NAS needs one; a NAT a few).
    max_connections_per_address: int = Field(default=16, ge=1, le=10_000)


def _default_clients() -> list[ClientConfig]:
    return [ClientConfig(name="localhost", address=["127.0.0.1", "::1"], secret=DEFAULT_SECRET)]


class Config(_Section):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    clients: list[ClientConfig] = Field(default_factory=_default_clients)
    sms: SmsConfig = SmsConfig()
    otp: OtpConfig = OtpConfig()
    accounting: AccountingConfig = AccountingConfig()
    journal: JournalConfig = JournalConfig()
    http: HttpConfig = HttpConfig()
    venues: list[VenueConfig] = []
    radsec: RadsecConfig = RadsecConfig()

    # Where the file was read from (None: embedded defaults). Relative paths written in
    # the file (database.path, otp.key_file, sms.file.path) are relative to its
    # directory (`load`); defaults left out, to the working directory.
    source: str | None = Field(default=None, exclude=True)
    # How `source` was found (`find_config`): "-c", "$RADIUSD_CONFIG", "the default
    # place" or "" for the embedded defaults.
    found_by: str = Field(default="", exclude=True)

    def warnings(self) -> list[str]:
        """Valid but probably not meant: said by check-config and at start."""
        out: list[str] = []
        seen: dict[str, str] = {}
        for c in self.clients:
            items = [c.address] if isinstance(c.address, str) else c.address
            for item in items:
                net = ipaddress.ip_network(item, strict=False)
                if "/" in item and str(net) != item.strip() and \
                        net.network_address != ipaddress.ip_address(item.split("/")[0]):
                    out.append(f"clients ({c.name}): address {item!r} has host bits set; "
                               f"it trusts the whole network {net}")
                where = f"radsec {net}" if c.radsec else str(net)  # TLS and UDP apart
                if where in seen:
                    out.append(f"clients ({c.name}): {net} is also client "
                               f"{seen[where]!r}; the first one listed answers")
                seen.setdefault(where, c.name)
        vendors = {c.name: c.vendor for c in self.clients}
        for v in self.venues:
            silent = [name for name in v.clients if vendors.get(name) == "none"]
            if v.rate_limit and silent:
                out.append(f"venues ({v.name}): rate_limit {v.rate_limit!r} is not sent to "
                           f"client {', '.join(silent)}: set its vendor = \"mikrotik\", "
                           "\"coovachilli\" or \"wispr\"")
        if not self.server.radsec_listen:
            out += [f"clients ({c.name}): radsec = true, but server.radsec_listen is empty: "
                    "it cannot connect" for c in self.clients if c.radsec]
        from radiusd.sealing import key_warnings  # sealing imports this module

        out += key_warnings(self.otp, self.database.path)
        return out

    @model_validator(mode="after")
    def _workers_need_postgresql(self) -> Config:
        if self.server.workers > 1 and self.database.url is None:
            raise ValueError(
                f"server.workers = {self.server.workers} needs [database] url (PostgreSQL): "
                "several processes share nothing but the database, and SQLite takes "
                "writes from one process at a time; keep workers = 1 with a SQLite path")
        return self

    @model_validator(mode="after")
    def _radsec_files(self) -> Config:
        """RFC 6614 §2.2: mutual authentication, so a listener needs all three files."""
        if self.server.radsec_listen:
            missing = [k for k in ("certificate", "private_key", "ca_file")
                       if not getattr(self.radsec, k)]
            if missing:
                raise ValueError(f"server.radsec_listen needs [radsec] {', '.join(missing)} "
                                 "(PEM files: this server's certificate and key, and the CA "
                                 "that signs the NAS certificates; docs/radsec.md)")
        return self

    @model_validator(mode="after")
    def _client_names_unique(self) -> Config:
        seen: set[str] = set()
        for c in self.clients:
            if c.name in seen:
                raise ValueError(f"clients: name {c.name!r} is used twice")
            seen.add(c.name)
        return self

    @model_validator(mode="after")
    def _venues_ok(self) -> Config:
        """Venue names unique, their clients and SMS providers defined, a client in
        one venue at most (radiusd.venues)."""
        clients = {c.name for c in self.clients}
        names: set[str] = set()
        owner: dict[str, str] = {}
        for i, v in enumerate(self.venues):
            if v.name in names:
                raise ValueError(f"venues[{i}].name: venue {v.name!r} is listed twice")
            names.add(v.name)
            for name in v.clients:
                if name not in clients:
                    raise ValueError(f"venues[{i}].clients: {name!r} is not the name of a "
                                     "[[clients]] table")
                if name in owner:
                    raise ValueError(f"venues[{i}].clients: client {name!r} is already in "
                                     f"venue {owner[name]!r}; a client belongs to one venue")
                owner[name] = v.name
            if v.sms.provider and v.sms.provider not in self.sms.providers:
                raise ValueError(f"venues[{i}].sms.provider: {v.sms.provider!r} is not a "
                                 f"[sms.providers.{v.sms.provider}] section")
        return self


def _key_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn pydantic's location into TOML's way of naming a key: clients[1].secret."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[", "str", "bool", "list[")):
            continue  # union member names pydantic adds; not keys
        else:
            out += ("." if out else "") + part
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
    return out or "(top level)"


# pydantic's words -> what to write in the TOML file instead.
_PLAIN = {
    "missing": "missing: add this key",
    "string_type": 'must be text in quotes, e.g. "..."',
    "string_too_short": "must not be empty",
    "list_type": 'must be a list in brackets, e.g. ["..."]',
    "int_type": "must be a whole number without quotes, e.g. 6",
    "int_parsing": "must be a whole number without quotes, e.g. 6",
    "int_from_float": "must be a whole number without quotes, e.g. 6",
    "float_type": "must be a number without quotes, e.g. 5.0",
    "float_parsing": "must be a number without quotes, e.g. 5.0",
    "bool_type": "must be true or false, without quotes",
    "bool_parsing": "must be true or false, without quotes",
    "dict_type": "must be a table, e.g. [section] or { key = \"value\" }",
    "model_type": "must be a table, e.g. [section]",
}


_NAMES_KEY = re.compile(r"^[a-z_]+(\[\d+\])?(\.[a-z_]+)*: ")


def format_validation_error(err: ValidationError, source: str, data: Any) -> str:
    """One line per problem, unknown keys first (a typo explains the "missing" that
    follows it), each naming the file and the key and saying what to write."""
    lines = []
    for e in err.errors():
        key = _key_path(tuple(e["loc"]), data)
        kind = e["type"]
        msg = e["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = "unknown key (see radiusd.example.toml for the keys there are)"
        elif kind in _PLAIN:
            msg = _PLAIN[kind]
            if kind == "string_too_short" and key.endswith("secret"):
                msg = "must not be empty: give the shared secret the NAS uses"
            if kind == "missing" and key.endswith("secret"):
                msg = 'missing: add secret = "..." (the shared secret the NAS uses)'
        elif kind in ("literal_error", "greater_than_equal", "greater_than",
                      "less_than_equal"):
            msg = msg.replace("Input should be", "must be")
        if key == "(top level)" and _NAMES_KEY.match(msg):
            lines.append((True, f"{source}: {msg}"))  # a cross-check naming its key
            continue
        lines.append((kind != "extra_forbidden", f"{source}: {key}: {msg}"))
    lines.sort(key=lambda item: item[0])  # stable: unknown keys first
    # A union (e.g. "auto" | true | false) reports once per member; say it once.
    return "\n".join(dict.fromkeys(text for _, text in lines))


def load(path: str | Path | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the embedded defaults. Relative
    paths in the file are made absolute against the file's directory (`_beside`)."""
    if path is None:
        return Config()
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file; check the path (radiusd.example.toml "
                          "documents every key)") from None
    except PermissionError:
        raise ConfigError(f"{source}: not readable by this user") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, give the TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    for internal in ("source", "found_by"):
        if internal in data:
            raise ConfigError(f"{source}: {internal}: unknown key (see radiusd.example.toml)")
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, data)) from None
    return _beside(config, Path(os.path.abspath(path)).parent).model_copy(
        update={"source": source})


CONFIG_ENV = "RADIUSD_CONFIG"
DEFAULT_CONFIG = Path("/etc/radiusd/radiusd.toml")


def find_config(explicit: str | None, env: Mapping[str, str] | None = None,
                default: Path | None = None) -> tuple[str | None, str]:
    """Which file `serve` and every other command read, and how it was found (README
    "Which config file"): ``-c FILE``, else ``$RADIUSD_CONFIG``, else
    /etc/radiusd/radiusd.toml when it exists, else (None) the embedded defaults."""
    env = os.environ if env is None else env
    default = DEFAULT_CONFIG if default is None else default
    if explicit:
        return explicit, "-c"
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV], f"${CONFIG_ENV}"
    if default.is_file():
        return str(default), "the default place"
    return None, ""


def _beside(config: Config, base: Path) -> Config:
    """Relative paths written in a config file made absolute against its directory, so
    that every command finds the same files from any working directory (issue 14)."""
    def at(value: str) -> str:
        if not value or value == ":memory:" or os.path.isabs(value):
            return value
        return str(base / value)

    # Only what the file says: a key left out keeps its default, relative to the working
    # directory as with the embedded defaults (the Docker image's /data).
    database, otp, sms, server = config.database, config.otp, config.sms, config.server
    radsec = config.radsec
    if database.url is None and "path" in database.model_fields_set:
        database = database.model_copy(update={"path": at(database.path)})
    if "key_file" in otp.model_fields_set:
        otp = otp.model_copy(update={"key_file": at(otp.key_file)})
    if "path" in sms.file.model_fields_set:
        sms = sms.model_copy(update={
            "file": sms.file.model_copy(update={"path": at(sms.file.path)})})
    if any("path" in p.file.model_fields_set for p in sms.providers.values()):
        sms = sms.model_copy(update={"providers": {
            name: p.model_copy(update={"file": p.file.model_copy(
                update={"path": at(p.file.path)})})
            if "path" in p.file.model_fields_set else p
            for name, p in sms.providers.items()}})
    if server.pid_file:
        server = server.model_copy(update={"pid_file": at(server.pid_file)})
    radsec = radsec.model_copy(update={k: at(getattr(radsec, k)) for k in (
        "certificate", "private_key", "ca_file") if k in radsec.model_fields_set})
    return config.model_copy(update={"database": database, "otp": otp, "sms": sms,
                                     "server": server, "radsec": radsec})
