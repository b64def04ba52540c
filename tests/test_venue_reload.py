"""Issue 15 item 3: the config is read again without a restart (SIGHUP, `radiusd
reload -c FILE`). A valid file takes effect for the requests after it, with none
dropped; an invalid one changes nothing and is logged in check-config's words."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from otp_support import ACCEPT, enter, get_password, reply_message, sms_code

from radiusd.clock import ManualClock
from radiusd.config import load
from radiusd.testing.nas import NoReply, SimulatedNAS
from radiusd.testing.server import nas_for, running_server
from tests.test_serve_process import ServeProcess, local_files, radiusd

KEPT, REKEYED, REMOVED, ADDED = "127.0.0.1", "127.0.0.2", "127.0.0.4", "127.0.0.3"
OLD_SECRET, NEW_SECRET = "an-old-secret-of-20-chars", "a-new-secret-of-20-chars!"


def client(name: str, address: str, secret: str, vendor: str = "none") -> str:
    return (f'[[clients]]\nname = "{name}"\naddress = "{address}"\nsecret = "{secret}"\n'
            f'vendor = "{vendor}"\n')


def write(path: Path, tmp: Path, clients: str, rest: str = "") -> None:
    path.write_text(f"""
[server]
auth_listen = ["127.0.0.1:0"]
acct_listen = ["127.0.0.1:0"]
max_queue_ms = 60000

{local_files(tmp)}

