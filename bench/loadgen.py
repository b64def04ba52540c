#!/usr/bin/env python3
"""Closed-loop RADIUS load generator: keeps N requests in flight over UDP.

    python bench/loadgen.py --target 127.0.0.1:1812 --secret testing123 \\
        --mode status --inflight 64 --duration 10

Works against any RADIUS server (radiusd, FreeRADIUS...). Loopback targets only: it
refuses any other address, so it cannot be pointed at someone else's server.

Modes
  status  Status-Server (RFC 5997) with Message-Authenticator; either port.
  access  Access-Request, PAP (User-Password), with Message-Authenticator; Accept and
          Reject both count as answered, and the split is reported.
  acct    Accounting-Request Start / Stop pairs (RFC 2866), a new Acct-Session-Id
          per pair; send to the accounting port.
  login   Whole logins (issue 4): Get password (Access-Request, empty PAP password,
          a new +7701... number and Calling-Station-Id per login) -> the code, read
          from radiusd's `[sms] provider = "file"` outbox (--sms-outbox, tailed every
          1 ms) -> Access-Request with it -> Accounting Start -> Stop (echoing the
          Accept's Class). Reports logins/s and per-step p50/p99. With --users instead
          (FreeRADIUS: codes already in radcheck) the Get-password step is skipped.
  provision  The login flow without Stop for --count users, written to --users-out.
  accept  Access-Request with the right code from the bound device, cycling through
          --users (re-authentication of live sessions).

--tls-ca/--tls-cert/--tls-key: RadSec (RFC 6614) instead of UDP: TLS connections to
--target (auth and accounting share them; the secret is then usually "radsec"), as
many as UDP sockets would be (--ids-per-socket requests in flight on each).

--rate R makes any single-request mode open loop: R requests/s whatever the replies
(--inflight bounds the outstanding ones); latency counts from when a request was due.

How: one template per packet kind is encoded once with pyrad (through the simulated
NAS's builders, an encoder independent of the server's own), then each send patches
the Identifier and the Request Authenticator (or, for accounting, the session id and
the computed authenticator), re-encrypts User-Password and recomputes
Message-Authenticator: every request is distinct, so a server's RFC 5080 duplicate
cache never answers for it. One connected UDP socket carries 256 Identifiers; each
in-flight "slot" owns one (socket, Identifier) pair and sends its next request as soon
as the previous one is answered or times out. Every reply's Response Authenticator is
checked.

Stops by itself: after --duration seconds of measurement (after --warmup) or after
--count requests, whichever comes first; then waits at most --timeout for stragglers.
Output: one JSON line on stdout, then one human line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import platform
import re
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CODE_NAMES = {2: "Access-Accept", 3: "Access-Reject", 5: "Accounting-Response",
              11: "Access-Challenge"}
MESSAGE_AUTHENTICATOR = 80
USER_PASSWORD = 2
ACCT_SESSION_ID = 44
USER_NAME = 1
CALLING_STATION_ID = 31
CLASS = 25
IDS_PER_SOCKET = 256


# -- target --------------------------------------------------------------------------


def parse_target(value: str) -> tuple[str, int]:
    """``127.0.0.1:1812``, ``[::1]:1812`` or ``localhost:1812``; loopback only."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: write HOST:PORT, e.g. 127.0.0.1:1812")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: give an IP address (loopback), not a name") from None
    if not addr.is_loopback:
        raise ValueError(f"{value!r}: refusing a non-loopback target; this tool only "
                         "loads servers on this machine (127.0.0.0/8 or ::1)")
    return str(addr), int(port)


# -- templates -----------------------------------------------------------------------


def _attr_value_offset(raw: bytes, attr_type: int) -> tuple[int, int]:
    """(offset, length) of the value of the first attribute of ``attr_type``."""
    i = 20
    while i + 2 <= len(raw):
        t, n = raw[i], raw[i + 1]
        if n < 2:
            break
        if t == attr_type:
            return i + 2, n - 2
        i += n
    raise LookupError(f"attribute {attr_type} not in template")


