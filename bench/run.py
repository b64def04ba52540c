#!/usr/bin/env python3
"""Benchmark radiusd (and FreeRADIUS, when installed) on this machine, in one run.

    .venv/bin/python bench/run.py                   # defaults: 3 runs x 5 s per cell
    .venv/bin/python bench/run.py --duration 10 --runs 3 --inflight 1,16,64,256

1. Starts `radiusd serve` with a temporary config (loopback, free ports, temporary
   database, SMS to a file) and waits until it answers Status-Server.
2. If /usr/sbin/freeradius exists, copies /etc/freeradius/3.0 to a temporary raddb,
   replaces its radiusd.conf with a minimal one (loopback ports, client 127.0.0.1 /
   testing123, status_server = yes, a `users` entry so PAP accepts, `detail` for
   accounting, reject_delay = 0) and runs `freeradius -f -d <copy>`; /etc is untouched.
3. For every mode (status, access, acct) and in-flight level, runs bench/loadgen.py
   --runs times against each server, alternating servers run by run, and prints a
   markdown table of the medians. Raw results go to --out as JSON lines.
4. Stops both servers with SIGTERM and checks that radiusd exits 0.

Client and servers share the machine's cores: the figures are for that setup.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

SECRET = "testing123"
USER, PASSWORD = "bench", "benchpass"
FREERADIUS = "/usr/sbin/freeradius"
FREERADIUS_ETC = Path("/etc/freeradius/3.0")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, what: str,
               limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if loadgen.probe(("127.0.0.1", port), SECRET.encode(), 0.3):
            return
        time.sleep(0.2)
    proc.terminate()
    sys.exit(f"{what} did not answer Status-Server within {limit:.0f} s:\n"
             f"{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], what: str) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            print(f"{what} ignored SIGTERM for 20 s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()
    return int(proc.returncode)


# -- radiusd ---------------------------------------------------------------------------


def start_radiusd(tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    ports = {"auth": free_udp_port(), "acct": free_udp_port()}
    config = tmp / "radiusd.toml"
    config.write_text(f"""\
[server]
auth_listen = ["127.0.0.1:{ports['auth']}"]
acct_listen = ["127.0.0.1:{ports['acct']}"]

[database]
path = "{tmp / 'radiusd.db'}"

[[clients]]
name = "bench"
address = "127.0.0.1"
secret = "{SECRET}"

[otp]
key_file = "{tmp / 'radiusd.key'}"
# Issue 4 benchmark: no abuse limit may throttle the load generator.
resend_after_seconds = 0
per_number_hourly = 1000000000
per_number_daily = 1000000000
per_device_hourly = 1000000000
per_nas_minute = 1000000000
global_per_minute = 1000000000

[accounting]
# Provisioned `accept` users keep a live session without Interim-Updates for the
# whole run; the reaper must not close them (default: 3 x 300 s + 60 s).
stale_after_seconds = 86400

[sms]
provider = "file"

[sms.file]
path = "{tmp / 'outbox.jsonl'}"
""")
    log = tmp / "radiusd.log"
    cmd = [sys.executable, "-m", "radiusd", "serve", "-c", str(config)]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_ready(proc, ports["auth"], log, "radiusd")
    return proc, ports, log


# -- FreeRADIUS ------------------------------------------------------------------------


FREERADIUS_CONF = """\
# Minimal benchmark configuration written by bench/run.py (the stock one is not used).
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {tmp}/log
raddbdir = {raddb}
radacctdir = {tmp}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
certdir = ${{confdir}}/certs
cadir = ${{confdir}}/certs
run_dir = {tmp}/run
db_dir = {tmp}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
correct_escapes = true
max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no

log {{
	destination = stderr
	colourise = no
	auth = no
}}

security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}

# The stock thread pool settings.
thread pool {{
	start_servers = 5
	max_servers = 32
	min_spare_servers = 3
	max_spare_servers = 10
	max_requests_per_server = 0
	auto_limit_acct = no
}}

client localhost {{
	ipaddr = 127.0.0.1
	secret = {secret}
}}

