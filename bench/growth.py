#!/usr/bin/env python3
"""A year of history (issue 18): fill a database to N rows, then measure a real
`radiusd serve` on it against an empty database in the same run.

    .venv/bin/python bench/growth.py --n 1000000              # 0 (empty) and 1 M
    .venv/bin/python bench/growth.py --n 1000000,5000000 --runs 3 --out growth.jsonl
    .venv/bin/python bench/growth.py --n 5000000 --fill-only   # just build the cache

The fill (`fill`) writes straight into SQLite, on the schema `radiusd.store.migrations`
makes, what a year of a busy network leaves behind, spread over the 365 days before
the fill with more by day than by night:
- N closed sessions (distinct Acct-Session-Id and Acct-Unique-Session-Id, about N/4
  distinct numbers across the Kazakh mobile prefixes, one or two devices (MAC) each,
  24 NAS with venue names, lengths from a minute to hours, real terminate causes);
- N expired passwords, one per session (claimed, bound to its device, expired by
  Stop, the reaper, a NAS reboot...), the code sealed as the server seals it
  (`Sealer.seal(code, b"otp")`);
- N sent SMS in `sms_outbox`, the text sealed (`b"sms"`), with SMPP-style message ids
  and delivery receipts;
- N/10 journal entries (Rules §10) with their events: open, close, a voucher's start,
  now and then a correction.
Sealing millions of values one by one costs minutes, so a pool of `POOL` distinct
sealed codes and texts is made once and reused: every row holds a real sealed value
of the real size that opens with the key, but the same ciphertext recurs. The
database is written with large transactions and no journal, then switched to WAL.
Filled databases are cached under `--cache` (default bench/.cache/, not in git) by
N, seed and schema version: a re-run skips the fill; a cache made by an older schema
is copied and migrated (`connect_sync`) once.

Each measured database is a fresh copy of the cache, migrated before the clock
starts. Per database and run, in this order, against `radiusd serve` started with
`--code`'s radiusd on loopback (`[sms] provider = "file"`, `[http] listen`):
  start     time from exec to the first Status-Server answer (RFC 5997)
  login     `bench/loadgen.py --mode login` (Get password, code from the SMS file,
            login, Start, Stop), --inflight, --duration
  acct      `bench/loadgen.py --mode acct` (Start/Stop pairs), --inflight
  wal       the -wal file after those loads
  scrape    accounting at --inflight while one `GET /metrics` runs: the scrape's time
            and the accounting answered from its start until 1 s after it
  export    `radiusd sessions export` / `journal export --format csv -o FILE`, all of
            it and one day (yesterday): time, peak RSS (/usr/bin/time), bytes; and
            that day's export from a database holding only that day's rows
  purge     accounting open loop at --acct-rate for --duration with nothing else
            (idle), then the same while `radiusd purge --older-than --purge-days`
            runs: p50/p99/max of each, the purge's time and rows
  end       the WAL and database size at the end; radiusd must exit 0 on SIGTERM
Output: one JSON line per measure (stdout and --out), then a markdown table of the
medians over --runs with each N's ratio to the empty database. `uptime`'s 1-minute
load is recorded beside each measure: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

SECRET = "testing123"
DAY = 86400.0
YEAR = 365 * DAY
POOL = 4096  # distinct sealed codes / texts, reused
FILL = 2  # the fill's own version, part of the cache's name: a changed fill fills again
ROWS_PER_TRANSACTION = 200_000
CHECK_BEFORE_START_BYTES = 128 * 1024 * 1024  # radiusd.store.sqlite's: larger, checked later

PREFIXES = ("700", "701", "702", "705", "707", "708", "747", "771", "775", "776", "777",
            "778")
NAS = (
    ("airport-t1-hotspot", "10.10.1.1", 9), ("airport-t2-hotspot", "10.10.2.1", 6),
    ("mall-dostyk-mikrotik", "10.11.0.1", 8), ("mall-mega-ap-core", "10.11.1.1", 7),
    ("railway-station-chilli", "10.12.0.1", 6), ("bus-terminal-sayran", "10.12.1.1", 3),
    ("cafe-central-hap", "10.20.0.1", 2), ("cafe-kok-tobe", "10.20.1.1", 1),
    ("library-national", "10.21.0.1", 2), ("library-district-5", "10.21.1.1", 1),
    ("park-gorky-omada", "10.22.0.1", 3), ("park-first-president", "10.22.1.1", 2),
    ("hotel-rixos-unifi", "10.23.0.1", 3), ("hotel-kazakhstan", "10.23.1.1", 2),
    ("univ-kaznu-main", "10.24.0.1", 5), ("univ-kbtu", "10.24.1.1", 3),
    ("akimat-lobby", "10.25.0.1", 1), ("hospital-city-1", "10.25.1.1", 1),
    ("stadium-central", "10.26.0.1", 2), ("arena-almaty", "10.26.1.1", 1),
    ("metro-abay", "10.27.0.1", 4), ("metro-almaly", "10.27.1.1", 3),
    ("coworking-smart-point", "10.28.0.1", 1), ("market-green-bazaar", "10.28.1.1", 2),
)
CAUSES = (("User-Request", 34), ("Idle-Timeout", 30), ("Lost-Carrier", 10),
          ("Session-Timeout", 10), ("Stale", 8), ("NAS-Reboot", 2), ("Lost-Stop", 1),
          ("Admin-Reset", 1), ("Port-Error", 4))
REASON = {"Stale": "stale_session", "NAS-Reboot": "nas-accounting-on",
          "Lost-Stop": "lost_stop"}
SURNAMES = ("Әбілқасымов", "Нұрланов", "Серікбаев", "Жұмабаев", "Иванов", "Ким", "Оспанов",
            "Бекова", "Сәтбаева", "Петрова", "Қасымов", "Тоқаев", "Ахметова", "Пак")
NAMES = ("Нұрлан", "Айгерім", "Ерлан", "Дана", "Алексей", "Мария", "Асхат", "Әсел", "Тимур",
         "Жанна", "Ұлан", "Гүлнар")
PATRONYMICS = ("Серікұлы", "Ерланқызы", "Иванович", "Асхатұлы", "", "", "Петровна")
TEXTS = {"ru": "Пароль для Wi-Fi: {code}", "kk": "Wi-Fi құпиясөзі: {code}",
         "en": "Wi-Fi password: {code}"}


# -- the fill ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filled:
    sessions: int
    passwords: int
    sms: int
    journal: int
    journal_events: int
    seconds: float
    now: float


def _weighted(rng: random.Random, items: list[Any], weights: list[int], k: int) -> list[Any]:
    return rng.choices(items, weights=weights, k=k)


def _times(rng: random.Random, n: int, start: float, end: float) -> list[float]:
    """n moments spread over [start, end), sorted, more from 09:00 to 23:00 (UTC+5)
    than at night: uniform draws, each kept with its local hour's weight."""
    hour_weight = [1, 1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 9, 9, 9, 9, 9, 10, 10, 10, 9, 7, 4, 2]
    top = max(hour_weight)
    out: list[float] = []
    while len(out) < n:
        t = rng.uniform(start, end)
        if rng.random() * top < hour_weight[int((t / 3600 + 5) % 24)]:
            out.append(t)
    out.sort()
    return out