def _pw_crypt(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2 User-Password hiding."""
    padded = password + b"\x00" * (-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    last = authenticator
    for i in range(0, len(padded), 16):
        key = hashlib.md5(secret + last).digest()
        block = (int.from_bytes(padded[i:i + 16]) ^ int.from_bytes(key)).to_bytes(16)
        out += block
        last = block
    return bytes(out)


class Template:
    """A pre-encoded request; ``stamp`` makes a distinct copy for one send.

    Fixed-width fields can be patched per send (User-Name, Calling-Station-Id, the
    Acct-Session-Id, the PAP password up to 16 octets), and attributes appended (the
    Class an Access-Accept gave, echoed in accounting as a NAS does).
    """

    def __init__(self, raw: bytes, secret: bytes, *, password: bytes | None = None,
                 session_id_len: int = 0, patch_user: bool = False,
                 patch_mac: bool = False) -> None:
        self.raw = bytearray(raw)
        self.secret = secret
        self.code = raw[0]
        self.password = password
        self.ma = self._find(MESSAGE_AUTHENTICATOR)
        self.pw = self._find(USER_PASSWORD) if password is not None else None
        self.sid = self._find(ACCT_SESSION_ID) if session_id_len else None
        self.user = self._find(USER_NAME) if patch_user else None
        self.mac = self._find(CALLING_STATION_ID) if patch_mac else None
        if self.sid is not None:
            assert self.sid[1] == session_id_len, "session id template has the wrong width"
        if self.pw is not None:
            assert self.pw[1] == len(_pw_crypt(password or b"", secret, bytes(16)))
        if self.ma is not None:
            self.raw[self.ma[0]:self.ma[0] + 16] = bytes(16)

    def _find(self, attr_type: int) -> tuple[int, int] | None:
        try:
            return _attr_value_offset(bytes(self.raw), attr_type)
        except LookupError:
            return None

    def stamp(self, ident: int, nonce: bytes, session_id: bytes = b"", *,
              user: bytes = b"", mac: bytes = b"", password: bytes | None = None,
              append: bytes = b"") -> tuple[bytes, bytes]:
        """Return (datagram, request authenticator)."""
        buf = bytearray(self.raw)
        buf[1] = ident
        for field_, value in ((self.sid, session_id), (self.user, user), (self.mac, mac)):
            if field_ is not None and value:
                off, n = field_
                assert len(value) == n, "patched value has the wrong width"
                buf[off:off + n] = value
        if append:
            buf += append
            buf[2:4] = struct.pack(">H", len(buf))
        if self.code == 4:  # Accounting-Request: authenticator = MD5(packet, zeros, secret)
            buf[4:20] = bytes(16)
            auth = hashlib.md5(bytes(buf) + self.secret).digest()
            buf[4:20] = auth
            return bytes(buf), auth
        auth = nonce
        buf[4:20] = auth
        if self.pw is not None:
            off, n = self.pw
            pw = self.password if password is None else password
            hidden = _pw_crypt(pw or b"", self.secret, auth)
            assert len(hidden) == n, "password has the wrong width for this template"
            buf[off:off + n] = hidden
        if self.ma is not None:
            off = self.ma[0]
            buf[off:off + 16] = hmac.digest(self.secret, bytes(buf), "md5")
        return bytes(buf), auth


def build_templates(mode: str, secret: bytes, user: str, password: str) -> list[Template]:
    """One template per step of a slot's cycle (acct: Start then Stop)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from radiusd.testing.nas import SimulatedNAS

    nas = SimulatedNAS(auth_address=("127.0.0.1", 0), secret=secret,
                       nas_identifier="loadgen")
    if mode == "status":
        return [Template(nas.encode(nas.status_server("auth")), secret)]
    if mode == "access":
        pkt = nas.access_request(user, password, message_authenticator=True)
        return [Template(nas.encode(pkt), secret, password=password.encode())]
    if mode == "acct":
        sid = "0" * 16
        start = nas.accounting_request("Start", user=user, session_id=sid,
                                       extra=[("Framed-IP-Address", "10.5.0.2")])
        stop = nas.accounting_request(
            "Stop", user=user, session_id=sid,
            extra=[("Framed-IP-Address", "10.5.0.2"), ("Acct-Terminate-Cause", 1)],
            Acct_Session_Time=60, Acct_Input_Octets=123456, Acct_Output_Octets=654321,
            Acct_Input_Packets=100, Acct_Output_Packets=200)
        return [Template(nas.encode(start), secret, session_id_len=16),
                Template(nas.encode(stop), secret, session_id_len=16)]
    raise ValueError(f"unknown mode {mode!r}")


# -- the generator -------------------------------------------------------------------


@dataclass(slots=True)
class Slot:
    sock: Sock
    ident: int
    acct_sock: Sock | None = None  # login: Accounting goes to the other port
    step: int = 0
    session: int = 0
    pending: bool = False
    sent_ns: int = 0
    actual_ns: int = 0  # when it really left (open loop: may be after sent_ns, if late)
    auth: bytes = b""
    measured: bool = False
    # login / accept modes
    user: int = 0
    code: bytes = b""
    klass: bytes = b""
    login_ns: int = 0
    login_measured: bool = False
    waiting_sms: bool = False


class Sock(asyncio.DatagramProtocol):
    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.DatagramTransport | None = None
        self.slots: dict[int, Slot] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.gen.on_reply(self, data)

    def error_received(self, exc: Exception) -> None:
        self.gen.socket_errors += 1


class _Stream:
    """A TLS connection with a datagram socket's `sendto`, for `LoadGen._send`."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def sendto(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()


class TlsSock(asyncio.Protocol):
    """RadSec (RFC 6614 §2.4): replies cut from the stream by their Length field."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: _Stream | None = None
        self.slots: dict[int, Slot] = {}
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = _Stream(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data
        while len(buf) >= 4:
            length = (buf[2] << 8) | buf[3]
            if length < 20 or len(buf) < length:
                break
            self.gen.on_reply(self, buf[:length])  # type: ignore[arg-type]
            buf = buf[length:]
        self._buffer = buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.socket_errors += 1


@dataclass
class LoadGen:
    target: tuple[str, int]
    secret: bytes
    templates: list[Template]
    inflight: int
    duration: float
    count: int
    timeout: float
    warmup: float
    latencies: list[int] = field(default_factory=list)
    # Open loop: from the actual send, so a client too busy to send on time can be told
    # apart from a slow server (the main figures count from when a request was due).
    from_send: list[int] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    sent: int = 0
    completed: int = 0  # answered within the measurement window
    timeouts: int = 0
    bad_replies: int = 0
    late_replies: int = 0
    socket_errors: int = 0
    warmup_sent: int = 0
    measuring: bool = False
    stopping: bool = False
    t_start: float = 0.0
    t_end: float = 0.0
    t_start_mono: float = 0.0  # time.monotonic(), to line runs up with other processes
    t_end_mono: float = 0.0
    rate: float = 0.0  # > 0: open loop, requests/s paced; slots only bound the backlog
    ids_per_socket: int = IDS_PER_SOCKET  # fewer: more source ports (SO_REUSEPORT spread)
    tls: ssl.SSLContext | None = None  # RadSec (RFC 6614): TLS connections, not UDP

    def __post_init__(self) -> None:
        self._nonce_prefix = os.urandom(8)
        self._seq = 0
        self._run = os.urandom(4).hex()
        self.slots: list[Slot] = []
        self.socks: list[Sock] = []
        self._done = asyncio.Event()
        self._free: list[Slot] = []
        self.backlogged = 0  # open loop: sends that waited for a free slot

    async def _open_socks(self, target: tuple[str, int]) -> list[Sock]:
        loop = asyncio.get_running_loop()
        if self.tls is not None:
            def factory() -> TlsSock:
                return TlsSock(self)

            conns: list[Any] = []  # TlsSock: a Sock as far as LoadGen is concerned
            for _ in range(-(-self.inflight // self.ids_per_socket)):
                _, conn = await loop.create_connection(factory, target[0], target[1],
                                                       ssl=self.tls)
                conns.append(conn)
            self.socks += conns
            return conns
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        socks = []
        for _ in range(-(-self.inflight // self.ids_per_socket)):
            s = socket.socket(family, socket.SOCK_DGRAM)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            s.setblocking(False)
            s.connect(target)
            proto = Sock(self)
            await loop.create_datagram_endpoint(lambda p=proto: p, sock=s)
            socks.append(proto)
        self.socks += socks
        return socks

    async def open(self) -> None:
        socks = await self._open_socks(self.target)
        n_socks = len(socks)
        # Spread slots over the sockets, each with its own Identifier.
        for k in range(self.inflight):
            sock = socks[k % n_socks]
            slot = Slot(sock, ident=(k // n_socks) % 256)
            sock.slots[slot.ident] = slot
            self.slots.append(slot)

    def close(self) -> None:
        for s in self.socks:
            if s.transport is not None:
                s.transport.close()

    def _nonce(self) -> bytes:
        self._seq += 1
        return self._nonce_prefix + struct.pack(">Q", self._seq)

    def _session_id(self, slot: Slot, new: bool) -> bytes:
        if new:  # a new session: a run-unique Acct-Session-Id
            slot.session = self._seq
        return f"{self._run}{slot.session & 0xFFFFFFFF:08x}".encode()

    def _make(self, slot: Slot) -> tuple[bytes, bytes]:
        tpl = self.templates[slot.step]
        nonce = self._nonce()
        sid = self._session_id(slot, slot.step == 0) if tpl.sid is not None else b""
        return tpl.stamp(slot.ident, nonce, sid)

    def _send(self, slot: Slot, scheduled_ns: int = 0) -> None:
        data, auth = self._make(slot)
        slot.auth = auth
        slot.pending = True
        slot.measured = self.measuring
        # Open loop: latency counts from when the request was due, so a client-side
        # backlog is not hidden (no coordinated omission).
        slot.actual_ns = time.perf_counter_ns()
        slot.sent_ns = scheduled_ns or slot.actual_ns
        if self.measuring:
            self.sent += 1
        else:
            self.warmup_sent += 1
        sock = slot.acct_sock if slot.acct_sock is not None and \
            self.templates[slot.step].code == 4 else slot.sock
        assert sock.transport is not None
        sock.transport.sendto(data)

    def on_reply(self, sock: Sock, data: bytes) -> None:
        now = time.perf_counter_ns()
        if len(data) < 20:
            self.bad_replies += 1
            return
        slot = sock.slots.get(data[1])
        if slot is None or not slot.pending:
            self.late_replies += 1
            return
        expect = hashlib.md5(data[:4] + slot.auth + data[20:] + self.secret).digest()
        if expect != data[4:20]:
            # Most likely the answer to an earlier request of this slot that timed out.
            self.late_replies += 1
            return
        slot.pending = False
        self._answered(slot, data, now)

    def _answered(self, slot: Slot, data: bytes, now: int) -> None:
        if slot.measured:
            self.latencies.append(now - slot.sent_ns)
            if self.rate:
                self.from_send.append(now - slot.actual_ns)
            self.codes[data[0]] = self.codes.get(data[0], 0) + 1
            if not self.stopping:
                self.completed += 1
        self._next(slot)

    def _advance(self, slot: Slot) -> None:
        slot.step = (slot.step + 1) % len(self.templates)

    def _next(self, slot: Slot, *, timed_out: bool = False) -> None:
        self._advance(slot)
        if self.stopping:
            if not any(s.pending for s in self.slots):
                self._done.set()
            return
        if self.measuring and self.count and self.completed + self.timeouts >= self.count:
            self._stop()
            return
        if self.rate:
            self._free.append(slot)
            if self._owed:
                self._pace()
            return
        self._send(slot)

    # -- open loop -------------------------------------------------------------------

    _owed: int = 0
    _paced: int = 0

    def _pace(self) -> None:
        """Send every request that is due by now (one per 1/rate s since the start)."""
        now = time.perf_counter_ns()
        due = int((now - self._t0_ns) * self.rate / 1e9) + 1
        while self._paced < due and not self.stopping:
            if not self._free:
                self._owed = due - self._paced
                return
            slot = self._free.pop()
            scheduled = self._t0_ns + int(self._paced * 1e9 / self.rate)
            if now - scheduled > 1_000_000:  # sent more than 1 ms after it was due
                self.backlogged += self.measuring
            self._paced += 1
            self._send(slot, scheduled)
        self._owed = 0

    async def _pacer(self) -> None:
        self._t0_ns = time.perf_counter_ns()
        while not self.stopping:
            self._pace()
            # 1 ms: libuv's timers count whole milliseconds, so under uvloop 0.5 ms was
            # a 0 ms timer, a busy loop that took a whole core from the server measured
            # (the stock loop wakes about every 1.1 ms either way).
            await asyncio.sleep(0.001)

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.t_end = time.perf_counter()
            self.t_end_mono = time.monotonic()
            if not any(s.pending for s in self.slots):
                self._done.set()

    async def _watch_timeouts(self) -> None:
        limit = int(self.timeout * 1e9)
        while True:
            await asyncio.sleep(min(self.timeout / 4, 0.25))
            now = time.perf_counter_ns()
            for slot in self.slots:
                if slot.pending and now - slot.sent_ns > limit:
                    slot.pending = False
                    if slot.measured:
                        self.timeouts += 1
                    self._next(slot, timed_out=True)
            self._check_waits(now)

    def _check_waits(self, now: int) -> None:
        """Subclasses: time out what a slot waits for besides a reply."""

    async def run(self) -> None:
        await self.open()
        watcher = asyncio.create_task(self._watch_timeouts())
        pacer = None
        try:
            if self.rate:
                self._free = list(reversed(self.slots))
                pacer = asyncio.create_task(self._pacer())
            else:
                for slot in self.slots:
                    self._start_slot(slot)
            if self.warmup > 0:
                await asyncio.sleep(self.warmup)
            self.measuring = True
            self.t_start = time.perf_counter()
            self.t_start_mono = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_stopping(), self.duration)
            self._stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.timeout + 0.5)
            for slot in self.slots:  # still unanswered after the grace: timeouts
                if slot.pending and slot.measured:
                    self.timeouts += 1
                slot.pending = False
        finally:
            for task in (watcher, pacer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self.close()

    def _start_slot(self, slot: Slot) -> None:
        self._send(slot)

    async def _wait_stopping(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.05)

    def report(self, mode: str, loop_name: str) -> dict[str, object]:
        window = max(self.t_end - self.t_start, 1e-9)
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1e6, 3)

        return {
            "mode": mode,
            "target": f"{self.target[0]}:{self.target[1]}",
            "inflight": self.inflight,
            "sockets": len(self.socks),
            "window_s": round(window, 3),
            "t_start_monotonic": self.t_start_mono,
            "t_end_monotonic": self.t_end_mono,
            "warmup_s": self.warmup,
            "sent": self.sent,
            "completed": self.completed,
            "timeouts": self.timeouts,
            "late_replies": self.late_replies,
            "bad_replies": self.bad_replies,
            "socket_errors": self.socket_errors,
            "rps": round(self.completed / window, 1),
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
            "p99_from_send_ms": round(sorted(self.from_send)[
                int(0.99 * len(self.from_send))] / 1e6, 3) if self.from_send else None,
            "replies": {CODE_NAMES.get(c, str(c)): n for c, n in sorted(self.codes.items())},
            "rate": self.rate or None,
            "backlogged": self.backlogged if self.rate else None,
            "loop": loop_name,
            "python": platform.python_version(),
        }


# -- login / accept (issue 4) --------------------------------------------------------


STEPS = ("get_password", "login", "start", "stop")
EXPECTED = {0: (3,), 1: (2,), 2: (5,), 3: (5,)}  # get_password: Access-Reject + SMS
CODE_RE = re.compile(rb"\d{4,12}")


def kz_number(i: int) -> str:
    """A distinct Kazakh mobile number (Kcell 701) per index."""
    return f"+7701{i % 10_000_000:07d}"


def device_mac(i: int) -> str:
    """A distinct, locally administered MAC address per index (Calling-Station-Id)."""
    v = i % (1 << 40)
    return "02-" + "-".join(f"{(v >> sh) & 0xFF:02X}" for sh in (32, 24, 16, 8, 0))


@dataclass(slots=True)
class User:
    number: str
    mac: str
    code: str


def read_users(path: Path) -> list[User]:
    users = [User(**json.loads(line)) for line in path.read_text().splitlines() if line]
    if not users:
        raise ValueError(f"{path}: no users")
    return users


def login_templates(secret: bytes, code_len: int) -> list[Template]:
    """Get password (empty PAP), login (PAP code), Accounting Start, Stop: all with a
    patchable User-Name and Calling-Station-Id."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from radiusd.testing.nas import SimulatedNAS

    nas = SimulatedNAS(auth_address=("127.0.0.1", 0), secret=secret,
                       nas_identifier="loadgen")
    user, mac, code = kz_number(0), device_mac(0), "0" * code_len
    get = nas.access_request(user, "", mac=mac, message_authenticator=True)
    login = nas.access_request(user, code, mac=mac, message_authenticator=True)
    sid = "0" * 16
    start = nas.accounting_request("Start", user=user, session_id=sid, mac=mac,
                                   extra=[("Framed-IP-Address", "10.5.0.2")])
    stop = nas.accounting_request(
        "Stop", user=user, session_id=sid, mac=mac,
        extra=[("Framed-IP-Address", "10.5.0.2"), ("Acct-Terminate-Cause", 1)],
        Acct_Session_Time=60, Acct_Input_Octets=123456, Acct_Output_Octets=654321,
        Acct_Input_Packets=100, Acct_Output_Packets=200)
    kw = {"patch_user": True, "patch_mac": True}
    return [Template(nas.encode(get), secret, password=b"", **kw),
            Template(nas.encode(login), secret, password=code.encode(), **kw),
            Template(nas.encode(start), secret, session_id_len=16, **kw),
            Template(nas.encode(stop), secret, session_id_len=16, **kw)]


def reply_attr(data: bytes, attr_type: int) -> bytes | None:
    try:
        off, n = _attr_value_offset(data, attr_type)
    except LookupError:
        return None
    return data[off:off + n]


class LoginGen(LoadGen):
    """Each slot runs whole logins: Get password -> (SMS) -> login with the code ->
    Accounting Start -> Stop, a new number and device for each login.

    With ``users`` (no SMS: FreeRADIUS, whose radcheck already holds the codes) the
    Get-password step is skipped and the slots cycle through those users. With
    ``provision`` the Stop is left out and each logged-in user is kept (for `accept`).
    """

    def setup(self, *, sms_path: Path | None, users: list[User] | None,
              number_base: int, provision: bool, sms_timeout: float) -> None:
        self.sms_path = sms_path
        self.users = users
        self.number_base = number_base
        self.provision = provision
        self.sms_timeout_ns = int(sms_timeout * 1e9)
        self.first_step = 1 if users else 0
        self.last_step = 2 if provision else 3
        self.step_lat: dict[str, list[int]] = {n: [] for n in (*STEPS, "sms")}
        self.step_codes: dict[str, dict[int, int]] = {n: {} for n in STEPS}
        self.failures: dict[str, int] = {}
        self.sms_timeouts = 0
        self.abandoned = 0
        self.round_trips = 0
        self.provisioned: list[User] = []
        self._issued = 0
        self._waiting: dict[str, Slot] = {}
        self._early: dict[str, bytes] = {}
        self._sms_pos = sms_path.stat().st_size if sms_path and sms_path.exists() else 0
        self._class_attr: dict[int, bytes] = {}

    acct_target: tuple[str, int]

    async def open(self) -> None:
        await super().open()
        # RadSec: accounting shares the connections (RFC 6614 §2.4)
        acct = self.socks if self.tls is not None else await self._open_socks(self.acct_target)
        for k, slot in enumerate(self.slots):
            slot.acct_sock = acct[k % len(acct)]
            slot.acct_sock.slots[slot.ident] = slot

    def _who(self, slot: Slot) -> tuple[str, str]:
        if self.users:
            u = self.users[slot.user % len(self.users)]
            return u.number, u.mac
        return kz_number(slot.user), device_mac(slot.user)

    def _start_slot(self, slot: Slot) -> None:
        self._begin(slot)

    def _begin(self, slot: Slot) -> None:
        if self._halt_if_done():
            return
        slot.user = self.number_base + self._issued
        self._issued += 1
        if self.users:
            slot.code = self.users[slot.user % len(self.users)].code.encode()
        slot.klass = b""
        slot.login_ns = time.perf_counter_ns()
        slot.session = 0
        slot.login_measured = self.measuring
        slot.step = self.first_step
        self._send(slot)

    def _halt_if_done(self) -> bool:
        if self.stopping:
            if not any(s.pending for s in self.slots):
                self._done.set()
            return True
        if self.count and (self.measuring or self.provision) and self.completed >= self.count:
            self._stop()
            return True
        return False

    def _make(self, slot: Slot) -> tuple[bytes, bytes]:
        number, mac = self._who(slot)
        user, macb = number.encode(), mac.encode()
        tpl = self.templates[slot.step]
        nonce = self._nonce()
        if slot.step == 0:
            return tpl.stamp(slot.ident, nonce, user=user, mac=macb)
        if slot.step == 1:
            return tpl.stamp(slot.ident, nonce, user=user, mac=macb, password=slot.code)
        sid = self._session_id(slot, slot.step == 2)
        append = bytes([CLASS, len(slot.klass) + 2]) + slot.klass if slot.klass else b""
        return tpl.stamp(slot.ident, nonce, sid, user=user, mac=macb, append=append)

    def _answered(self, slot: Slot, data: bytes, now: int) -> None:
        step = slot.step
        name = STEPS[step]
        measured = slot.login_measured
        if measured:
            self.step_lat[name].append(now - slot.sent_ns)
            codes = self.step_codes[name]
            codes[data[0]] = codes.get(data[0], 0) + 1
            if not self.stopping:
                self.round_trips += 1
        if data[0] not in EXPECTED[step]:
            if measured:
                key = f"{name}: {CODE_NAMES.get(data[0], str(data[0]))}"
                self.failures[key] = self.failures.get(key, 0) + 1
            self.abandoned += 1
            self._begin(slot)
            return
        if step == 0:
            number, _ = self._who(slot)
            slot.waiting_sms = True
            slot.sent_ns = now
            code = self._early.pop(number, None)
            if code is not None:
                self._got_code(slot, code, now)
            else:
                self._waiting[number] = slot
            return
        if step == 1:
            slot.klass = reply_attr(data, CLASS) or b""
        if step == self.last_step:
            if self.provision:
                number, mac = self._who(slot)
                self.provisioned.append(User(number, mac, slot.code.decode()))
            if (measured or self.provision) and not self.stopping:
                self.completed += 1
                self.latencies.append(now - slot.login_ns)
            self._begin(slot)
            return
        if self._halt_if_done():
            return
        slot.step = step + 1
        self._send(slot)

    def _got_code(self, slot: Slot, code: bytes, now: int) -> None:
        slot.waiting_sms = False
        if slot.login_measured:
            self.step_lat["sms"].append(now - slot.sent_ns)
        slot.code = code
        if self._halt_if_done():
            return
        slot.step = 1
        self._send(slot)

    def _next(self, slot: Slot, *, timed_out: bool = False) -> None:
        self.abandoned += 1  # a lost reply ends this login; the slot starts another
        self._begin(slot)

    def _check_waits(self, now: int) -> None:
        for number, slot in list(self._waiting.items()):
            if slot.waiting_sms and now - slot.sent_ns > self.sms_timeout_ns:
                del self._waiting[number]
                slot.waiting_sms = False
                if slot.login_measured:
                    self.sms_timeouts += 1
                self.abandoned += 1
                self._begin(slot)

    def _read_outbox(self, buf: bytes) -> bytes:
        """Hand each complete JSON line's code to the slot waiting for that number."""
        *lines, rest = buf.split(b"\n")
        now = time.perf_counter_ns()
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            found = CODE_RE.findall(str(msg.get("text", "")).encode())
            if not found:
                continue
            to, code = str(msg.get("to")), found[-1]
            slot = self._waiting.pop(to, None)
            if slot is not None and slot.waiting_sms:
                self._got_code(slot, code, now)
            else:
                self._early[to] = code
        return rest

    async def _tail(self) -> None:
        """Follow the SMS outbox file (what a user's phone would receive) every 1 ms."""
        assert self.sms_path is not None
        fd = -1
        buf = b""
        try:
            while True:
                if fd < 0:
                    with contextlib.suppress(FileNotFoundError):
                        fd = os.open(self.sms_path, os.O_RDONLY)
                if fd >= 0:
                    size = os.fstat(fd).st_size
                    if size > self._sms_pos:
                        buf += os.pread(fd, size - self._sms_pos, self._sms_pos)
                        self._sms_pos = size
                        buf = self._read_outbox(buf)
                await asyncio.sleep(0.001)
        finally:
            if fd >= 0:
                os.close(fd)

    async def run(self) -> None:
        tail = asyncio.create_task(self._tail()) if self.first_step == 0 else None
        try:
            await super().run()
        finally:
            if tail is not None:
                tail.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tail

    def report(self, mode: str, loop_name: str) -> dict[str, object]:
        r = super().report(mode, loop_name)
        window = max(self.t_end - self.t_start, 1e-9)

        def pct(values: list[int], p: float) -> float | None:
            if not values:
                return None
            v = sorted(values)
            return round(v[min(len(v) - 1, int(p / 100 * len(v)))] / 1e6, 3)

        r["logins_per_s"] = r.pop("rps")
        r["round_trips_per_s"] = round(self.round_trips / window, 1)
        r["login_p50_ms"] = r.pop("p50_ms")
        r["login_p99_ms"] = r.pop("p99_ms")
        r["steps"] = {
            name: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99),
                   **({"replies": {CODE_NAMES.get(c, str(c)): n
                                   for c, n in sorted(self.step_codes[name].items())}}
                      if name in self.step_codes else {})}
            for name, v in self.step_lat.items() if v}
        r["failures"] = self.failures
        r["sms_timeouts"] = self.sms_timeouts
        r["abandoned_logins"] = self.abandoned
        r["with_sms"] = self.first_step == 0
        del r["replies"]
        return r


class AcceptGen(LoadGen):
    """Access-Request with the right code from the device it is bound to, cycling
    through pre-provisioned users (re-authentication of live sessions)."""

    users: list[User]

    def setup(self, users: list[User]) -> None:
        self.users = users
        self._enc = [(u.number.encode(), u.mac.encode(), u.code.encode()) for u in users]

    async def open(self) -> None:
        await super().open()
        spread = max(1, len(self.users) // len(self.slots))
        for k, slot in enumerate(self.slots):
            slot.user = k * spread

    def _make(self, slot: Slot) -> tuple[bytes, bytes]:
        user, mac, code = self._enc[slot.user % len(self._enc)]
        return self.templates[0].stamp(slot.ident, self._nonce(), user=user, mac=mac,
                                       password=code)

    def _advance(self, slot: Slot) -> None:
        slot.user += 1


def human(r: dict[str, object]) -> str:
    if "logins_per_s" in r:
        steps = r["steps"]
        assert isinstance(steps, dict)
        detail = "; ".join(f"{k} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms"
                           for k, v in steps.items())
        return (f"{r['mode']} -> {r['target']} inflight={r['inflight']}: "
                f"{r['logins_per_s']:.0f} logins/s ({r['round_trips_per_s']:.0f} round "
                f"trips/s), login p50 {r['login_p50_ms']} ms, p99 {r['login_p99_ms']} ms; "
                f"{detail}; {r['timeouts']} timeouts, {r['sms_timeouts']} SMS timeouts, "
                f"failures {r['failures'] or 'none'}")
    replies = r["replies"]
    assert isinstance(replies, dict)
    total = sum(replies.values()) or 1
    split = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in replies.items()) or "no replies"
    return (f"{r['mode']} -> {r['target']} inflight={r['inflight']}: {r['rps']:.0f} req/s, "
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['timeouts']} timeouts "
            f"({split}; {r['completed']} answered in {r['window_s']} s, {r['loop']})")


def probe(target: tuple[str, int], secret: bytes, timeout: float = 0.5) -> bool:
    """One blocking Status-Server; True if a verified answer came back."""
    tpl = build_templates("status", secret, "", "")[0]
    data, auth = tpl.stamp(1, os.urandom(16))
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(target)
            s.send(data)
            reply = s.recv(4096)
        except OSError:
            return False
    return (len(reply) >= 20 and reply[1] == 1
            and hashlib.md5(reply[:4] + auth + reply[20:] + secret).digest() == reply[4:20])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:1812",
                   help="HOST:PORT, loopback only (login/provision: the auth port)")
    p.add_argument("--acct-target", help="login/provision: the accounting HOST:PORT "
                   "(default: auth port + 1)")
    p.add_argument("--secret", default="testing123")
    p.add_argument("--mode", choices=("status", "access", "acct", "login", "provision",
                                      "accept"), default="status")
    p.add_argument("--inflight", type=int, default=64,
                   help="requests kept in flight (with --rate: at most in flight)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--count", type=int, default=0,
                   help="stop after this many measured requests (login: logins; "
                   "0: duration only)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds before a timeout")
    p.add_argument("--rate", type=float, default=0.0,
                   help="open loop: send this many requests/s whatever the replies "
                   "(status/access/acct/accept); latency counts from when a request was due")
    p.add_argument("--user", default="bench", help="User-Name for access/acct")
    p.add_argument("--password", default="benchpass", help="PAP password for access")
    p.add_argument("--sms-outbox", type=Path,
                   help="login/provision: radiusd's [sms.file] path, tailed for the codes")
    p.add_argument("--users", type=Path, help="accept (and login without SMS): JSON lines "
                   '{"number", "mac", "code"} of users whose password is live')
    p.add_argument("--users-out", type=Path, help="provision: write the users here")
    p.add_argument("--number-base", type=int, default=-1,
                   help="login/provision: first number index (+7701 and 7 digits); "
                   "default random")
    p.add_argument("--code-length", type=int, default=6, help="digits of a password")
    p.add_argument("--sms-timeout", type=float, default=10.0,
                   help="seconds to wait for a code in the outbox")
    p.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    p.add_argument("--ids-per-socket", type=int, default=IDS_PER_SOCKET,
                   help="in-flight requests per UDP socket (1..256); fewer gives more "
                   "source ports, which SO_REUSEPORT spreads over a server's workers")
    p.add_argument("--tls-ca", type=Path, help="RadSec: the CA that signed the server")
    p.add_argument("--tls-cert", type=Path, help="RadSec: this client's certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="RadSec: its key (PEM)")
    args = p.parse_args(argv)

    try:
        target = parse_target(args.target)
        acct_target = parse_target(args.acct_target) if args.acct_target else \
            (target[0], target[1] + 1)
    except ValueError as e:
        p.error(str(e))
    if not 1 <= args.inflight <= 65536:
        p.error("--inflight must be 1..65536")
    if not 0 < args.duration <= 3600:
        p.error("--duration must be more than 0 and at most 3600 seconds")
    if not 1 <= args.ids_per_socket <= IDS_PER_SOCKET:
        p.error(f"--ids-per-socket must be 1..{IDS_PER_SOCKET}")
    if args.count < 0 or args.timeout <= 0 or args.warmup < 0 or args.rate < 0:
        p.error("--count, --timeout, --warmup and --rate must not be negative")
    if args.rate and args.mode in ("login", "provision"):
        p.error("--rate is for single-request modes (status, access, acct, accept)")
    if args.mode == "accept" and not args.users:
        p.error("--mode accept needs --users (see --mode provision)")
    if args.mode in ("login", "provision") and not (args.sms_outbox or args.users):
        p.error(f"--mode {args.mode} needs --sms-outbox (radiusd) or --users (no SMS)")
    if args.mode == "provision" and not (args.users_out and args.count and args.sms_outbox):
        p.error("--mode provision needs --sms-outbox, --count K and --users-out")

    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        if not (args.tls_ca and args.tls_cert and args.tls_key):
            p.error("RadSec needs --tls-ca, --tls-cert and --tls-key")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.load_verify_locations(cafile=str(args.tls_ca))
        tls.load_cert_chain(str(args.tls_cert), str(args.tls_key))
    secret = args.secret.encode()
    common = dict(inflight=args.inflight, duration=args.duration, count=args.count,
                  timeout=args.timeout, warmup=args.warmup, rate=args.rate,
                  ids_per_socket=args.ids_per_socket, tls=tls)
    gen: LoadGen
    if args.mode in ("login", "provision"):
        base = args.number_base if args.number_base >= 0 else \
            int.from_bytes(os.urandom(4), "big") % 9_000_000
        lg = LoginGen(target, secret, login_templates(secret, args.code_length), **common)
        lg.setup(sms_path=args.sms_outbox,
                 users=read_users(args.users) if args.users else None,
                 number_base=base, provision=args.mode == "provision",
                 sms_timeout=args.sms_timeout)
        lg.acct_target = acct_target
        gen = lg
    elif args.mode == "accept":
        ag = AcceptGen(target, secret, login_templates(secret, args.code_length)[1:2],
                       **common)
        ag.setup(read_users(args.users))
        gen = ag
    else:
        templates = build_templates(args.mode, secret, args.user, args.password)
        gen = LoadGen(target, secret, templates, **common)

    loop_name = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            loop_name = "uvloop"
        except ImportError:
            uvloop = None  # type: ignore[assignment]
    if loop_name == "uvloop":
        uvloop.run(gen.run())
    else:
        asyncio.run(gen.run())
    result = gen.report(args.mode, loop_name)
    if isinstance(gen, LoginGen) and gen.provision:
        assert args.users_out is not None
        args.users_out.write_text("".join(
            json.dumps({"number": u.number, "mac": u.mac, "code": u.code}) + "\n"
            for u in gen.provisioned))
        result["provisioned"] = len(gen.provisioned)
    print(json.dumps(result), flush=True)
    print(human(result), file=sys.stderr)
    return 0 if gen.completed else 1


if __name__ == "__main__":
    sys.exit(main())
