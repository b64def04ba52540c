"""The HTTP side under abuse (issue 19), through `radiusd serve` on loopback with real
sockets and the server's open-file limit lowered as systemd sets it: bounded
connections and descriptors, refusals that lock nobody out, SMS never stalled in
silence, bad input answered in one line, headers. "Other addresses" are 127.0.0.x
(Linux routes all of 127.0.0.0/8 to loopback)."""

from __future__ import annotations

import asyncio
import errno
import http.client
import json
import logging
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from radiusd.clock import ManualClock
from radiusd.http import start_http, stop_http
from radiusd.http.guard import ConnectionBook, connection_budget
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import loopback_config, running_server
from tests.test_serve_process import ServeProcess

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "http-abuse"
NUMBER = "8 701 234 56 78"
FLOOD = 3000


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(pred: Callable[[], Any], limit: float = 10.0) -> Any:
    """Poll until `pred` is truthy (bounded); returns its last value."""
    deadline = time.monotonic() + limit
    value = pred()
    while not value and time.monotonic() < deadline:
        time.sleep(0.05)
        value = pred()
    return value


class AbuseServe(ServeProcess):
    """`radiusd serve` with `[http]` on loopback and RLIMIT_NOFILE set for it."""

    def __init__(self, tmp: Path, nofile: tuple[int, int], http: str = "",
                 sms_path: Path | None = None) -> None:
        self.nofile = nofile
        self.http_extra = http
        self.sms_path = sms_path
        super().__init__(tmp)

    def write_config(self) -> None:
        super().write_config()
        self.http_port = free_tcp_port()
        text = self.config.read_text()
        if self.sms_path is not None:
            text = text.replace(f'path = "{self.tmp / "outbox.jsonl"}"',
                                f'path = "{self.sms_path}"')
        self.config.write_text(text + f"""
[http]
listen = ["127.0.0.1:{self.http_port}"]
{self.http_extra}
""")

    def start(self, attempts: int = 3) -> AbuseServe:
        soft, hard = self.nofile

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        for attempt in range(attempts):
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "radiusd", "serve", "-c", str(self.config)],
                    cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
            if self.wait_ready(retry_busy_port=attempt + 1 < attempts):
                return self
            self.write_config()
        raise AssertionError("unreachable")

    # -- HTTP as a client from a chosen loopback address ------------------------------

    def request(self, method: str, path: str, body: Any = None, source: str = "127.0.0.1",
                headers: dict[str, str] | None = None, port: int | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=5,
                                          source_address=(source, 0))
        try:
            hdrs = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def raw(self, data: bytes, source: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
        """Send bytes, read until the server closes (bounded by `timeout`)."""
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout,
                                      source_address=(source, 0)) as s:
            s.sendall(data)
            return read_all(s)

    def metrics(self, port: int | None = None) -> dict[str, float]:
        status, _, body = self.request("GET", "/metrics", port=port)
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def sms_to(self, e164: str) -> list[str]:
        path = self.sms_path or self.tmp / "outbox.jsonl"
        if not path.is_file():
            return []
        return [line for line in path.read_text().splitlines()
                if json.loads(line)["to"] == e164]

    def get_password_over_radius(self, number: str) -> str:
        """A NAS login page's "Get password": the Reply-Message it shows."""
        nas = SimulatedNAS(auth_address=self.auth4, secret=self.secret.encode(),
                           timeout=2.0, retries=1)
        answer = asyncio.run(nas.send(nas.access_request(number, "")))
        return str(answer.get("Reply-Message"))

    def status_server_ms(self) -> float | None:
        """One Status-Server round trip in ms; None when unanswered (1 s)."""
        t0 = time.perf_counter()
        ok = self.status_ok(self.auth4, timeout=1.0)
        return (time.perf_counter() - t0) * 1000 if ok else None


def read_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def p99(samples: list[float | None]) -> float:
    answered = [x for x in samples if x is not None]
    return statistics.quantiles(answered, n=100)[98] if len(answered) > 1 else answered[0]



def _watch(auth: tuple[str, int], secret: str, stop: Any, ready: Any, sent: Any,
           out: Any) -> None:
    sp = ServeProcess.__new__(ServeProcess)
    sp.secret = secret
    samples: list[tuple[float, float | None]] = []
    while not stop.is_set() and len(samples) < 20000:
        t0 = time.perf_counter()
        ok = sp.status_ok(auth, timeout=1.0)
        samples.append((time.monotonic(), (time.perf_counter() - t0) * 1000 if ok else None))
        ready.set()
        sent.value += 1
        stop.wait(0.002)
    out.put(samples)