{clients}
{rest}
""")


BEFORE = (client("kept", KEPT, OLD_SECRET) + client("rekeyed", REKEYED, OLD_SECRET)
          + client("removed", REMOVED, OLD_SECRET))
AFTER = (client("kept", KEPT, OLD_SECRET) + client("rekeyed", REKEYED, NEW_SECRET)
         + client("added", ADDED, NEW_SECRET))


async def answered(server: object, source: str, secret: str, timeout: float = 0.3) -> bool:
    nas = nas_for(server, source=source, secret=secret.encode(),  # type: ignore[arg-type]
                  timeout=timeout, retries=0)
    try:
        await nas.send(nas.status_server())
    except NoReply:
        return False
    return True


async def test_reload_under_load_drops_nothing_and_the_removed_client_is_answered_no_more(
        tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "radiusd.toml"
    write(path, tmp_path, BEFORE)
    async with running_server(load(path), clock) as server:
        assert await answered(server, REMOVED, OLD_SECRET)
        assert not await answered(server, ADDED, NEW_SECRET)
        halfway = asyncio.Event()

        async def load_from_kept(worker: int) -> int:
            nas = nas_for(server, source=KEPT, secret=OLD_SECRET.encode(), timeout=5.0,
                          retries=2)
            done = 0
            for i in range(60):
                if i % 6 == 0:  # a "Get password" press, through the store
                    answer = await get_password(nas, f"+7701{worker:03d}{i:04d}",
                                                mac=f"AA-BB-CC-DD-{worker:02X}-{i:02X}")
                    assert reply_message(answer).startswith("Password sent")
                else:
                    await nas.send(nas.status_server())
                done += 1
                if done == 20:
                    halfway.set()
            return done

        load_tasks = [asyncio.create_task(load_from_kept(w)) for w in range(4)]
        await halfway.wait()
        write(path, tmp_path, AFTER)
        assert server.reload_file()
        assert await asyncio.gather(*load_tasks) == [60] * 4  # every one answered

        assert await answered(server, ADDED, NEW_SECRET)
        assert not await answered(server, REMOVED, OLD_SECRET)
        assert await answered(server, REKEYED, NEW_SECRET)
        assert not await answered(server, REKEYED, OLD_SECRET)


async def test_a_broken_file_on_reload_changes_nothing(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "radiusd.toml"
    write(path, tmp_path, BEFORE)
    async with running_server(load(path), clock) as server:
        broken = AFTER.replace(f'address = "{ADDED}"', 'address = "10.0.0.300"')
        write(path, tmp_path, broken, '[[venues]]\nname = "x"\nrate_limit = "fast"\n')
        with caplog.at_level(logging.ERROR, "radiusd"):
            assert not server.reload_file()
        refused = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
        stays = f"reload refused, the running config stays: {path}: "
        assert refused == [
            stays + "clients[2].address: '10.0.0.300' is not an IP address or CIDR network "
                    '(e.g. "10.0.0.0/24")',
            stays + "venues[0].rate_limit: 'fast': write UP/DOWN in bit/s with k, M or G, "
                    'e.g. "2M/8M"',
        ]
        assert await answered(server, REMOVED, OLD_SECRET)
        assert await answered(server, REKEYED, OLD_SECRET)
        assert not await answered(server, ADDED, NEW_SECRET)


async def test_reload_changes_a_venue_and_says_what_needs_a_restart(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "radiusd.toml"
    clients = client("cafe", KEPT, OLD_SECRET, vendor="mikrotik")
    venue = '[[venues]]\nname = "cafe"\nclients = ["cafe"]\nrate_limit = "{}"\n'
    write(path, tmp_path, clients, venue.format("1M/2M"))
    async with running_server(load(path), clock) as server:
        nas = nas_for(server, source=KEPT, secret=OLD_SECRET.encode(), timeout=1.0)

        async def rate(user: str, phone: str) -> object:
            await get_password(nas, user)
            answer = await enter(nas, await sms_code(server, phone), user)
            assert answer.code == ACCEPT, reply_message(answer)
            return answer.get("Mikrotik-Rate-Limit")

        assert await rate("8 701 111 11 11", "+77011111111") == "1M/2M"
        write(path, tmp_path, clients, venue.format("4M/16M").replace(
            "rate_limit", "language = \"ru\"\nrate_limit"))
        text = path.read_text().replace("max_queue_ms = 60000", "max_queue_ms = 100")
        path.write_text(text)
        with caplog.at_level(logging.WARNING, "radiusd"):
            assert server.reload_file()
        assert "reload: server.max_queue_ms changed; it takes effect after a restart" in \
            caplog.text
        assert await rate("8 701 222 22 22", "+77012222222") == "4M/16M"
        assert reply_message(await get_password(nas, "8 701 333 33 33")).startswith(
            "Пароль отправлен")
        assert server.config.server.max_queue_ms == 60000  # as it runs


class PidServe(ServeProcess):
    """`radiusd serve` with `[server] pid_file`."""

    def write_config(self) -> None:
        super().write_config()
        self.pid_file = self.tmp / "run" / "radiusd.pid"
        text = self.config.read_text().replace(
            "[server]\n", f'[server]\npid_file = "{self.pid_file}"\n', 1)
        self.config.write_text(text)


def status_from(source: str, address: tuple[str, int], secret: str) -> bool:
    nas = SimulatedNAS(auth_address=address, secret=secret.encode())
    pkt = nas.status_server()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(0.3)
        s.sendto(nas.encode(pkt), address)
        try:
            reply = s.recv(4096)
        except TimeoutError:
            return False
    return bool(pkt.VerifyReply(pkt.CreateReply(packet=reply), reply, enforce_ma=True))


def test_radiusd_reload_signals_the_server_its_pid_file_names(tmp_path: Path) -> None:
    sp = PidServe(tmp_path).start()
    try:
        assert sp.proc is not None
        assert sp.pid_file.read_text().strip() == str(sp.proc.pid)
        assert not status_from(ADDED, sp.auth4, NEW_SECRET)
        good = sp.config.read_text() + "\n" + client("added", ADDED, NEW_SECRET)
        sp.config.write_text(good)
        done = radiusd("reload", "-c", str(sp.config))
        assert done.returncode == 0, done.stderr
        assert f"asked pid {sp.proc.pid}" in done.stdout
        deadline = time.monotonic() + 10
        while not status_from(ADDED, sp.auth4, NEW_SECRET):
            assert time.monotonic() < deadline, sp.log
        assert "reloaded" in sp.log

        # A broken file: the command says so and signals nothing; a SIGHUP sent by
        # hand is refused by the server, which keeps answering as before.
        sp.config.write_text(good + '\n[[venues]]\nname = "x"\nclients = ["nope"]\n')
        done = radiusd("reload", "-c", str(sp.config))
        assert done.returncode == 1
        assert f"radiusd: {sp.config}: venues[0].clients: 'nope' is not the name of a " \
               "[[clients]] table" in done.stderr
        sp.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload refused" not in sp.log:
            assert time.monotonic() < deadline, sp.log
            time.sleep(0.05)
        assert f"reload refused, the running config stays: {sp.config}: venues[0].clients:" \
            in sp.log
        assert status_from(ADDED, sp.auth4, NEW_SECRET)
        assert sp.stop() == 0
        assert not sp.pid_file.exists()
    finally:
        sp.kill()


def test_radiusd_reload_without_a_pid_file_says_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "radiusd.toml"
    write(config, tmp_path, client("kept", KEPT, OLD_SECRET))
    done = radiusd("reload", "-c", str(config))
    assert done.returncode == 1
    assert "server.pid_file: not set" in done.stderr and "kill -HUP" in done.stderr


HANGUP_SCRIPT = """
import os, signal, socket, sys
from radiusd.radius.listener import open_socket
from radiusd.workers import supervise

