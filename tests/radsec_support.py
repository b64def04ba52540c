"""For the RadSec tests: certificates made on the spot (the `cryptography` package), a
server with a RadSec listener on loopback, and a TLS client that speaks RADIUS over
it with the simulated NAS's packets and checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyrad import packet as pp

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import Answer, SimulatedNAS
from radiusd.testing.server import loopback_config, running_server

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256, hex


class Authority:
    """A CA that writes PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}-ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, dns: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), expired: bool = False,
              server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        start = NOW - dt.timedelta(days=10 if expired else 1)
        end = NOW - dt.timedelta(days=2) if expired else NOW + dt.timedelta(days=30)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = f"{self.name}-{common_name}{'-expired' if expired else ''}"
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        key_path.chmod(0o600)
        return Issued(cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex())


@dataclass
class Pki:
    ca: Authority
    other_ca: Authority
    server: Issued
    nas: Issued  # CN nas1.example, the client "nas1"


def make_pki(directory: Path) -> Pki:
    ca = Authority(directory, "city")
    return Pki(ca=ca, other_ca=Authority(directory, "rogue"),
               server=ca.issue("radius.example", dns=("radius.example",),
                               ips=("127.0.0.1", "::1"), server=True),
               nas=ca.issue("nas1.example", dns=("nas1.example",)))


def radsec_config(tmp: Path, pki: Pki, *, clients: list[dict[str, Any]] | None = None,
                  **radsec: Any) -> Any:
    """A loopback server config with a RadSec listener on 127.0.0.1 and [::1]."""
    if clients is None:
        clients = [{"name": "nas1", "address": ["127.0.0.1", "::1"], "radsec": True,
                    "certificate_name": "nas1.example"}]
    return loopback_config(
        tmp,
        server={"radsec_listen": ["127.0.0.1:0", "[::1]:0"]},
        radsec={"certificate": str(pki.server.cert), "private_key": str(pki.server.key),
                "ca_file": str(pki.ca.path), **radsec},
        clients=clients,
    )


@asynccontextmanager
async def radsec_server(config: Any, clock: ManualClock | None = None
                        ) -> AsyncIterator[Server]:
    async with running_server(config, clock or ManualClock()) as server:
        yield server


def address(server: Server, family: int = 4) -> tuple[str, int]:
    assert server.radsec is not None
    for host, port in server.radsec.addresses:
        if (":" in host) == (family == 6):
            return host, port
    raise LookupError(f"no IPv{family} radsec listener")


def client_context(ca: Authority, issued: Issued | None,
                   maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
                   minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca.path))
    ctx.check_hostname = False
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    if issued is not None:
        ctx.load_cert_chain(str(issued.cert), str(issued.key))
    return ctx


class RadsecNas:
    """A NAS speaking RADIUS over one TLS connection (RFC 6614), with `SimulatedNAS`'s
    packets and reply checks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 secret: bytes = b"radsec") -> None:
        self.reader = reader
        self.writer = writer
        self.nas = SimulatedNAS(auth_address=("127.0.0.1", 0), secret=secret,
                                nas_identifier="radsec-nas")

    @classmethod
    async def connect(cls, where: tuple[str, int], ctx: ssl.SSLContext,
                      local_host: str | None = None) -> RadsecNas:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            where[0], where[1], ssl=ctx,
            local_addr=(local_host, 0) if local_host else None), 10)
        return cls(reader, writer)

    # The simulated NAS's packets, so the OTP helpers (tests/otp_support.py) drive this
    # NAS as they drive the UDP one.
    def access_request(self, *args: Any, **kwargs: Any) -> pp.AuthPacket:
        return self.nas.access_request(*args, **kwargs)

    def accounting_request(self, *args: Any, **kwargs: Any) -> pp.AcctPacket:
        return self.nas.accounting_request(*args, **kwargs)

    def status_server(self) -> pp.Packet:
        return self.nas.status_server()

    async def read_packet(self, timeout: float = 5.0) -> bytes:
        head = await asyncio.wait_for(self.reader.readexactly(4), timeout)
        length = int.from_bytes(head[2:4], "big")
        return head + await asyncio.wait_for(self.reader.readexactly(length - 4), timeout)

    async def send(self, pkt: pp.Packet, raw: bytes | None = None) -> Answer:
        raw = raw if raw is not None else self.nas.encode(pkt)
        self.writer.write(raw)
        await self.writer.drain()
        reply = await self.read_packet()
        return self.nas._verify(pkt, raw, reply, 1)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True when the server ends the connection (EOF or reset) within ``timeout``."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionError, ssl.SSLError, OSError):
            return True
        except TimeoutError:
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError, OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