def fill(path: Path, n: int, key: bytes, *, now: float, seed: int = 1, pool: int = POOL,
         journal_n: int | None = None, progress: bool = False) -> Filled:
    """Fill the (new) SQLite database at `path` with a year of history; see the module
    docstring. Uses this tree's `radiusd` for the schema and the sealing."""
    from radiusd.sealing import Sealer
    from radiusd.store.sqlite import connect_sync

    t0 = time.perf_counter()
    rng = random.Random(seed)
    sealer = Sealer(key)
    conn = connect_sync(str(path))
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: random password ids stay in memory
    conn.execute("PRAGMA foreign_keys=OFF")
    langs = ["ru", "kk", "en"]
    codes = [f"{rng.randrange(10**6):06d}" for _ in range(pool)]
    sealed_codes = [sealer.seal(c.encode(), b"otp") for c in codes]
    sealed_texts = {lang: [sealer.seal(TEXTS[lang].format(code=c).encode(), b"sms")
                           for c in codes] for lang in langs}
    users = max(1000, n // 4)
    start, end = now - YEAR, now - 600
    nas_names = [x[0] for x in NAS]
    nas_addr = {x[0]: x[1] for x in NAS}
    nas_weights = [x[2] for x in NAS]
    causes, cause_w = [c for c, _ in CAUSES], [w for _, w in CAUSES]
    seq = {name: rng.randrange(1 << 24) for name in nas_names}
    done = 0
    while done < n:
        k = min(ROWS_PER_TRANSACTION, n - done)
        part_start = start + (end - start) * done / n
        part_end = start + (end - start) * (done + k) / n
        times = _times(rng, k, part_start, part_end)
        nases = _weighted(rng, nas_names, nas_weights, k)
        cs = _weighted(rng, causes, cause_w, k)
        sessions, passwords, sms = [], [], []
        for i in range(k):
            t = times[i]
            u = rng.randrange(users)
            login = f"+7{PREFIXES[u % len(PREFIXES)]}{(u * 7919 + 1234567) % 10**7:07d}"
            mac = hashlib.blake2b(f"{u}:{rng.random() < 0.2}".encode(), digest_size=6,
                                  key=seed.to_bytes(8, "big")).digest()
            device = (bytes([(mac[0] | 0x02) & 0xFE]) + mac[1:]).hex()
            nas = nases[i]
            seq[nas] += 1
            acct_id = f"{seq[nas] & 0xFFFFFFFF:08x}"
            unique_id = hashlib.md5("\x00".join(
                [nas, nas_addr[nas], acct_id, login, str(rng.randrange(1, 64))]).encode()
            ).hexdigest()
            length = int(min(12 * 3600, max(60, rng.lognormvariate(7.3, 1.0))))
            issued = t - rng.uniform(10, 120)
            cause = cs[i]
            stopped = t + length
            updated = stopped if cause != "Stale" else t + length * rng.uniform(0.5, 1)
            if cause in ("Stale", "Lost-Stop"):
                stopped = updated
            octets_in = int(length * rng.uniform(200, 20_000))
            octets_out = int(octets_in * rng.uniform(3, 12))
            klass = "rd1." + rng.randbytes(12).hex()
            lang = langs[0] if rng.random() < 0.6 else langs[1 + (rng.random() < 0.25)]
            pw_id = rng.getrandbits(62)
            slot = rng.randrange(pool)
            sessions.append((
                unique_id, login, device, nas, nas_addr[nas], acct_id,
                f"10.5.{rng.randrange(256)}.{rng.randrange(2, 255)}", t, updated, stopped,
                length, octets_in, octets_out, octets_in // 700 + 1, octets_out // 900 + 1,
                cause, klass))
            passwords.append((
                pw_id, login, sealed_codes[slot], lang, issued, issued + 300, t, device, nas,
                nas_addr[nas], klass, int(rng.random() < 0.05), stopped,
                REASON.get(cause, "stop"), device, nas))
            sent = issued + rng.uniform(0.2, 3.0)
            delivered = rng.random() < 0.95
            sms.append((
                rng.getrandbits(62), pw_id, login, sealed_texts[lang][slot], issued,
                issued + 60, sent, rng.randbytes(8).hex(),
                "DELIVRD" if delivered else "UNDELIV", sent + rng.uniform(1, 20)))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO sessions (unique_id, login, device, nas, nas_address, acct_session_id,"
            " framed_ip, started_at, updated_at, stopped_at, session_time, input_octets,"
            " output_octets, input_packets, output_packets, terminate_cause, class_token)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", sessions)
        conn.executemany(
            "INSERT INTO passwords (id, login, kind, state, secret, language, issued_at,"
            " unclaimed_until, claimed_at, device, nas, nas_address, class_token, attempts,"
            " expired_at, expire_reason, request_device, request_nas)"
            " VALUES (?, ?, 'phone', 'expired', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            passwords)
        conn.executemany(
            "INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state,"
            " attempts, next_attempt_at, sent_at, provider_ref, delivery_state, delivered_at)"
            " VALUES (?, ?, ?, ?, ?, 'sent', 1, ?, ?, ?, ?, ?)", sms)
        conn.execute("COMMIT")
        done += k
        if progress:
            print(f"  filled {done:,}/{n:,} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    entries, events = _fill_journal(conn, rng, n // 10 if journal_n is None else journal_n,
                                    start, end)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return Filled(n, n, n, entries, events, time.perf_counter() - t0, now)


def _fill_journal(conn: sqlite3.Connection, rng: random.Random, m: int, start: float,
                  end: float) -> tuple[int, int]:
    """Rules §10 entries: rows written once, their times in events (as journal.py does)."""
    times = _times(rng, m, start, end)
    rows, events = [], []
    next_event = 1
    for i, t in enumerate(times, start=1):
        voucher = f"v{rng.randrange(10**6):06d}" if rng.random() < 0.3 else None
        rows.append((i, rng.choice(SURNAMES), rng.choice(NAMES), rng.choice(PATRONYMICS),
                     str(rng.randrange(1, 13)), rng.choice(("", "id-card", "passport")), t, t,
                     voucher))
        evs = [(next_event, i, t, "admin", "open", "{}")]
        began = t
        if voucher:
            began = t + rng.uniform(30, 600)
            evs.append((0, i, began, "radiusd", "start",
                        json.dumps({"field": "started_at", "value": began})))
        if rng.random() < 0.03:
            evs.append((0, i, t + 120, "admin", "correct", json.dumps(
                {"field": "name", "value": rng.choice(NAMES), "reason": "typo"},
                ensure_ascii=False)))
        ended = began + rng.uniform(600, 4 * 3600)
        if ended < end - DAY or rng.random() < 0.9:
            evs.append((0, i, ended, "radiusd" if voucher else "admin", "close",
                        json.dumps({"field": "ended_at", "value": ended})))
        for e in evs:
            events.append((next_event, *e[1:]))
            next_event += 1
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO journal (id, surname, name, patronymic, computer, document_type,"
        " opened_at, started_at, voucher_login) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO journal_events (id, journal_id, at, actor, event, detail)"
                     " VALUES (?, ?, ?, ?, ?, ?)", events)
    conn.execute("COMMIT")
    return len(rows), len(events)


# -- the cache -----------------------------------------------------------------------


def schema_version() -> int:
    from radiusd.store.migrations import MIGRATIONS

    return len(MIGRATIONS)


def cached(cache: Path, n: int, seed: int) -> tuple[Path, Path, dict[str, Any]]:
    """The filled database for (n, seed) at this tree's schema version, its key file and
    what the fill recorded; built (or migrated from an older version's cache) if missing.
    Several runs may share a cache: one fills or migrates while the others wait."""
    import fcntl

    from radiusd.store.sqlite import connect_sync

    cache.mkdir(parents=True, exist_ok=True)
    version = schema_version()
    stem = f"growth-n{n}-seed{seed}-fill{FILL}"

    def files(v: int) -> tuple[Path, Path, Path]:
        base = cache / f"{stem}-v{v}"
        return base.with_suffix(".db"), base.with_suffix(".key"), base.with_suffix(".json")

    db, key_file, meta_file = files(version)
    with (cache / f"{stem}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if db.exists() and key_file.exists() and meta_file.exists():
            return db, key_file, json.loads(meta_file.read_text())
        tmp = cache / f"{stem}-v{version}.{os.getpid()}.tmp"
        older = sorted((int(p.name.split("-v")[-1].split(".")[0]), p)
                       for p in cache.glob(f"{stem}-v*.db"))
        older = [(v, p) for v, p in older if v < version and files(v)[1].exists()]
        if older:
            v, source = older[-1]
            print(f"[cache] migrating {source.name} to schema {version}", file=sys.stderr)
            t0 = time.perf_counter()
            shutil.copyfile(source, tmp)
            connect_sync(str(tmp)).close()
            _drop_wal(tmp)
            meta = json.loads(files(v)[2].read_text())
            meta.setdefault("migrations", {})[str(version)] = round(time.perf_counter() - t0, 1)
            shutil.copyfile(files(v)[1], key_file)
        else:
            key = os.urandom(32)
            key_file.write_text(__import__("base64").b64encode(key).decode() + "\n")
            key_file.chmod(0o600)
            print(f"[cache] filling {n:,} rows into {db}", file=sys.stderr)
            filled = fill(tmp, n, key, now=time.time(), seed=seed, progress=True)
            _drop_wal(tmp)
            meta = {"n": n, "seed": seed, "fill": FILL, "schema": version,
                    "fill_seconds": round(filled.seconds, 1), "now": filled.now,
                    "journal": filled.journal, "journal_events": filled.journal_events,
                    "bytes": tmp.stat().st_size}
            print(f"[cache] filled in {filled.seconds:.0f} s, {meta['bytes'] / 1e6:,.0f} MB",
                  file=sys.stderr)
        meta_file.write_text(json.dumps(meta))
        tmp.rename(db)
        return db, key_file, meta


def _drop_wal(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# -- the server ----------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    auth: int
    acct: int
    http: int
    config: Path
    db: Path
    outbox: Path
    log: Path
    env: dict[str, str]
    start_s: float


def write_config(work: Path, db: Path, key_file: Path) -> tuple[Path, dict[str, int]]:
    ports = {"auth": free_port(), "acct": free_port(), "http": free_port(socket.SOCK_STREAM)}
    config = work / "radiusd.toml"
    config.write_text(f"""\
[server]
auth_listen = ["127.0.0.1:{ports['auth']}"]
acct_listen = ["127.0.0.1:{ports['acct']}"]

[database]
path = "{db}"

[[clients]]
name = "bench"
address = "127.0.0.1"
secret = "{SECRET}"

[otp]
key_file = "{key_file}"
# Benchmark: no abuse limit may throttle the load generator (as bench/run.py).
resend_after_seconds = 0
per_number_hourly = 1000000000
per_number_daily = 1000000000
per_device_hourly = 1000000000
per_nas_minute = 1000000000
global_per_minute = 1000000000
per_nas_daily = 1000000000
global_daily = 1000000000
per_prefix_daily = 1000000000
foreign_daily = 1000000000

[sms]
provider = "file"

[sms.file]
path = "{work / 'outbox.jsonl'}"

[http]
listen = ["127.0.0.1:{ports['http']}"]
""")
    return config, ports


def start_server(code: Path, work: Path, db: Path, key_file: Path) -> Server:
    config, ports = write_config(work, db, key_file)
    env = {**os.environ, "PYTHONPATH": str(code)}
    log = work / "radiusd.log"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(config)],
                            cwd=work, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = t0 + 300
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            sys.exit(f"radiusd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if loadgen.probe(("127.0.0.1", ports["auth"]), SECRET.encode(), 0.05):
            break
        time.sleep(0.01)
    else:
        proc.kill()
        sys.exit(f"radiusd did not answer Status-Server in 300 s:\n{log.read_text()[-3000:]}")
    started = time.perf_counter() - t0
    # A file past CHECK_BEFORE_START_BYTES is checked in the background after start
    # (every page read once): measure after it, not against it.
    store_py = code / "radiusd" / "store" / "sqlite.py"
    checks_later = store_py.exists() and "integrity check of" in store_py.read_text()
    if checks_later and db.exists() and db.stat().st_size > CHECK_BEFORE_START_BYTES:
        while time.perf_counter() < deadline and "integrity check of" not in \
                log.read_text(errors="replace"):
            if proc.poll() is not None:
                sys.exit(f"radiusd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    return Server(proc, ports["auth"], ports["acct"], ports["http"], config, db,
                  work / "outbox.jsonl", log, env, started)


def stop_server(s: Server) -> int:
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(60)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
    return int(s.proc.returncode)


# -- measures ------------------------------------------------------------------------


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def run_loadgen(s: Server, mode: str, args: argparse.Namespace, base: int) -> dict[str, Any]:
    target = f"127.0.0.1:{s.auth if mode == 'login' else s.acct}"
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--target", target, "--secret", SECRET,
           "--mode", mode, "--inflight", str(args.inflight), "--duration", str(args.duration),
           "--warmup", "1"]
    if mode == "login":
        cmd += ["--acct-target", f"127.0.0.1:{s.acct}", "--sms-outbox", str(s.outbox),
                "--number-base", str(base)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120,
                       check=False)
    if not p.stdout.strip():
        sys.exit(f"loadgen {mode} failed:\n{p.stderr[-2000:]}")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


class Background:
    """bench/loadgen.py's accounting generator in a thread of this process, so that it
    can be stopped when something else (a scrape, a purge) ends; its report is the
    same JSON as `loadgen.py --mode acct`."""

    def __init__(self, s: Server, inflight: int, rate: float = 0.0) -> None:
        secret = SECRET.encode()
        self.gen = loadgen.LoadGen(
            ("127.0.0.1", s.acct), secret, loadgen.build_templates("acct", secret, "bench", ""),
            inflight=inflight, duration=3600, count=0, timeout=2.0, warmup=1.0, rate=rate)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.name = "asyncio"

    def _run(self) -> None:
        factory = None
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
            self.name = "uvloop"

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.gen.run()

        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())

    def __enter__(self) -> Background:
        self.thread.start()
        while not self.gen.measuring:  # after its 1 s warm-up
            time.sleep(0.005)
        return self

    def stop(self) -> dict[str, Any]:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.gen._stop)
        self.thread.join(30)
        return self.gen.report("acct", self.name)

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive() and self.loop is not None:
            self.loop.call_soon_threadsafe(self.gen._stop)
            self.thread.join(30)


def scrape(s: Server, args: argparse.Namespace) -> dict[str, Any]:
    with Background(s, args.inflight) as bg:
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http}/metrics", timeout=300) as r:
            status, size = r.status, len(r.read())
        took = time.perf_counter() - t0
        time.sleep(1.0)
        acct = bg.stop()
    return {"metrics_ms": round(took * 1000, 1), "metrics_status": status,
            "metrics_bytes": size, "acct": _brief(acct)}


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "max_ms", "timeouts", "completed", "window_s",
            "rate", "backlogged")
    return {k: r.get(k) for k in keys}