class Watchdog:
    """Status-Server in a loop (one at a time, as a NAS does), from another process
    so that the flood's client work does not skew what it measures. `between(a, b)`:
    the round trips (ms, None when unanswered) that started in that monotonic span."""

    def __init__(self, sp: AbuseServe) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.ready = ctx.Event(), ctx.Event()
        self.sent: Any = ctx.Value("i", 0)
        self.out: Any = ctx.Queue()
        self.proc = ctx.Process(target=_watch, args=(sp.auth4, sp.secret, self.stop,
                                                     self.ready, self.sent, self.out))
        self.samples: list[tuple[float, float | None]] = []

    def __enter__(self) -> Watchdog:
        self.proc.start()
        assert self.ready.wait(30), "the Status-Server watchdog did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.samples = self.out.get(timeout=30)
        self.proc.join(10)

    def between(self, start: float, end: float) -> list[float | None]:
        return [ms for at, ms in self.samples if start <= at < end]


def need_descriptors(n: int) -> None:
    """The test process itself holds the flood: raise its own soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} descriptors in the test process; hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def flood(sp: AbuseServe, source: str, n: int) -> list[socket.socket]:
    """`n` keep-alive connections from `source`, each sent one GET /healthz and held."""
    held = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(2.0)
        try:
            s.bind((source, 0))
            s.connect(("127.0.0.1", sp.http_port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\n\r\n")
        except OSError:
            s.close()
            continue
        held.append(s)
    return held


def still_open(held: list[socket.socket]) -> tuple[int, int]:
    """(open, closed by the server) among the flood's sockets."""
    alive = 0
    for s in held:
        s.setblocking(False)
        try:
            alive += 1 if s.recv(4096) else 0  # the answer to its GET /healthz
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive, len(held) - alive


def record(name: str, text: str) -> None:
    print(text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(text + "\n")


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Callable[..., AbuseServe]]:
    started: list[AbuseServe] = []

    def start(nofile: tuple[int, int] = (1024, 1024), **kwargs: Any) -> AbuseServe:
        sp = AbuseServe(tmp_path, nofile, **kwargs).start()
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.kill()


# -- 1. connections are bounded -------------------------------------------------------


def held_by_server(sp: AbuseServe) -> float:
    return sp.metrics()["radiusd_http_connections"]


def test_idle_connections_from_one_address_leave_others_served_and_sms_sent(
        limited: Callable[..., AbuseServe]) -> None:
    need_descriptors(FLOOD + 500)
    sp = limited((1024, 1024))
    with Watchdog(sp) as dog:
        t0 = time.monotonic()
        assert wait_for(lambda: dog.sent.value >= 300)  # a baseline before the flood
        t1 = time.monotonic()
        held = flood(sp, "127.0.0.3", FLOOD)
        try:
            # Fresh clients from other addresses are served while the flood is held.
            for i in range(31):
                status, _, _ = sp.request("GET", "/healthz", source=f"127.0.0.{10 + i}")
                assert status == 200
            # SMS still go out: over HTTP and over RADIUS ("Get password").
            status, _, _ = sp.request("POST", "/api/v1/otp", {"phone": NUMBER},
                                      source="127.0.0.50")
            assert status == 202
            assert sp.get_password_over_radius("8 701 234 56 79").startswith(
                "Password sent by SMS")
            assert wait_for(lambda: sp.sms_to("+77012345678") and sp.sms_to("+77012345679"))
            metrics = sp.metrics()
            t2 = time.monotonic()
            open_, reset = still_open(held)
        finally:
            for s in held:
                s.close()
    before, during = dog.between(t0, t1), dog.between(t1, t2)
    assert before and during and None not in before + during  # every one answered
    # 64 of the flood, the /metrics request, a few other clients still closing
    assert metrics["radiusd_http_connections"] <= 64 + 8
    assert metrics['radiusd_http_connections_refused_total{reason="per_address"}'] \
        >= len(held) - 64
    assert "Too many open files" not in sp.log
    record("idle-flood.txt",
           f"RLIMIT_NOFILE soft=hard=1024, {FLOOD} connections from 127.0.0.3 each "
           f"sent GET /healthz and held: {open_} answered and kept open, {reset} closed "
           f"at once (server: {metrics['radiusd_http_connections']:.0f} open): RADIUS "
           f"Status-Server p99 {p99(before):.2f} ms before ({len(before)} sent), "
           f"{p99(during):.2f} ms during ({len(during)} sent, all answered)")