modules {{
	$INCLUDE ${{confdir}}/mods-enabled/always
	pap {{
		normalise = yes
	}}
	files {{
		filename = {tmp}/users
		acctusersfile = {tmp}/acct_users
	}}
	detail {{
		filename = {tmp}/radacct/detail
		escape_filenames = no
		permissions = 0600
		header = "%t"
	}}
}}

server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {auth}
	}}
	listen {{
		type = acct
		ipaddr = 127.0.0.1
		port = {acct}
	}}
	authorize {{
		files
		pap
		Autz-Type Status-Server {{
			ok
		}}
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
	}}
	preacct {{
	}}
	accounting {{
		detail
		ok
	}}
	post-auth {{
	}}
}}
"""


def freeradius_version() -> str:
    out = subprocess.run([FREERADIUS, "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    for line in first:
        if "Version" in line:
            return line.split("Version", 1)[1].split(",")[0].strip()
    return "?"


def start_freeradius(tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    raddb = tmp / "raddb"
    shutil.copytree(FREERADIUS_ETC, raddb, symlinks=False,
                    ignore=shutil.ignore_patterns("certs"))
    (raddb / "certs").mkdir()
    for d in ("log", "radacct", "run"):
        (tmp / d).mkdir()
    (tmp / "users").write_text(f'{USER}\tCleartext-Password := "{PASSWORD}"\n')
    (tmp / "acct_users").write_text("")
    ports = {"auth": free_udp_port(), "acct": free_udp_port()}
    (raddb / "radiusd.conf").write_text(FREERADIUS_CONF.format(
        tmp=tmp, raddb=raddb, secret=SECRET, **ports))
    log = tmp / "freeradius.log"
    check = subprocess.run([FREERADIUS, "-C", "-d", str(raddb)], capture_output=True,
                           text=True, check=False)
    if check.returncode != 0:
        sys.exit(f"freeradius -C rejected the benchmark config:\n{check.stdout}{check.stderr}")
    proc = subprocess.Popen([FREERADIUS, "-f", "-d", str(raddb)], cwd=tmp,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_ready(proc, ports["auth"], log, "freeradius")
    return proc, ports, log


# -- measuring -------------------------------------------------------------------------


def run_loadgen(mode: str, port: int, inflight: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--target", f"127.0.0.1:{port}",
           "--secret", SECRET, "--mode", mode, "--inflight", str(inflight),
           "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--user", USER, "--password", PASSWORD]
    if args.no_uvloop:
        cmd.append("--no-uvloop")
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.stderr:
        print("   ", out.stderr.strip().splitlines()[-1], file=sys.stderr)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        sys.exit(f"loadgen failed ({out.returncode}):\n{out.stderr}")
    result = dict(json.loads(lines[-1]))
    # Other work on the machine skews the figures: keep the evidence with them.
    result["loadavg_1m_before"] = round(load_before, 2)
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return result


def median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if digits == 0 else f"{v:.{digits}f}"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import uvloop  # noqa: F401

        uv = "yes" if not ARGS.no_uvloop else "no (--no-uvloop)"
    except ImportError:
        uv = "no"
    from radiusd import __version__

    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "uvloop": uv, "radiusd": __version__, "commit": commit or "?",
            "kernel": platform.release()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3, help="runs per cell; the table shows medians")
    p.add_argument("--inflight", default="1,16,64,256")
    p.add_argument("--modes", default="status,access,acct")
    p.add_argument("--no-freeradius", action="store_true")
    p.add_argument("--no-uvloop", action="store_true",
                   help="loadgen on the stock asyncio loop (the server still uses uvloop)")
    p.add_argument("--out", type=Path, help="append every run's JSON result here")
    global ARGS
    ARGS = args = p.parse_args()
    levels = [int(x) for x in args.inflight.split(",")]
    modes = args.modes.split(",")
    for m in modes:
        if m not in ("status", "access", "acct"):
            p.error(f"unknown mode {m!r}")

    info = machine()
    use_fr = not args.no_freeradius and os.access(FREERADIUS, os.X_OK)
    if use_fr:
        info["freeradius"] = freeradius_version()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)

    servers: dict[str, tuple[subprocess.Popen[bytes], dict[str, int], Path]] = {}
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    out = args.out.open("a") if args.out else None
    status = 0
    with tempfile.TemporaryDirectory(prefix="radiusd-bench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "radiusd").mkdir()
        try:
            servers["radiusd"] = start_radiusd(tmp / "radiusd")
            if use_fr:
                (tmp / "freeradius").mkdir()
                servers["freeradius"] = start_freeradius(tmp / "freeradius")
            for mode in modes:
                for level in levels:
                    for run in range(args.runs):
                        for name, (_, ports, _) in servers.items():
                            port = ports["acct" if mode == "acct" else "auth"]
                            print(f"[{name} {mode} inflight={level} run {run + 1}]",
                                  file=sys.stderr)
                            r = run_loadgen(mode, port, level, args)
                            r["server"] = name
                            r["run"] = run + 1
                            results.setdefault((name, mode, level), []).append(r)
                            if out:
                                out.write(json.dumps(r) + "\n")
                                out.flush()
        finally:
            for name, (proc, _, log) in servers.items():
                rc = stop(proc, name)
                if name == "radiusd" and rc != 0:
                    print(f"radiusd exited {rc} after SIGTERM:\n{log.read_text()[-2000:]}",
                          file=sys.stderr)
                    status = 1
            if out:
                out.close()

    print_table(results, modes, levels, use_fr, args, info)
    return status


def print_table(results: dict[tuple[str, str, int], list[dict[str, Any]]], modes: list[str],
                levels: list[int], use_fr: bool, args: argparse.Namespace,
                info: dict[str, str]) -> None:
    print(f"\nMedians of {args.runs} runs x {args.duration:g} s (after {args.warmup:g} s "
          f"warm-up); {info['nproc']} CPUs ({info['cpu']}) shared by load generator and "
          f"server(s); Python {info['python']}, uvloop {info['uvloop']}"
          + (f", FreeRADIUS {info['freeradius']}" if use_fr else "") + ".\n")
    head = "| mode | in flight | radiusd req/s | p50 ms | p99 ms | timeouts |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if use_fr:
        head += " FreeRADIUS req/s | p50 ms | p99 ms | timeouts | radiusd / FreeRADIUS |"
        sep += "---:|---:|---:|---:|---:|"
    print(head)
    print(sep)
    for mode in modes:
        for level in levels:
            ours = results.get(("radiusd", mode, level), [])
            row = (f"| {mode} | {level} | {fmt(median(ours, 'rps'), 0)} | "
                   f"{fmt(median(ours, 'p50_ms'))} | {fmt(median(ours, 'p99_ms'))} | "
                   f"{sum(r['timeouts'] for r in ours)} |")
            if use_fr:
                fr = results.get(("freeradius", mode, level), [])
                a, b = median(ours, "rps"), median(fr, "rps")
                ratio = f"{a / b:.2f}x" if a and b else "–"
                row += (f" {fmt(b, 0)} | {fmt(median(fr, 'p50_ms'))} | "
                        f"{fmt(median(fr, 'p99_ms'))} | {sum(r['timeouts'] for r in fr)} | "
                        f"{ratio} |")
            print(row)
    replies: dict[str, dict[str, int]] = {}
    for (name, mode, _), rs in results.items():
        for r in rs:
            for code, n in r["replies"].items():
                d = replies.setdefault(f"{name} {mode}", {})
                d[code] = d.get(code, 0) + n
    loads = [r["loadavg_1m_after"] for rs in results.values() for r in rs]
    if loads:
        print(f"\n1-minute load average after each run: min {min(loads):.2f}, "
              f"median {statistics.median(loads):.2f}, max {max(loads):.2f} "
              f"(about 2 is this benchmark alone; more means other work shared the CPUs).")
    print("\nReplies seen: " + "; ".join(
        f"{k}: " + ", ".join(f"{c} {n}" for c, n in v.items()) for k, v in replies.items()))


ARGS: argparse.Namespace

if __name__ == "__main__":
    sys.exit(main())
