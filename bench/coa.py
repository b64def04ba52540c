#!/usr/bin/env python3
"""Issue 13: time from a Disconnect call to its ACK, many sessions kicked at once.

    .venv/bin/python bench/coa.py                       # 1,000 sessions, 3 runs
    .venv/bin/python bench/coa.py --sessions 1000 --runs 3 --nas 1

1. Starts the simulated NAS (`radiusd.testing.coa_nas.CoaNas`, answering ACK after
   verifying each request with pyrad) in a child process per NAS, on loopback.
2. For each run, hands --sessions sessions at once to a `DisconnectQueue` (what the
   session-end code does on each revocation; spread over the NASes) and takes, per
   session, the time from `put` to its verified ACK reaching the `record` callback;
   prints the median, p99 and max of the run and of all runs pooled, with the
   retransmissions, forged answers and the UDP datagrams the kernel dropped.

Past --window outstanding requests to one NAS (32; 256 at most, the Identifier space)
the rest wait their turn (docs/coa.md), so with one NAS the times include that
queue. The NAS processes share the machine's cores with the sender: the figures are
for that setup.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radiusd.clock import SystemClock  # noqa: E402
from radiusd.config import ClientConfig  # noqa: E402
from radiusd.radius.coa import SessionTarget  # noqa: E402
from radiusd.radius.disconnect import (  # noqa: E402
    Disconnector,
    DisconnectQueue,
    DisconnectResult,
    routes_from_config,
)

SECRET = "bench-coa-secret"
T = TypeVar("T")


def run_on(coro: Coroutine[Any, Any, T], loop: str) -> T:
    """On uvloop when asked (as `radiusd serve` runs when it is installed)."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


async def serve_nas(port: int) -> None:
    """The child: one simulated NAS answering ACK until killed."""
    from radiusd.testing.coa_nas import CoaNas

    nas = CoaNas(secret=SECRET.encode())
    _, bound = await nas.start("127.0.0.1", port)
    print(f"ready {bound}", flush=True)
    await asyncio.Event().wait()


def start_nases(n: int, loop: str) -> tuple[list[subprocess.Popen[str]], list[int]]:
    procs, ports = [], []
    for _ in range(n):
        p = subprocess.Popen([sys.executable, __file__, "--serve-nas", "--loop", loop],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert p.stdout is not None
        line = p.stdout.readline().split()
        if not line or line[0] != "ready":
            sys.exit(f"simulated NAS did not start: {line}")
        procs.append(p)
        ports.append(int(line[1]))
    return procs, ports


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the loopback UDP socket on ``port`` (its
    receive buffer was full): the last column of /proc/net/udp; 0 where there is none."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        f = line.split()
        if f[1].endswith(f":{port:04X}"):
            return int(f[-1])
    return 0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


async def one_run(ports: list[int], sessions: int, window: int
                  ) -> tuple[list[float], dict[str, int]]:
    clients = [ClientConfig(name=f"nas{i}", address=f"127.0.1.{i + 1}", secret=SECRET,
                            coa="disconnect", coa_address="127.0.0.1", coa_port=port)
               for i, port in enumerate(ports)]
    d = Disconnector(routes_from_config(clients), SystemClock(), bind_v4="127.0.0.1",
                     window=window)
    targets = [SessionTarget(client=f"nas{i % len(ports)}", nas_source="127.0.0.1",
                             user_name=f"+7701{i:07d}", acct_session_id=f"{i:08x}",
                             calling_station_id=f"AA-BB-CC-{i >> 16 & 255:02X}-"
                                                f"{i >> 8 & 255:02X}-{i & 255:02X}",
                             framed_ip_address=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                             nas_ip_address="127.0.0.1", nas_identifier="bench")
               for i in range(sessions)]

    put_at: dict[str, float] = {}
    results: list[tuple[float, str]] = []

    async def record(result: DisconnectResult) -> None:
        key = result.target.acct_session_id or ""
        results.append((time.perf_counter() - put_at[key], result.outcome))

    queue = DisconnectQueue(d, record)
    worker = asyncio.create_task(queue.run())
    nas_drops = sum(udp_drops(p) for p in ports)
    try:
        for t in targets:  # what session-end code does for each revoked session
            put_at[t.acct_session_id or ""] = time.perf_counter()
            queue.put(t)
        await queue.join()
        own = d.local_addresses()
        own_drops = sum(udp_drops(port) for _, port in own)
    finally:
        worker.cancel()
        await d.close()
    outcomes: dict[str, int] = {}
    for _, o in results:
        outcomes[o] = outcomes.get(o, 0) + 1
    c = d.counters()
    outcomes["retransmissions"] = c["counters"]["retransmissions"]
    outcomes["forged"] = sum(c["forged"].values())
    outcomes["drops at NAS"] = sum(udp_drops(p) for p in ports) - nas_drops
    outcomes["drops at sender"] = own_drops
    return [s for s, o in results if o == "ack"], outcomes


def default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nas", type=int, default=1, help="simulated NAS processes")
    ap.add_argument("--window", type=int, default=32,
                    help="most requests outstanding to one NAS (1-256)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default=default_loop(),
                    help="event loop of sender and NAS (default: uvloop when installed)")
    ap.add_argument("--serve-nas", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_nas:
        run_on(serve_nas(0), args.loop)
        return 0
    procs, ports = start_nases(args.nas, args.loop)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"Python {platform.python_version()}, {args.loop}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; {args.sessions} sessions at once to "
          f"{args.nas} simulated NAS, window {args.window}")
    print("| run | acked | median ms | p99 ms | max ms | retransmissions | forged | "
          "UDP drops at NAS / sender | load | other outcomes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    pooled: list[float] = []
    try:
        for run in range(1, args.runs + 1):
            load = os.getloadavg()[0]
            times, outcomes = run_on(one_run(ports, args.sessions, args.window), args.loop)
            pooled += times
            shown = ("ack", "retransmissions", "forged", "drops at NAS", "drops at sender")
            other = {k: v for k, v in outcomes.items() if k not in shown}
            print(f"| {run} | {len(times)} | {ms(statistics.median(times))} | "
                  f"{ms(percentile(times, 0.99))} | {ms(max(times))} | "
                  f"{outcomes['retransmissions']} | {outcomes['forged']} | "
                  f"{outcomes['drops at NAS']} / {outcomes['drops at sender']} | "
                  f"{load:.1f} | {other or '-'} |",
                  flush=True)
        print(f"| all | {len(pooled)} | {ms(statistics.median(pooled))} | "
              f"{ms(percentile(pooled, 0.99))} | {ms(max(pooled))} | | | | | |")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