def test_a_flood_from_a_nas_address_fills_the_total_and_idle_ones_make_room(
        limited: Callable[..., AbuseServe]) -> None:
    """127.0.0.1 is a configured NAS (its NAT gets 20 times the per-address share),
    so its flood reaches the total cap; new clients elsewhere still get in."""
    need_descriptors(FLOOD + 500)
    sp = limited((1024, 1024))
    held = flood(sp, "127.0.0.1", FLOOD)
    try:
        for i in range(31):
            status, _, _ = sp.request("GET", "/healthz", source=f"127.0.1.{i + 1}")
            assert status == 200
        assert sp.request("POST", "/api/v1/otp", {"phone": NUMBER},
                          source="127.0.1.99")[0] == 202
        assert wait_for(lambda: sp.sms_to("+77012345678"))
        metrics = sp.metrics()
    finally:
        for s in held:
            s.close()
    cap = metrics['radiusd_http_connections_limit{scope="total"}']
    assert cap < 1024 - 128 and metrics["radiusd_http_connections"] <= cap
    assert metrics['radiusd_http_connections_closed_total{reason="idle_for_room"}'] >= 31
    assert "Too many open files" not in sp.log


def test_idle_slow_head_and_slow_body_connections_are_closed(
        limited: Callable[..., AbuseServe]) -> None:
    """Bounded in time: the server closes them (each read waits at most 10 s), where
    before idle connections stayed 3,630 s and a partial head forever."""
    sp = limited(http="idle_timeout_seconds = 2\nrequest_timeout_seconds = 1")
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", sp.http_port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\n\r\n")
        answer = read_all(idle)  # the answer, then the close after 2 s idle
    assert status_of(answer) == 200 and time.monotonic() - t0 < 9

    slow_heads = []
    for _ in range(20):  # slowloris: heads that never end
        s = socket.create_connection(("127.0.0.1", sp.http_port), timeout=10,
                                     source_address=("127.0.0.3", 0))
        s.sendall(b"GET / HTTP/1.1\r\nHost: portal\r\nX-Slow: ")
        slow_heads.append(s)
    t0 = time.monotonic()
    for s in slow_heads:
        with s:
            assert status_of(read_all(s)) == 408
    assert time.monotonic() - t0 < 9

    body = sp.raw(b"POST /api/v1/otp HTTP/1.1\r\nHost: portal\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 100\r\n\r\n{\"phone\": ",
                  source="127.0.0.4", timeout=10)
    assert status_of(body) == 408
    metrics = sp.metrics()
    assert metrics['radiusd_http_connections_closed_total{reason="request_timeout"}'] == 20
    assert metrics['radiusd_http_connections_closed_total{reason="body_timeout"}'] == 1


# -- 3. a refusal locks nobody out ----------------------------------------------------


def test_refused_presses_do_not_use_up_the_api_budget(
        limited: Callable[..., AbuseServe]) -> None:
    """From 20 addresses, 5 presses each for one number: 1 SMS, 99 refused ("wait
    before asking again"); the shipped api_per_minute = 100 is not used up by them."""
    sp = limited()
    answers = [sp.request("POST", "/api/v1/otp", {"phone": NUMBER},
                          source=f"127.0.2.{a}")[0] for a in range(1, 21) for _ in range(5)]
    assert answers.count(202) == 1 and answers.count(429) == 99
    for n in range(5):  # other users, other numbers, other addresses
        status, _, body = sp.request("POST", "/api/v1/otp", {"phone": f"8 702 000 00 0{n}"},
                                     source=f"127.0.3.{n + 1}")
        assert status == 202, body
    assert wait_for(lambda: all(sp.sms_to(f"+7702000000{n}") for n in range(5)))
    assert len(sp.sms_to("+77012345678")) == 1


# -- 4. bad input gets one clear line -------------------------------------------------

