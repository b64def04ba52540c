"""`[server] workers = N` (issue 12 item 4): the supervisor forks N workers sharing
the listen port with SO_REUSEPORT, keeps a NAS's retransmissions on one worker,
restarts a worker that dies, and stops them all on SIGTERM.

The workers here are a minimal UDP echo of their pid, bound exactly as radiusd's
listeners bind (`open_socket(..., reuse_port=True)`), run by the real `supervise`
in its own process; the whole server with workers runs on PostgreSQL
(tests/test_cluster*.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
