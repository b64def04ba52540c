#!/usr/bin/env python3
"""Issue 16 item 5: the accept path over RadSec (RFC 6614) beside UDP, in one run.

    .venv/bin/python bench/radsec.py --out bench/results/radsec.jsonl

One `radiusd serve` listens on UDP and on RadSec (loopback; certificates made with the
openssl commands of docs/radsec.md in a temporary directory). K users are provisioned
per transport (whole logins, no Stop: bench/loadgen.py `provision`), then
bench/loadgen.py `accept` (re-authentication with the live code, closed loop) runs
--runs times x --duration s per case, the cases interleaved run by run so that
machine noise falls on all of them alike:

  udp-1x64      one UDP socket, 64 requests in flight
  radsec-1x64   one TLS connection, 64 in flight on it
  udp-64x1      64 UDP sockets, one request in flight each
  radsec-64x1   64 TLS connections, one in flight each
  udp-1x1, radsec-1x1   one request at a time (latency without queueing)

Prints each case's median requests/s, p50 and p99 (ms) and the load average seen.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import SECRET, free_udp_port, radiusd_toml, stop, wait_ready  # noqa: E402

CASES = {  # name: (transport, connections or sockets, in flight)
    "udp-1x64": ("udp", 1, 64),
    "radsec-1x64": ("radsec", 1, 64),
    "udp-64x1": ("udp", 64, 1),
    "radsec-64x1": ("radsec", 64, 1),
    "udp-1x1": ("udp", 1, 1),
    "radsec-1x1": ("radsec", 1, 1),
}


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificates(tmp: Path) -> dict[str, Path]:
    """docs/radsec.md's openssl commands: a CA, the server, one NAS."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=Bench RadSec CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("nas", "extendedKeyUsage=clientAuth")):
        (tmp / f"{name}.ext").write_text(ext + "\n")
        run("req", *ec, "-subj", f"/CN=bench-{name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {k: tmp / v for k, v in (("ca", "ca.pem"), ("server_cert", "server.pem"),
                                     ("server_key", "server.key"), ("nas_cert", "nas.pem"),
                                     ("nas_key", "nas.key"))}


def loadgen_cmd(transport: str, ports: dict[str, int], certs: dict[str, Path],
                mode: str, inflight: int, ids_per_socket: int,
                extra: list[str]) -> list[str]:
    if transport == "radsec":
        target = [f"127.0.0.1:{ports['radsec']}", "--secret", "radsec",
                  "--tls-ca", str(certs["ca"]), "--tls-cert", str(certs["nas_cert"]),
                  "--tls-key", str(certs["nas_key"])]
    else:
        target = [f"127.0.0.1:{ports['auth']}", "--acct-target",
                  f"127.0.0.1:{ports['acct']}", "--secret", SECRET]
    return [sys.executable, str(HERE / "loadgen.py"), "--target", *target, "--mode", mode,
            "--inflight", str(inflight), "--ids-per-socket", str(ids_per_socket), *extra]


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        sys.exit(f"loadgen failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr}")
    result = dict(json.loads(lines[-1]))
    result["loadavg_1m_before"] = round(load, 2)
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--users", type=int, default=1000, help="provisioned per transport")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", type=Path, help="append one JSON line per run here")
    args = p.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}; choose from {', '.join(CASES)}")

    with tempfile.TemporaryDirectory(prefix="radiusd-bench-radsec-") as d:
        tmp = Path(d)
        certs = make_certificates(tmp)
        ports = {"auth": free_udp_port(), "acct": free_udp_port(), "radsec": free_tcp_port()}
        config = tmp / "radiusd.toml"
        config.write_text(radiusd_toml(
            tmp, ports, f'radsec_listen = ["127.0.0.1:{ports["radsec"]}"]') + f"""
[radsec]
certificate = "{certs['server_cert']}"
private_key = "{certs['server_key']}"
ca_file = "{certs['ca']}"
max_connections_per_address = 256

[[clients]]
name = "bench-radsec"
address = "127.0.0.1"
radsec = true
certificate_name = "bench-nas"
""")
        log = tmp / "radiusd.log"
        proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(config)],
                                cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, ports["auth"], log, "radiusd")
            users: dict[str, Path] = {}
            for n, transport in enumerate(("udp", "radsec")):
                users[transport] = tmp / f"users-{transport}.jsonl"
                r = run_json(loadgen_cmd(transport, ports, certs, "provision", 16, 256, [
                    "--count", str(args.users), "--duration", "600", "--warmup", "0",
                    "--sms-outbox", str(tmp / "outbox.jsonl"),
                    "--users-out", str(users[transport]),
                    "--number-base", str(1_000_000 * (n + 1))]), timeout=660)
                print(f"[provisioned {r.get('provisioned')} users over {transport}]",
                      file=sys.stderr)
            results: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
            for run in range(args.runs):
                for case in cases:
                    transport, socks, inflight = CASES[case]
                    ids = max(1, inflight // socks)
                    r = run_json(loadgen_cmd(transport, ports, certs, "accept",
                                             socks * ids, ids, [
                                                 "--users", str(users[transport]),
                                                 "--duration", str(args.duration),
                                                 "--warmup", str(args.warmup)]),
                                 timeout=args.duration + args.warmup + 120)
                    r.update(case=case, run=run + 1, transport=transport,
                             connections=socks, inflight=socks * ids)
                    results[case].append(r)
                    if args.out:
                        with args.out.open("a") as f:
                            f.write(json.dumps(r) + "\n")
                    print(f"  run {run + 1} {case:12s} {r['rps']:8.0f}/s  "
                          f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                          f"timeouts {r['timeouts']}  load {r['loadavg_1m_before']}",
                          file=sys.stderr)
        finally:
            stop(proc, "radiusd")
        print(f"\n{'case':14s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  "
              f"{'timeouts':>8s}  load before/after")
        for case in cases:
            rs = results[case]
            med = {k: statistics.median([float(r[k]) for r in rs if r[k] is not None]
                                        or [float("nan")])
                   for k in ("rps", "p50_ms", "p99_ms")}
            loads = "/".join(f"{r['loadavg_1m_before']}-{r['loadavg_1m_after']}" for r in rs)
            print(f"{case:14s} {med['rps']:8.0f} {med['p50_ms']:8.3f} {med['p99_ms']:8.3f}  "
                  f"{sum(int(r['timeouts']) for r in rs):8d}  {loads}")
        print(f"(medians of {args.runs} runs x {args.duration:g} s, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