MALFORMED = {
    "nested JSON": b"POST /api/v1/otp HTTP/1.1\r\nHost: p\r\nContent-Type: application/json"
                   b"\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n" + b"[" * 5000,
    "unknown charset": b"POST /api/v1/otp HTTP/1.1\r\nHost: p\r\nContent-Type: application/"
                       b"json; charset=x-nope\r\nContent-Length: 14\r\nConnection: close"
                       b"\r\n\r\n{\"phone\": \"x\"}",
    "not UTF-8": b"POST /api/v1/otp HTTP/1.1\r\nHost: p\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 4\r\nConnection: close\r\n\r\n\"\xff\xfe\"",
    "negative length": b"POST /api/v1/otp HTTP/1.1\r\nHost: p\r\nContent-Length: -1\r\n\r\n",
    "bad chunk size": b"POST /api/v1/otp HTTP/1.1\r\nHost: p\r\nContent-Type: application/"
                      b"json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "64 kB URL": b"GET /?" + b"a" * 65536 + b" HTTP/1.1\r\nHost: p\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: p\r\nno colon here\r\n\r\n",
    "form with unknown charset": b"POST /portal/chilli-logon HTTP/1.1\r\nHost: p\r\n"
                                 b"Content-Type: application/x-www-form-urlencoded; "
                                 b"charset=x-nope\r\nContent-Length: 3\r\nConnection: "
                                 b"close\r\n\r\na=b",
    "multipart": b"POST /portal/chilli-logon HTTP/1.1\r\nHost: p\r\nContent-Type: multipart/"
                 b"form-data; boundary=x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n--x-",
}


def test_malformed_requests_get_4xx_and_one_throttled_line(
        limited: Callable[..., AbuseServe]) -> None:
    sp = limited(http='coovachilli_uamsecret = "a-long-random-secret-0123456789"')
    for name, data in MALFORMED.items():
        answer = sp.raw(data, source="127.0.0.7")
        assert 400 <= status_of(answer) < 500, (name, answer[:200])
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert b"server: radiusd\r\n" in head + b"\r\n", (name, head)
    for _ in range(200):  # a flood of them
        sp.raw(MALFORMED["negative length"], source="127.0.0.8")
        sp.raw(MALFORMED["nested JSON"], source="127.0.0.8")
    assert sp.request("GET", "/healthz")[0] == 200
    log = sp.log
    assert "Traceback" not in log and "ERROR" not in log
    lines = [line for line in log.splitlines() if "refused:" in line]
    assert 1 <= len(lines) <= 4, lines  # one per kind per minute, not one per request
    metrics = sp.metrics()
    assert metrics['radiusd_http_bad_requests_total{kind="parse"}'] >= 200
    assert metrics['radiusd_http_bad_requests_total{kind="input"}'] >= 1
    assert metrics['radiusd_http_bad_requests_total{kind="server"}'] == 0


# -- 5. headers, origins, /metrics ----------------------------------------------------


def test_headers_origins_and_metrics_access(limited: Callable[..., AbuseServe]) -> None:
    metrics_port = free_tcp_port()
    sp = limited(http=f'public_origins = ["http://wifi.example:8080"]\n'
                      f'metrics_listen = ["127.0.0.1:{metrics_port}"]\n'
                      f'metrics_allow = ["127.0.0.1/32"]')
    # A DNS-rebinding page: its Origin matches the Host it makes the browser send.
    status, _, body = sp.request("POST", "/api/v1/otp", {"phone": NUMBER},
                                 headers={"Origin": "http://evil.example:8080",
                                          "Host": "evil.example:8080"})
    assert (status, json.loads(body)["error"]) == (403, "forbidden_origin")
    status, headers, body = sp.request("POST", "/api/v1/otp", {"phone": NUMBER},
                                       headers={"Origin": "http://wifi.example:8080"})
    assert status == 202 and b"***" in body  # it shows the masked number
    assert headers["cache-control"] == "no-store"
    answers = [sp.request("GET", path) for path in ("/", "/healthz", "/api/v1/openapi.json",
                                                    "/static/portal.js", "/nothing-here")]
    answers.append(sp.request("POST", "/api/v1/otp", {"phone": "x"}))
    for _status, headers, _ in answers:
        assert headers["server"] == "radiusd", headers  # no Python or aiohttp version
    for _status, headers, _ in answers[:3] + answers[5:]:
        assert headers["cache-control"] == "no-store"
    parse_error = sp.raw(b"GET / HTTP/1.1\r\nHost: p\r\nbad header\r\n\r\n")
    assert b"\r\nServer: radiusd\r\n" in parse_error
    # /metrics: on its own listener only, from the listed addresses only.
    assert sp.request("GET", "/metrics")[0] == 404
    assert sp.request("GET", "/metrics", port=metrics_port, source="127.0.0.2")[0] == 404
    status, headers, text = sp.request("GET", "/metrics", port=metrics_port)
    assert status == 200 and b"radiusd_http_connections " in text
    assert sp.request("GET", "/healthz", port=metrics_port)[0] == 200
    assert sp.request("GET", "/", port=metrics_port)[0] == 404