def timed_child(cmd: list[str], env: dict[str, str], cwd: Path,
                timeout: float = 3600) -> dict[str, Any]:
    """Run a command under /usr/bin/time: its wall time, exit code, peak RSS and output.
    (wait4 on a child of this process would count the memory it had before exec.)"""
    with tempfile.NamedTemporaryFile("r") as usage:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", usage.name, *cmd], env=env,
                           cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           check=False)
        took = time.perf_counter() - t0
        kb = usage.read().strip().splitlines()
    rss = int(kb[-1]) / 1024 if kb and kb[-1].isdigit() else None
    return {"seconds": round(took, 3), "rc": p.returncode,
            "peak_rss_mb": round(rss, 1) if rss is not None else None, "stdout": p.stdout,
            "stderr": p.stderr}


def export(s: Server, work: Path, what: str, day: str | None,
           config: Path | None = None) -> dict[str, Any]:
    out = work / f"{what}-{day or 'all'}.csv"
    cmd = [sys.executable, "-m", "radiusd", what, "export", "--format", "csv", "-o", str(out),
           "-c", str(config or s.config)]
    if day:
        cmd += ["--since", day, "--until", day]
    r = timed_child(cmd, s.env, work)
    if r["rc"] != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r['stderr'][-2000:]}")
    size = out.stat().st_size
    with out.open("rb") as f:
        rows = sum(1 for _ in f) - 1
    out.unlink()
    return {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"], "bytes": size,
            "rows": rows}


