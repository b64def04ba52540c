"""`[server] workers = N` (issue 12 item 4): the supervisor forks N workers sharing
the listen port with SO_REUSEPORT, keeps a NAS's retransmissions on one worker,
restarts a worker that dies, and stops them all on SIGTERM.

The workers here are a minimal UDP echo of their pid, bound exactly as radiusd's
listeners bind (`open_socket(..., reuse_port=True)`), run by the real `supervise`
in its own process. Then the whole `radiusd serve` with two workers on PostgreSQL, and
refused on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import os, signal, socket, sys
from radiusd.radius.listener import open_socket
from radiusd.workers import supervise

def worker(slot):
    sock = open_socket(f"127.0.0.1:{sys.argv[1]}", reuse_port=True)
    sock.settimeout(0.05)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not stopping:
        try:
            data, addr = sock.recvfrom(64)
        except (TimeoutError, InterruptedError):
            continue
        sock.sendto(str(os.getpid()).encode(), addr)
    return 0

sys.exit(supervise(int(sys.argv[2]), worker))
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_workers() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(port), "2"], cwd=ROOT,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while len(answering(port, sources=16)) < 2:  # both bound
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "the two workers never both answered"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ask(sock: socket.socket, port: int) -> int | None:
    sock.sendto(b"?", ("127.0.0.1", port))
    try:
        return int(sock.recv(64))
    except TimeoutError:
        return None


def answering(port: int, sources: int) -> set[int]:
    """The worker pids that answer `sources` clients, one source port each."""
    pids: set[int] = set()
    for _ in range(sources):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            pid = ask(s, port)
            if pid is not None:
                pids.add(pid)
    return pids


def test_workers_share_the_port_and_a_source_port_stays_on_one_worker(
        two_workers: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = two_workers
    assert len(answering(port, sources=64)) == 2  # both serve (2**-63 to miss one)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:
        nas.settimeout(0.5)
        retransmissions = {ask(nas, port) for _ in range(20)}
    assert len(retransmissions) == 1 and None not in retransmissions
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not answering(port, sources=4)


def test_a_worker_that_dies_is_started_again(
        two_workers: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = two_workers
    before = answering(port, sources=64)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        now = answering(port, sources=32)
        if len(now) == 2 and victim not in now:
            break
        assert time.monotonic() < deadline, f"no new worker: {now} after killing {victim}"
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert f"(pid {victim}) died (signal 9)" in err


# -- the whole server: `radiusd serve` with `[server] workers = 2` -------------------


def children(pid: int) -> set[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def two_worker_serve(pg_url: str, tmp_path: Path) -> Iterator[Any]:
    from tests.test_cluster_nodes import Node

    node = Node(tmp_path, pg_url, tmp_path / "radiusd.key", workers=2).start()
    try:
        assert node.proc is not None
        deadline = time.monotonic() + 30
        while node.log.count("radiusd ready") < 2 or len(children(node.proc.pid)) < 2:
            assert node.proc.poll() is None, node.log
            assert time.monotonic() < deadline, node.log
            time.sleep(0.05)  # polling a real process, not waiting for time to pass
        yield node
    finally:
        workers = children(node.proc.pid) if node.proc is not None else set()
        if node.proc is not None and node.proc.poll() is None:
            node.proc.terminate()
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:  # the parent hung: its workers go too
                node.kill()
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def test_serve_with_two_workers_on_postgresql_answers_every_source_port(
        two_worker_serve: Any) -> None:
    from tests.otp_support import ACCEPT, REJECT, enter, get_password, reply_message
    from tests.test_cluster_nodes import code_for

    node = two_worker_serve
    assert node.proc is not None
    workers = children(node.proc.pid)
    assert len(workers) == 2
    assert all(node.status_ok(node.auth4, timeout=2.0) for _ in range(32))
    # Each request from a new source port: the kernel spreads them over both workers.
    phones = [f"+7701555{i:04d}" for i in range(1, 17)]
    macs = [f"AA-BB-CC-00-01-{i:02X}" for i in range(len(phones))]
    pressed = await asyncio.gather(*(get_password(node.nas(timeout=5.0), p, mac=m)
                                     for p, m in zip(phones, macs, strict=True)))
    assert all(x.code == REJECT and reply_message(x).startswith("Password sent by SMS")
               for x in pressed), {reply_message(x) for x in pressed}
    codes = [await code_for(p, node) for p in phones]
    logins = await asyncio.gather(*(enter(node.nas(timeout=5.0), c, p, mac=m)
                                    for c, p, m in zip(codes, phones, macs, strict=True)))
    assert [x.code for x in logins] == [ACCEPT] * len(phones), \
        [reply_message(x) for x in logins]
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0, node.log
    assert not any(alive(pid) for pid in workers)
    assert "Traceback" not in node.log


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_two_workers_with_sqlite_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    conf = tmp_path / "radiusd.toml"
    conf.write_text(f'[server]\nworkers = 2\n\n[database]\npath = "{tmp_path / "r.db"}"\n')
    out = subprocess.run([sys.executable, "-m", "radiusd", command, "-c", str(conf)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "server.workers = 2 needs [database] url (PostgreSQL)" in out.stderr
    assert not (tmp_path / "r.db").exists()