# -- 2. SMS never stalls in silence ---------------------------------------------------


def test_a_stalled_sms_provider_is_logged_once_counted_and_degrades_healthz(
        limited: Callable[..., AbuseServe], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("the file provider cannot create its outbox under this\n")
    sp = limited(http="sms_stall_seconds = 1", sms_path=blocker / "outbox.jsonl")
    assert sp.request("GET", "/healthz")[0] == 200
    for n in range(3):
        assert sp.get_password_over_radius(f"8 701 234 56 7{n}").startswith(
            "Password sent by SMS")

    def degraded() -> dict[str, Any] | None:
        status, _, body = sp.request("GET", "/healthz")
        answer: dict[str, Any] = json.loads(body)
        return answer if status == 503 else None

    answer = wait_for(degraded)
    assert answer is not None, "healthz never said the SMS side was degraded"
    assert answer["status"] == "unhealthy"
    assert answer["checks"]["store"] == "ok"
    assert answer["checks"]["sms"].startswith("degraded: an SMS has waited")
    assert "provider file" in answer["checks"]["sms"]
    metrics = sp.metrics()
    assert metrics['radiusd_sms_send_results_total{result="retry"}'] >= 3
    assert metrics['radiusd_health_failing{part="sms"}'] == 1
    assert metrics['radiusd_health_episodes_total{part="sms"}'] == 1
    assert metrics['radiusd_up{component="sms"}'] == 0
    assert metrics["radiusd_sms_oldest_queued_seconds"] > 1
    failing = [line for line in sp.log.splitlines() if "sms failing" in line]
    assert len(failing) == 1 and " ERROR " in failing[0], failing  # once, however many
    # The provider works again: the next SMS goes out and the episode ends (logged).
    blocker.unlink()
    blocker.mkdir()
    assert sp.get_password_over_radius("8 702 000 00 00").startswith("Password sent by SMS")
    assert wait_for(lambda: sp.sms_to("+77020000000"))
    assert wait_for(lambda: "sms recovered" in sp.log)


# -- descriptors: the limit raised at start, EMFILE on accept reported -----------------


def test_the_open_file_soft_limit_is_raised_to_the_hard_limit(
        limited: Callable[..., AbuseServe]) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"needs a hard open-file limit of 4096; it is {hard}")
    sp = limited((1024, 4096))
    assert sp.proc is not None
    limits = Path(f"/proc/{sp.proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line
    cap = sp.metrics()['radiusd_http_connections_limit{scope="total"}']
    assert 1024 - 128 < cap < 4096 - 128


async def test_out_of_descriptors_on_accept_is_logged_once_and_counted(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]})
    async with running_server(config, clock) as server:
        handle = await start_http(server)
        assert handle is not None
        guard = handle.guard
        real_accept = guard.accept
        failures = 5

        async def accept(sock: socket.socket) -> tuple[socket.socket, Any]:
            nonlocal failures
            if failures:
                failures -= 1
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return await real_accept(sock)

        guard.accept = accept  # type: ignore[method-assign]
        caplog.set_level(logging.INFO)
        host, port = handle.addresses[0]
        served = None
        for _ in range(20):  # the first ones are shed (closed) while it lasts
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
                served = await asyncio.wait_for(reader.read(), 5)
                writer.close()
            except (ConnectionError, TimeoutError):
                served = None
            if served:
                break
        assert served is not None and served.startswith(b"HTTP/1.1 200")
        assert failures == 0
        failing = [r for r in caplog.records if "descriptors failing" in r.getMessage()]
        assert len(failing) == 1 and failing[0].levelno == logging.ERROR
        assert "Too many open files" in failing[0].getMessage()
        assert any("descriptors recovered" in r.getMessage() for r in caplog.records)
        assert handle.guard.counters.descriptors["accept"] == 5
        assert server.health.episodes["descriptors"] == 1
        await stop_http(handle)