def day_alone(s: Server, work: Path, day: str) -> Path:
    """A config whose database holds only what a one-day export of `day` returns (the
    sessions and journal entries online that day, with their events): the same export
    there costs what it would without the year around it."""
    db = work / "day.db"
    subprocess.run([sys.executable, "-c", "import sys; from radiusd.store.sqlite import"
                    " connect_sync; connect_sync(sys.argv[1]).close()", str(db)],
                   env=s.env, cwd=work, check=True)
    since = datetime.fromisoformat(day).astimezone().timestamp()
    until = (datetime.fromisoformat(day) + timedelta(days=1)).astimezone().timestamp()
    listed = subprocess.run(
        [sys.executable, "-m", "radiusd", "journal", "export", "--format", "json", "--since",
         day, "--until", day, "-c", str(s.config)],
        env=s.env, cwd=work, capture_output=True, text=True, check=True).stdout
    ids = [e["id"] for e in json.loads(listed)]
    conn = sqlite3.connect(f"file:{db}", uri=True, isolation_level=None)
    conn.execute("ATTACH ? AS src", (f"file:{s.db}?mode=ro",))
    conn.execute("BEGIN")
    conn.execute("INSERT INTO sessions SELECT * FROM src.sessions WHERE"
                 " COALESCE(started_at, updated_at) < ? AND (stopped_at IS NULL OR"
                 " stopped_at >= ?)", (until, since))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"INSERT INTO journal SELECT * FROM src.journal WHERE id IN ({marks})",
                     chunk)
        conn.execute(f"INSERT INTO journal_events SELECT * FROM src.journal_events"
                     f" WHERE journal_id IN ({marks}) ORDER BY id", chunk)
    conn.execute("COMMIT")
    conn.execute("DETACH src")
    conn.close()
    config = work / "day.toml"
    config.write_text(s.config.read_text().replace(f'path = "{s.db}"', f'path = "{db}"'))
    return config


