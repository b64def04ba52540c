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
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
        block = bytes(a ^ b for a, b in zip(padded[i:i + 16], key, strict=True))
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
    step: int = 0
    session: int = 0
    pending: bool = False
    sent_ns: int = 0
    auth: bytes = b""
    measured: bool = False
    # login / accept modes
    user: int = 0
    code: bytes = b""
    klass: bytes = b""
    login_ns: int = 0
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
    rate: float = 0.0  # > 0: open loop, requests/s paced; slots only bound the backlog

    def __post_init__(self) -> None:
        self._nonce_prefix = os.urandom(8)
        self._seq = 0
        self._run = os.urandom(4).hex()
        self.slots: list[Slot] = []
        self.socks: list[Sock] = []
        self._done = asyncio.Event()
        self._free: list[Slot] = []
        self.backlogged = 0  # open loop: sends that waited for a free slot

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        n_socks = -(-self.inflight // IDS_PER_SOCKET)
        for _ in range(n_socks):
            s = socket.socket(family, socket.SOCK_DGRAM)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            s.setblocking(False)
            s.connect(self.target)
            proto = Sock(self)
            await loop.create_datagram_endpoint(lambda p=proto: p, sock=s)
            self.socks.append(proto)
        # Spread slots over the sockets, each with its own Identifier.
        for k in range(self.inflight):
            sock = self.socks[k % n_socks]
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
        slot.sent_ns = scheduled_ns or time.perf_counter_ns()
        if self.measuring:
            self.sent += 1
        else:
            self.warmup_sent += 1
        assert slot.sock.transport is not None
        slot.sock.transport.sendto(data)

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
            await asyncio.sleep(0.0005)

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.t_end = time.perf_counter()
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
            "replies": {CODE_NAMES.get(c, str(c)): n for c, n in sorted(self.codes.items())},
            "rate": self.rate or None,
            "backlogged": self.backlogged if self.rate else None,
            "loop": loop_name,
            "python": platform.python_version(),
        }


def human(r: dict[str, object]) -> str:
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
    p.add_argument("--target", default="127.0.0.1:1812", help="HOST:PORT, loopback only")
    p.add_argument("--secret", default="testing123")
    p.add_argument("--mode", choices=("status", "access", "acct"), default="status")
    p.add_argument("--inflight", type=int, default=64, help="requests kept in flight")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--count", type=int, default=0,
                   help="stop after this many measured requests (0: duration only)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds before a timeout")
    p.add_argument("--user", default="bench", help="User-Name for access/acct")
    p.add_argument("--password", default="benchpass", help="PAP password for access")
    p.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    args = p.parse_args(argv)

    try:
        target = parse_target(args.target)
    except ValueError as e:
        p.error(str(e))
    if not 1 <= args.inflight <= 65536:
        p.error("--inflight must be 1..65536")
    if not 0 < args.duration <= 3600:
        p.error("--duration must be more than 0 and at most 3600 seconds")
    if args.count < 0 or args.timeout <= 0 or args.warmup < 0:
        p.error("--count, --timeout and --warmup must not be negative")

    secret = args.secret.encode()
    templates = build_templates(args.mode, secret, args.user, args.password)
    gen = LoadGen(target, secret, templates, args.inflight, args.duration, args.count,
                  args.timeout, args.warmup)

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
    print(json.dumps(result), flush=True)
    print(human(result), file=sys.stderr)
    return 0 if gen.completed else 1


if __name__ == "__main__":
    sys.exit(main())