async def test_healthz_says_503_with_the_reason_when_the_store_cannot_commit(
        tmp_path: Path, clock: ManualClock) -> None:
    import aiohttp

    config = loopback_config(tmp_path, http={"listen": ["127.0.0.1:0"]})
    async with running_server(config, clock) as server:
        handle = server.http
        assert handle is not None
        server.health.failed("store", "database or disk is full", clock.now())
        async with aiohttp.ClientSession() as s, s.get(handle.url("/healthz")) as r:
            assert r.status == 503
            body = await r.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["store"] == "error: database or disk is full"
        server.health.recovered("store", clock.now())
        async with aiohttp.ClientSession() as s, s.get(handle.url("/healthz")) as r:
            assert r.status == 200


# -- the rules, sans-IO ---------------------------------------------------------------


def test_connection_budget_keeps_room_below_the_open_file_limit() -> None:
    assert connection_budget(4096, soft_limit=1024, open_now=40) == 1024 - 40 - 128
    assert connection_budget(4096, soft_limit=1_048_576, open_now=40) == 4096
    assert connection_budget(4096, soft_limit=100, open_now=40) == 16  # never none
    assert connection_budget(4096, soft_limit=-1, open_now=40) == 4096  # unlimited


def test_connection_book_caps_per_client_and_in_all() -> None:
    book = ConnectionBook(total_cap=5, per_key_cap=2)
    for key in ("a", "a", "b"):
        assert book.verdict(key) == "ok"
        book.opened(key)
    assert book.verdict("a") == "per_address"
    assert book.verdict("a", factor=20) == "ok"  # a NAS's NAT
    book.opened(None)  # a trusted proxy: no per-address share
    book.opened(None)
    assert book.verdict("c") == "total" and book.verdict(None) == "total"
    book.closed("a")
    book.closed("a")
    assert book.verdict("a") == "ok" and "a" not in book.per_key


def test_a_refused_press_gives_its_api_budget_back() -> None:
    from radiusd.http.api import IpLimits

    limits = IpLimits(per_minute=100, per_hour=100, total_per_minute=2)
    assert limits.reserve(0.0) == 0
    limits.release(0.0)  # refused: no SMS
    assert limits.reserve(1.0) == 0 and limits.reserve(2.0) == 0
    assert limits.reserve(3.0) == pytest.approx(58.0)  # the SMS at 1.0 frees at 61.0
    assert limits.check("192.0.2.1", 3.0) == 0  # per-client counting is separate
    assert limits.total_wait(3.0) == pytest.approx(58.0)


async def test_sms_out_of_descriptors_is_one_episode_counted_until_one_goes_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from radiusd.health import Health
    from radiusd.sealing import Sealer
    from radiusd.sms import SendResult
    from radiusd.store.sqlite import Store
    from tests.test_sms_outbox import FakeProvider, press, worker

    store = Store(str(tmp_path / "radiusd.db"))
    await store.open()
    try:
        clock, sealer, health = ManualClock(), Sealer(os.urandom(32)), Health()
        provider = FakeProvider(
            SendResult("retry", f"sms.file.path: /x: {os.strerror(errno.EMFILE)}"),
            OSError(errno.EMFILE, os.strerror(errno.EMFILE)),
            SendResult("retry", "HTTP 503"))
        w = worker(store, provider, sealer, clock, health=health)
        caplog.set_level(logging.INFO)
        await press(store, sealer, clock, n=3)
        assert await w.run_once() == 3 and provider.sent == []
        assert not health.ok("sms") and not health.ok("descriptors")
        assert w.descriptor_errors == 2
        messages = [r.getMessage() for r in caplog.records]
        assert sum("sms failing" in m for m in messages) == 1
        assert sum("descriptors failing" in m for m in messages) == 1
        assert sum(r.exc_info is not None for r in caplog.records) <= 1
        clock.advance(30)  # past every backoff: the provider works again
        await w.run_once()
        assert len(provider.sent) == 3
        assert health.ok("sms") and health.ok("descriptors")
        assert any("sms recovered" in r.getMessage() for r in caplog.records)
        assert health.episodes == {"sms": 1, "descriptors": 1}
    finally:
        await store.close()