def worker(slot):
    sock = open_socket(f"127.0.0.1:{sys.argv[1]}", reuse_port=True)
    sock.settimeout(0.05)
    stopping, hangups = [], []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGHUP, lambda *_: hangups.append(1))
    while not stopping:
        try:
            data, addr = sock.recvfrom(64)
        except (TimeoutError, InterruptedError):
            continue
        sock.sendto(f"{os.getpid()} {len(hangups)}".encode(), addr)
    return 0

sys.exit(supervise(2, worker))
"""


def test_the_workers_parent_passes_sighup_to_every_worker() -> None:
    """`radiusd reload` signals the parent (its pid is the pid_file's); each worker
    reads the config again itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", HANGUP_SCRIPT, str(port)], cwd=root)

    def hangups() -> dict[int, int]:
        seen: dict[int, int] = {}
        for _ in range(32):  # a source port each: the kernel spreads them over both
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(0.3)
                c.sendto(b"?", ("127.0.0.1", port))
                with contextlib.suppress(TimeoutError):
                    pid, n = c.recv(64).split()
                    seen[int(pid)] = int(n)
        return seen

    try:
        deadline = time.monotonic() + 20
        while len(before := hangups()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no two workers"
        assert set(before.values()) == {0}
        proc.send_signal(signal.SIGHUP)
        while (after := hangups()) != {pid: 1 for pid in before}:
            assert time.monotonic() < deadline, after
        assert proc.poll() is None  # the parent lives on
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_radsec_client_removed_by_a_reload_loses_its_connection(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """RFC 6614: a RadSec NAS's connection outlives a reload that keeps its entry, and
    ends with a reload that removes it (its certificate no longer names a client)."""
    from tests.radsec_support import (
        RadsecNas,
        address,
        client_context,
        make_pki,
        radsec_config,
        radsec_server,
    )

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    config = radsec_config(tmp_path, pki)
    async with radsec_server(config) as server:
        nas = await RadsecNas.connect(address(server), client_context(pki.ca, pki.nas))
        assert (await nas.send(nas.status_server())).code == ACCEPT
        assert server.reload(config) == []  # the same file: the connection goes on
        assert (await nas.send(nas.status_server())).code == ACCEPT
        without = config.model_copy(update={"clients": [c.model_copy(update={
            "name": "nas2", "certificate_name": "nas2.example"}) for c in config.clients]})
        assert server.reload(without) == []
        assert await nas.closed_by_server()
        await nas.close()
