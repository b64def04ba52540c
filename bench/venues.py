#!/usr/bin/env python3
"""Issue 15 item 4: many venues at full speed.

    .venv/bin/python bench/venues.py                 # 3 runs x 5 s per cell
    .venv/bin/python bench/venues.py --runs 1 --inflight 16 --out results.jsonl

1. Load: a config of 1,000 venues and 10,000 `[[clients]]` (IPv4 /24s and /32s,
   IPv6 /48s) is read and validated (`config.load`), and the client table and venues
   built, in this process: median of 5 (and `radiusd check-config` wall time).
2. Lookup: the client of 10,000 addresses not seen before (no cache), microseconds
   per address, with 1 and with 10,000 clients.
3. The accept path (bench/run.py's `accept` mode: re-authentication of live
   passwords, as bench/loadgen.py drives it) against `radiusd serve` with 1 client
   and with those 10,000 clients and 1,000 venues (the load generator's client in the
   last venue), the same runs alternating; medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402

CLIENTS, VENUES = 10_000, 1_000


def many(clients: int = CLIENTS, venues: int = VENUES, bench_client: str = "bench") -> str:
    """TOML for `clients` NAS, ten to a venue; the benchmark's own client (defined by
    bench/run.py's config) joins the last venue."""
    out = []
    for i in range(clients):
        address = (f"2001:db8:{i:x}::/48", f"10.{i // 256 % 256}.{i % 256}.0/24",
                   f"172.16.{i // 256 % 256}.{i % 256}")[i % 3]
        out.append(f'[[clients]]\nname = "nas-{i}"\naddress = "{address}"\n'
                   f'secret = "a-long-enough-secret-{i:05d}"\nvendor = "mikrotik"\n')
    for v in range(venues):
        names = [f'"nas-{i}"' for i in range(v * 10, min(clients, v * 10 + 10))]
        if v == venues - 1:
            names.append(f'"{bench_client}"')
        out.append(f'[[venues]]\nname = "venue-{v}"\nclients = [{", ".join(names)}]\n'
                   f'rate_limit = "2M/8M"\ntimezone = "Asia/Almaty"\n')
    return "\n".join(out)


def load_times(tmp: Path) -> dict[str, Any]:
    from radiusd.config import load
    from radiusd.radius.clients import ClientTable
    from radiusd.venues import Venues

    path = tmp / "big.toml"
    path.write_text('[[clients]]\nname = "bench"\naddress = "127.0.0.1"\n'
                    'secret = "testing123"\n' + many())
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        config = load(path)
        ClientTable(config.clients)
        Venues(config)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "radiusd", "check-config", "-c", str(path)],
                   check=True, capture_output=True)
    check = time.perf_counter() - t0
    return {"load_build_s": round(statistics.median(times), 3),
            "check_config_s": round(check, 3)}


def lookup_us(tmp: Path) -> dict[str, float]:
    from radiusd.config import load
    from radiusd.radius.clients import ClientTable

    out = {}
    for n in (1, CLIENTS):
        path = tmp / f"lookup-{n}.toml"
        path.write_text(many(n, 0) if n > 1 else
                        '[[clients]]\nname = "nas-0"\naddress = "10.0.0.0/8"\n'
                        'secret = "a-long-enough-secret-00000"\n')
        table = ClientTable(load(path).clients)
        addresses = [f"10.{i // 256 % 256}.{i % 256}.9" for i in range(10_000)]
        t0 = time.perf_counter()
        for a in addresses:
            table.find(a)
        out[f"lookup_us_{n}_clients"] = round((time.perf_counter() - t0) / len(addresses)
                                              * 1e6, 2)
    return out


def start(tmp: Path, extra: str) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    ports = {"auth": bench.free_udp_port(), "acct": bench.free_udp_port()}
    config = tmp / "radiusd.toml"
    config.write_text(bench.radiusd_toml(tmp, ports) + "\n" + extra)
    log = tmp / "radiusd.log"
    proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(config)],
                            cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    bench.wait_ready(proc, ports["auth"], log, "radiusd", limit=60)
    return proc, ports, log


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--inflight", default="16,64")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    levels = [int(x) for x in args.inflight.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="radiusd-bench-venues-") as t:
        tmp = Path(t)
        figures = load_times(tmp) | lookup_us(tmp)
        print(json.dumps(figures))
        results.append({"what": "load", **figures})
        servers = {}
        for name, extra in (("1 client", ""), (f"{CLIENTS} clients", many())):
            d = tmp / name.replace(" ", "-")
            d.mkdir()
            proc, ports, _ = start(d, extra)
            users = d / "users.jsonl"
            bench.run_loadgen("provision", ports, 16, args, [
                "--sms-outbox", str(d / "outbox.jsonl"), "--count", str(args.users),
                "--users-out", str(users), "--number-base", "9000000", "--warmup", "0",
                "--duration", "300"], timeout=400)
            servers[name] = (proc, ports, users)
        try:
            for level in levels:
                for run in range(args.runs):
                    for name, (_, ports, users) in servers.items():
                        r = bench.run_loadgen("accept", ports, level, args,
                                              ["--users", str(users)])
                        r |= {"what": "accept", "server": name, "inflight": level,
                              "run": run}
                        print(json.dumps(r), file=sys.stderr)
                        results.append(r)
        finally:
            for name, (proc, _, _) in servers.items():
                bench.stop(proc, name)
    if args.out:
        with args.out.open("a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    print("\n| in flight | server | accepts/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for level in levels:
        for name in servers:
            rs = [r for r in results if r.get("server") == name and r["inflight"] == level]
            print(f"| {level} | {name} | {bench.fmt(bench.median(rs, 'rps'), 0)} | "
                  f"{bench.fmt(bench.median(rs, 'p50_ms'))} | "
                  f"{bench.fmt(bench.median(rs, 'p99_ms'))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