def purge(s: Server, args: argparse.Namespace) -> dict[str, Any]:
    with Background(s, 256, rate=args.acct_rate) as bg:
        time.sleep(args.duration)
        idle = bg.stop()
    cmd = [sys.executable, "-m", "radiusd", "purge", "--older-than", str(args.purge_days),
           "-c", str(s.config)]
    with Background(s, 256, rate=args.acct_rate) as bg:
        r = timed_child(cmd, s.env, s.db.parent)
        during = bg.stop()
    if r["rc"] != 0:
        sys.exit(f"purge failed:\n{r['stderr'][-2000:]}")
    removed = {}
    for line in r["stdout"].splitlines():
        what, sep, count = line.partition(": ")
        if sep and count.isdigit():
            removed[what] = int(count)
    return {"purge_s": r["seconds"], "removed": removed, "idle": _brief(idle),
            "during": _brief(during)}


def wal_mb(db: Path) -> float:
    p = Path(f"{db}-wal")
    return round(p.stat().st_size / 1e6, 2) if p.exists() else 0.0


def measure(n: int, run: int, args: argparse.Namespace, code: Path, emit: Any) -> None:
    """One database, one run: every measure, each emitted as one JSON line."""
    if n:
        source, key_file, meta = cached(args.cache, n, args.seed)
    else:
        source, key_file, meta = None, args.cache / "empty.key", {"n": 0}
        if not key_file.exists():
            args.cache.mkdir(parents=True, exist_ok=True)
            key_file.write_text(__import__("base64").b64encode(os.urandom(32)).decode() + "\n")
            key_file.chmod(0o600)
    work = Path(tempfile.mkdtemp(prefix=f"growth-{n}-", dir=args.work))
    db = work / "radiusd.db"
    try:
        if source is not None:
            shutil.copyfile(source, db)
            # On disk before any clock starts: a copy's dirty pages (GBs) would be
            # written back during the first measure, and ext4 makes the server's first
            # fsyncs wait for them (a 0.6 s stall at the start of the 5 M idle window).
            fd = os.open(db, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        subprocess.run(  # schema up to date before any clock starts
            [sys.executable, "-c", "import sys; from radiusd.store.sqlite import connect_sync;"
             " connect_sync(sys.argv[1]).close()", str(db)],
            env={**os.environ, "PYTHONPATH": str(code)}, cwd=work, check=True)
        base = {"n": n, "run": run, "db_mb": round(db.stat().st_size / 1e6, 1),
                "filled_at": meta.get("now")}

        def out(measure_name: str, load: float, **values: Any) -> None:
            emit({"measure": measure_name, **base, "load1_before": load, **values,
                  "load1_after": load1()})

        def want(what: str) -> bool:
            return not args.only or what in args.only

        load = load1()
        s = start_server(code, work, db, key_file)
        try:
            out("start", load, seconds=round(s.start_s, 3))
            load = load1()
            if want("login"):
                r = run_loadgen(s, "login", args, 1_000_000 + 500_000 * run + (n % 97) * 5000)
                out("login", load, logins_per_s=r["logins_per_s"],
                    login_p50_ms=r["login_p50_ms"], login_p99_ms=r["login_p99_ms"],
                    sms_p99_ms=r.get("steps", {}).get("sms", {}).get("p99_ms"),
                    timeouts=r["timeouts"], sms_timeouts=r["sms_timeouts"],
                    failures=r["failures"], loadgen=r)
            if want("acct"):
                load = load1()
                r = run_loadgen(s, "acct", args, 0)
                out("acct", load, rps=r["rps"], p50_ms=r["p50_ms"], p99_ms=r["p99_ms"],
                    max_ms=r["max_ms"], timeouts=r["timeouts"], loadgen=r)
            out("wal_after_load", load1(), wal_mb=wal_mb(db))
            if want("scrape"):
                load = load1()
                out("scrape", load, **scrape(s, args))
            yesterday = (datetime.now() - timedelta(days=1)).date().isoformat()
            days = want("export") or want("sessions_export_day") or want("journal_export_day")
            alone = day_alone(s, work, yesterday) if days else None
            for what in ("sessions", "journal"):
                for day in (None, yesterday):
                    name = f"{what}_export_{'day' if day else 'all'}"
                    if want("export") or want(name):
                        load = load1()
                        out(name, load, **export(s, work, what, day))
                if alone is not None and (want("export") or want(f"{what}_export_day")):
                    load = load1()
                    out(f"{what}_export_day_alone", load,
                        **export(s, work, what, yesterday, alone))
            if want("purge"):
                load = load1()
                out("purge", load, days=args.purge_days, **purge(s, args))
            out("end", load1(), wal_mb=wal_mb(db),
                db_mb_end=round(db.stat().st_size / 1e6, 1))
        finally:
            rc = stop_server(s)
            if rc != 0:
                print(f"radiusd exited {rc}:\n{s.log.read_text()[-2000:]}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# -- the report ----------------------------------------------------------------------

ROWS: list[tuple[str, str, str, str]] = [
    # (label, measure, key path, better: "high" | "low")
    ("whole logins/s at {inflight} in flight", "login", "logins_per_s", "high"),
    ("login p99 ms", "login", "login_p99_ms", "low"),
    ("SMS step of a login, p99 ms", "login", "sms_p99_ms", "low"),
    ("accounting req/s at {inflight} in flight", "acct", "rps", "high"),
    ("accounting p99 ms", "acct", "p99_ms", "low"),
    ("WAL after the load, MB", "wal_after_load", "wal_mb", "low"),
    ("`GET /metrics` (first, uncached) ms", "scrape", "metrics_ms", "low"),
    ("accounting during one scrape, req/s", "scrape", "acct.rps", "high"),
    ("accounting during one scrape, timeouts", "scrape", "acct.timeouts", "low"),
    ("start to first Status-Server answer, s", "start", "seconds", "low"),
    ("`sessions export` all, s", "sessions_export_all", "seconds", "low"),
    ("`sessions export` all, peak RSS MB", "sessions_export_all", "peak_rss_mb", "low"),
    ("`sessions export` one day, s", "sessions_export_day", "seconds", "low"),
    ("  the same day's rows alone in a database, s", "sessions_export_day_alone", "seconds",
     "low"),
    ("  rows in that day", "sessions_export_day", "rows", "high"),
    ("`journal export` all, s", "journal_export_all", "seconds", "low"),
    ("`journal export` all, peak RSS MB", "journal_export_all", "peak_rss_mb", "low"),
    ("`journal export` one day, s", "journal_export_day", "seconds", "low"),
    ("  the same day's entries alone in a database, s", "journal_export_day_alone",
     "seconds", "low"),
    ("`purge --older-than {purge_days}` on the live server, s", "purge", "purge_s", "low"),
    ("rows purged", "purge", "removed_total", "high"),
    ("accounting at {acct_rate}/s, idle: p99 ms", "purge", "idle.p99_ms", "low"),
    ("accounting at {acct_rate}/s during purge: p99 ms", "purge", "during.p99_ms", "low"),
    ("accounting at {acct_rate}/s during purge: max ms", "purge", "during.max_ms", "low"),
    ("accounting at {acct_rate}/s during purge: timeouts", "purge", "during.timeouts", "low"),
    ("WAL at the end, MB", "end", "wal_mb", "low"),
    ("database file, MB", "end", "db_mb", "low"),
]


def _get(r: dict[str, Any], path: str) -> float | None:
    if path == "removed_total":
        return float(sum(r.get("removed", {}).values()))
    v: Any = r
    for part in path.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return float(v) if isinstance(v, int | float) else None


def table(results: list[dict[str, Any]], ns: list[int], args: argparse.Namespace) -> str:
    def med(n: int, measure_name: str, key: str) -> float | None:
        vals = [v for r in results if r["n"] == n and r["measure"] == measure_name
                if (v := _get(r, key)) is not None]
        return statistics.median(vals) if vals else None

    def show(v: float | None) -> str:
        if v is None:
            return "–"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}".rstrip("0").rstrip(".")

    fmt = {**vars(args), "acct_rate": f"{args.acct_rate:g}"}
    head = "| measure | " + " | ".join("empty" if n == 0 else f"{n:,}" for n in ns) + " |"
    lines = [head, "|---|" + "---:|" * len(ns)]
    for label, measure_name, key, _ in ROWS:
        cells = []
        empty = med(0, measure_name, key)
        for n in ns:
            v = med(n, measure_name, key)
            cell = show(v)
            if n and v is not None and empty and key not in ("db_mb", "rows", "removed_total"):
                cell += f" ({v / empty:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label.format(**fmt)} | " + " | ".join(cells) + " |")
    loads = [r["load1_before"] for r in results]
    lines.append("")
    lines.append(f"Medians of {args.runs} run(s); 1-minute load average before each measure: "
                 f"min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
                 f"max {max(loads):.2f} (2 CPUs).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="1000000",
                   help="comma-separated row counts; the empty database is always measured")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--acct-rate", type=float, default=500.0,
                   help="accounting requests/s (open loop) around the purge")
    p.add_argument("--purge-days", type=int, default=330)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--work", type=Path, default=None,
                   help="where the per-run copies go (default: beside the cache)")
    p.add_argument("--code", type=Path, default=ROOT,
                   help="the source tree whose radiusd runs (default: this one)")
    p.add_argument("--out", type=Path, help="also append the JSON lines here")
    p.add_argument("--fill-only", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the per-run directories")
    p.add_argument("--only", type=lambda v: set(v.split(",")), default=set(),
                   help="measure only these (start and the WAL always): login, acct, "
                   "scrape, export (or sessions_export_all...), purge")
    args = p.parse_args(argv)
    os.environ.setdefault("TZ", "Asia/Almaty")  # the server's, the CLI's and ours alike
    time.tzset()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    args.code = args.code.resolve()
    args.cache = args.cache.resolve()
    args.work = (args.work or args.cache / "work").resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(args.code))
    ns = sorted({0, *(int(x) for x in args.n.split(",") if x.strip())})
    if args.fill_only:
        for n in ns:
            if n:
                db, _, meta = cached(args.cache, n, args.seed)
                print(json.dumps({"measure": "fill", **meta, "path": str(db)}))
        return 0
    results: list[dict[str, Any]] = []
    out = args.out.open("a") if args.out else None
    imported = subprocess.run(  # what the server and the CLI will import, as they run
        [sys.executable, "-c", "import radiusd; print(radiusd.__file__)"], cwd=args.work,
        env={**os.environ, "PYTHONPATH": str(args.code)}, capture_output=True, text=True,
        check=True).stdout.strip()
    if not imported.startswith(str(args.code)):
        sys.exit(f"radiusd would be imported from {imported}, not from --code {args.code}")
    header = {"measure": "header", "code": str(args.code), "git": _git(args.code),
              "uptime": _uptime(), "nproc": os.cpu_count(), "argv": sys.argv[1:],
              "python": sys.version.split()[0]}

    def emit(r: dict[str, Any]) -> None:
        line = json.dumps(r, ensure_ascii=False)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
        if r["measure"] != "header":
            results.append(r)

    emit(header)
    try:
        for n in ns:  # fill (or find) every cache first, so runs are not split by a fill
            if n:
                cached(args.cache, n, args.seed)
        for run in range(1, args.runs + 1):
            for n in ns:
                print(f"[n={n:,} run {run}] {_uptime()}", file=sys.stderr)
                measure(n, run, args, args.code, emit)
    finally:
        if out:
            out.close()
    print()
    print(table(results, ns, args))
    print(f"\nstart: {header['uptime']}\nend:   {_uptime()}")
    return 0


def _git(code: Path) -> str:
    p = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True, check=False)
    return p.stdout.strip() or "not a git tree"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True,
                          check=False).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
