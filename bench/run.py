#!/usr/bin/env python3
"""Benchmark radiusd (and FreeRADIUS, when installed) on this machine, in one run.

    .venv/bin/python bench/run.py                   # defaults: 3 runs x 5 s per cell
    .venv/bin/python bench/run.py --duration 10 --runs 3 --inflight 1,16,64,256
    .venv/bin/python bench/run.py --modes login,accept --out results.jsonl   # issue 4

1. Waits (at most 3 min) for the 1-minute load average to fall to about one core,
   then starts `radiusd serve` with a temporary config (loopback, free ports,
   temporary database, SMS to a file, every OTP abuse limit out of the way) and waits
   until it answers Status-Server.
2. If /usr/sbin/freeradius exists, copies /etc/freeradius/3.0 to a temporary raddb and
   replaces its radiusd.conf; /etc is untouched. For status/access/acct: a minimal one
   (loopback ports, client 127.0.0.1 / testing123, status_server = yes, a `users` entry
   so PAP accepts, `detail` for accounting, reject_delay = 0). For login/accept: rlm_sql
   with rlm_sql_sqlite (the stock sql module and sqlite queries, a temporary database
   made from the stock schema.sql, users in radcheck as Cleartext-Password, acct_unique
   + sql accounting into radacct).
3. For every mode and in-flight level, runs bench/loadgen.py --runs times against each
   server, alternating servers run by run, and prints markdown tables of the medians.
   `accept` first provisions --accept-users users on radiusd (one login each, no Stop)
   and afterwards runs open loop (--rate) at 50% of radiusd's peak accept rate.
   Raw results go to --out as JSON lines.
4. Stops the servers with SIGTERM and checks that radiusd exits 0.

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


def radiusd_toml(tmp: Path, ports: dict[str, int], server_extra: str = "",
                 database: str | None = None) -> str:
    """The benchmark config: loopback ports, files in ``tmp``, no abuse limit in the way.
    ``server_extra``: more TOML lines for ``[server]`` (e.g. "max_queue_ms = 100");
    ``database``: the ``[database]`` lines (default: ``path`` = tmp/radiusd.db)."""
    database = database or f'path = "{tmp / "radiusd.db"}"'
    return f"""\
[server]
auth_listen = ["127.0.0.1:{ports['auth']}"]
acct_listen = ["127.0.0.1:{ports['acct']}"]
{server_extra}

[database]
{database}

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
per_nas_daily = 1000000000
global_daily = 1000000000
per_prefix_daily = 1000000000

[accounting]
# Provisioned `accept` users keep a live session without Interim-Updates for the
# whole run; the reaper must not close them (default: 3 x 300 s + 60 s).
stale_after_seconds = 86400

[sms]
provider = "file"

[sms.file]
path = "{tmp / 'outbox.jsonl'}"
"""


def start_radiusd(tmp: Path, server_extra: str = ""
                  ) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    """``server_extra``: more TOML lines for ``[server]`` (e.g. "max_queue_ms = 100")."""
    ports = {"auth": free_udp_port(), "acct": free_udp_port()}
    config = tmp / "radiusd.toml"
    config.write_text(radiusd_toml(tmp, ports, server_extra))
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


# -- FreeRADIUS with rlm_sql + SQLite (issue 4) ---------------------------------------


FREERADIUS_SQL_MODULES = """\
	$INCLUDE ${{confdir}}/mods-enabled/always
	$INCLUDE ${{confdir}}/mods-enabled/expr
	pap {{
		normalise = yes
	}}
	# mods-available/sql with the driver and file set; the stock pool and queries.
	sql {{
{driver}		acct_table1 = "radacct"
		acct_table2 = "radacct"
		postauth_table = "radpostauth"
		authcheck_table = "radcheck"
		groupcheck_table = "radgroupcheck"
		authreply_table = "radreply"
		groupreply_table = "radgroupreply"
		usergroup_table = "radusergroup"
		delete_stale_sessions = yes
		# The stock list plus "+": E.164 user names must not be escaped to "=2B...".
		safe_characters = "+@abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_: /"
		pool {{
			start = ${{thread[pool].start_servers}}
			min = ${{thread[pool].min_spare_servers}}
			max = ${{thread[pool].max_servers}}
			spare = ${{thread[pool].max_spare_servers}}
			uses = 0
			retry_delay = 30
			lifetime = 0
			idle_timeout = 60
		}}
		client_table = "nas"
		group_attribute = "SQL-Group"
		$INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
	}}
}}

policy {{
	$INCLUDE ${{confdir}}/policy.d/
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
		sql
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
		acct_unique
	}}
	accounting {{
		sql
	}}
	post-auth {{
	}}
}}
"""

FR_SQLITE_DRIVER = """\
		dialect = "sqlite"
		driver = "rlm_sql_sqlite"
		sqlite {{
			filename = "{db}"
			busy_timeout = 200
		}}
		radius_db = "radius"
"""

FR_SQL_USERS = 20000  # radcheck rows: `accept` uses the first K, `login` cycles all


def freeradius_sql_conf(tmp: Path, raddb: Path, ports: dict[str, int], db: Path,
                        driver: str | None = None) -> str:
    """radiusd.conf for FreeRADIUS + rlm_sql; ``driver``: the sql module's dialect,
    driver and connection lines (default: rlm_sql_sqlite on ``db``)."""
    head = FREERADIUS_CONF.split("modules {{")[0].format(
        tmp=tmp, raddb=raddb, secret=SECRET, **ports)
    driver = driver if driver is not None else FR_SQLITE_DRIVER.format(db=db)
    return head + "modules {\n" + FREERADIUS_SQL_MODULES.format(driver=driver, **ports)


def fr_users(n: int) -> list[loadgen.User]:
    import secrets

    return [loadgen.User(loadgen.kz_number(5_000_000 + i), loadgen.device_mac(5_000_000 + i),
                         f"{secrets.randbelow(10**6):06d}") for i in range(n)]


def start_freeradius_sql(tmp: Path, users: list[loadgen.User]
                         ) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    import sqlite3

    db = tmp / "radius.db"
    schema = FREERADIUS_ETC / "mods-config/sql/main/sqlite/schema.sql"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.executescript(schema.read_text())
        con.executemany("INSERT INTO radcheck (username, attribute, op, value) "
                        "VALUES (?, 'Cleartext-Password', ':=', ?)",
                        [(u.number, u.code) for u in users])
        con.commit()
    return launch_freeradius_sql(tmp, FR_SQLITE_DRIVER.format(db=db), "freeradius (rlm_sql)")


def launch_freeradius_sql(tmp: Path, driver: str, what: str
                          ) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    """FreeRADIUS + rlm_sql in the foreground from a copy of /etc/freeradius/3.0 in
    ``tmp`` (``driver``: see freeradius_sql_conf); returns once it answers."""
    raddb = tmp / "raddb"
    shutil.copytree(FREERADIUS_ETC, raddb, symlinks=False,
                    ignore=shutil.ignore_patterns("certs"))
    (raddb / "certs").mkdir()
    for d in ("log", "radacct", "run"):
        (tmp / d).mkdir()
    ports = {"auth": free_udp_port(), "acct": free_udp_port()}
    (raddb / "radiusd.conf").write_text(
        freeradius_sql_conf(tmp, raddb, ports, tmp / "radius.db", driver))
    log = tmp / "freeradius.log"
    # -X: without it -C says nothing about what it rejects.
    check = subprocess.run([FREERADIUS, "-XC", "-d", str(raddb)], capture_output=True,
                           text=True, check=False)
    if check.returncode != 0:
        why = (check.stdout + check.stderr).strip().splitlines()[-3:]
        sys.exit("freeradius -C rejected the rlm_sql config:\n" + "\n".join(why))
    proc = subprocess.Popen([FREERADIUS, "-f", "-d", str(raddb)], cwd=tmp,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_ready(proc, ports["auth"], log, what)
    return proc, ports, log


# -- measuring -------------------------------------------------------------------------


def loadgen_cmd(mode: str, ports: dict[str, int], inflight: int, args: argparse.Namespace,
                extra: list[str] | None = None) -> list[str]:
    """bench/loadgen.py's command line for one cell (``args``: duration, warmup,
    no_uvloop)."""
    port = ports["acct" if mode == "acct" else "auth"]
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--target", f"127.0.0.1:{port}",
           "--acct-target", f"127.0.0.1:{ports['acct']}",
           "--secret", SECRET, "--mode", mode, "--inflight", str(inflight),
           "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--user", USER, "--password", PASSWORD, *(extra or [])]
    if args.no_uvloop:
        cmd.append("--no-uvloop")
    return cmd


def run_loadgen(mode: str, ports: dict[str, int], inflight: int, args: argparse.Namespace,
                extra: list[str] | None = None, timeout: float = 0) -> dict[str, Any]:
    cmd = loadgen_cmd(mode, ports, inflight, args, extra)
    load_before = os.getloadavg()[0]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             timeout=timeout or args.duration + args.warmup + 60)
    except subprocess.TimeoutExpired:
        sys.exit(f"loadgen did not finish in time: {' '.join(cmd)}")
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


def write_users(path: Path, users: list[loadgen.User]) -> Path:
    path.write_text("".join(json.dumps({"number": u.number, "mac": u.mac, "code": u.code})
                            + "\n" for u in users))
    return path


def wait_quiet(limit: float = 180.0, threshold: float | None = None) -> None:
    """Wait (at most `limit` s) for the 1-minute load average to drop below about one
    busy core: other sessions' test suites on this machine skew every figure."""
    threshold = threshold if threshold is not None else max(1.0, (os.cpu_count() or 2) / 2)
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] > threshold and time.monotonic() < deadline:
        print(f"  load average {os.getloadavg()[0]:.2f} > {threshold:.1f}: waiting",
              file=sys.stderr)
        time.sleep(10)


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


ISSUE4_MODES = ("login", "accept")
ALL_MODES = ("status", "access", "acct", *ISSUE4_MODES)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3, help="runs per cell; the table shows medians")
    p.add_argument("--inflight", default="1,16,64,256", help="status, access, acct")
    p.add_argument("--login-inflight", default="1,16,64")
    p.add_argument("--accept-inflight", default="1,16,64,256")
    p.add_argument("--accept-users", type=int, default=1000,
                   help="K users provisioned (radiusd) / in radcheck (FreeRADIUS) for accept")
    p.add_argument("--no-half-peak", action="store_true",
                   help="skip the open-loop accept runs at 50%% of radiusd's peak")
    p.add_argument("--modes", default="status,access,acct")
    p.add_argument("--no-freeradius", action="store_true")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait (up to 3 min) for a quiet machine first")
    p.add_argument("--no-uvloop", action="store_true",
                   help="loadgen on the stock asyncio loop (the server still uses uvloop)")
    p.add_argument("--out", type=Path, help="append every run's JSON result here")
    global ARGS
    ARGS = args = p.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in ALL_MODES:
            p.error(f"unknown mode {m!r}")
    levels_for = {m: [int(x) for x in args.inflight.split(",")] for m in modes}
    if "login" in modes:
        levels_for["login"] = [int(x) for x in args.login_inflight.split(",")]
    if "accept" in modes:
        levels_for["accept"] = [int(x) for x in args.accept_inflight.split(",")]

    info = machine()
    have_fr = not args.no_freeradius and os.access(FREERADIUS, os.X_OK)
    if have_fr:
        info["freeradius"] = freeradius_version()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
    if not args.no_wait:
        wait_quiet()
    info["uptime_start"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                          check=False).stdout.strip()
    print(f"start: {info['uptime_start']}", file=sys.stderr)

    servers: dict[str, tuple[subprocess.Popen[bytes], dict[str, int], Path]] = {}
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    half: dict[str, list[dict[str, Any]]] = {}
    out = args.out.open("a") if args.out else None
    status = 0
    number_base = 0

    def record(r: dict[str, Any], name: str, run: int) -> dict[str, Any]:
        r["server"] = name
        r["run"] = run
        if out:
            out.write(json.dumps(r) + "\n")
            out.flush()
        return r

    with tempfile.TemporaryDirectory(prefix="radiusd-bench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "radiusd").mkdir()
        outbox = tmp / "radiusd" / "outbox.jsonl"
        fr_pool = fr_users(FR_SQL_USERS)
        fr_login_users = write_users(tmp / "fr-login-users.jsonl", fr_pool)
        fr_accept_users = write_users(tmp / "fr-accept-users.jsonl",
                                      fr_pool[:args.accept_users])
        rd_accept_users = tmp / "radiusd-accept-users.jsonl"
        try:
            servers["radiusd"] = start_radiusd(tmp / "radiusd")
            if have_fr and any(m in ("status", "access", "acct") for m in modes):
                (tmp / "freeradius").mkdir()
                servers["freeradius"] = start_freeradius(tmp / "freeradius")
            if have_fr and any(m in ISSUE4_MODES for m in modes):
                (tmp / "freeradius-sql").mkdir()
                servers["freeradius-sql"] = start_freeradius_sql(tmp / "freeradius-sql",
                                                                 fr_pool)
            for mode in modes:
                names = ["radiusd"] + [n for n in servers if n != "radiusd" and
                                       (n == "freeradius-sql") == (mode in ISSUE4_MODES)]
                if mode == "accept":
                    # Log K users in once each (Get password, SMS, login, Start; no Stop):
                    # their passwords are live and bound to their device.
                    print(f"[radiusd provision {args.accept_users} users]", file=sys.stderr)
                    r = run_loadgen("provision", servers["radiusd"][1], 16, args, [
                        "--sms-outbox", str(outbox), "--count", str(args.accept_users),
                        "--users-out", str(rd_accept_users), "--number-base",
                        str(9_000_000), "--warmup", "0", "--duration", "300"],
                        timeout=400)
                    record(r, "radiusd", 0)
                for level in levels_for[mode]:
                    for run in range(args.runs):
                        for name in names:
                            ports = servers[name][1]
                            extra: list[str] = []
                            if mode == "login" and name == "radiusd":
                                extra = ["--sms-outbox", str(outbox),
                                         "--number-base", str(number_base)]
                                number_base += 200_000
                            elif mode == "login":
                                extra = ["--users", str(fr_login_users)]
                            elif mode == "accept":
                                extra = ["--users", str(rd_accept_users if name == "radiusd"
                                                        else fr_accept_users)]
                            print(f"[{name} {mode} inflight={level} run {run + 1}]",
                                  file=sys.stderr)
                            r = run_loadgen(mode, ports, level, args, extra)
                            results.setdefault((name, mode, level), []).append(
                                record(r, name, run + 1))
                if mode == "accept" and not args.no_half_peak:
                    half = half_peak_runs(servers, results, levels_for["accept"], args,
                                          rd_accept_users, fr_accept_users, record)
            if "freeradius-sql" in servers:
                db = tmp / "freeradius-sql" / "radius.db"
                import sqlite3

                with contextlib.closing(sqlite3.connect(db)) as con:
                    info["radacct"] = "{} rows, {} with a stop time".format(*con.execute(
                        "SELECT COUNT(*), COUNT(acctstoptime) FROM radacct").fetchone())
                print(f"FreeRADIUS radacct: {info['radacct']}", file=sys.stderr)
        finally:
            for name, (proc, _, log) in servers.items():
                rc = stop(proc, name)
                if name == "radiusd" and rc != 0:
                    print(f"radiusd exited {rc} after SIGTERM:\n{log.read_text()[-2000:]}",
                          file=sys.stderr)
                    status = 1
            if out:
                out.close()
    info["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                        check=False).stdout.strip()
    print(f"end: {info['uptime_end']}", file=sys.stderr)

    old = [m for m in modes if m not in ISSUE4_MODES]
    if old:
        print_table(results, old, levels_for[old[0]], "freeradius" in servers, args, info)
    if "login" in modes:
        print_login_table(results, levels_for["login"], "freeradius-sql" in servers, args)
    if "accept" in modes:
        print_accept_table(results, levels_for["accept"], "freeradius-sql" in servers, half)
    print(f"\nstart: {info['uptime_start']}\nend:   {info['uptime_end']}")
    if "radacct" in info:
        print(f"FreeRADIUS radacct after the run: {info['radacct']}")
    return status


def half_peak_runs(servers: dict[str, tuple[subprocess.Popen[bytes], dict[str, int], Path]],
                   results: dict[tuple[str, str, int], list[dict[str, Any]]],
                   levels: list[int], args: argparse.Namespace, rd_users: Path,
                   fr_users_file: Path, record: Any) -> dict[str, list[dict[str, Any]]]:
    """Open loop at 50% of radiusd's peak accept rate (the median at its best in-flight
    level): radiusd and FreeRADIUS at that rate, and FreeRADIUS at 50% of its own peak."""
    def peak(name: str) -> float:
        return max((median(results.get((name, "accept", lv), []), "rps") or 0.0)
                   for lv in levels)

    plan = [("radiusd", peak("radiusd") / 2, rd_users, "50% of radiusd's peak")]
    if "freeradius-sql" in servers:
        plan += [("freeradius-sql", peak("radiusd") / 2, fr_users_file,
                  "50% of radiusd's peak"),
                 ("freeradius-sql", peak("freeradius-sql") / 2, fr_users_file,
                  "50% of FreeRADIUS's peak")]
    half: dict[str, list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for name, rate, users, what in plan:
            if rate <= 0:
                continue
            print(f"[{name} accept --rate {rate:.0f} ({what}) run {run + 1}]",
                  file=sys.stderr)
            r = run_loadgen("accept", servers[name][1], 256, args,
                            ["--users", str(users), "--rate", f"{rate:.0f}"])
            r["what"] = what
            half.setdefault(f"{name}|{what}|{rate:.0f}", []).append(record(r, name, run + 1))
    return half


def steps_cell(rs: list[dict[str, Any]], step: str) -> str:
    p50 = median([r["steps"][step] for r in rs if step in r.get("steps", {})], "p50_ms")
    p99 = median([r["steps"][step] for r in rs if step in r.get("steps", {})], "p99_ms")
    return f"{fmt(p50)} / {fmt(p99)}" if p50 is not None else "–"


def print_login_table(results: dict[tuple[str, str, int], list[dict[str, Any]]],
                      levels: list[int], use_fr: bool, args: argparse.Namespace) -> None:
    print(f"\n#### login: medians of {args.runs} runs x {args.duration:g} s\n")
    head = "| in flight | radiusd logins/s | login p50 ms | p99 ms | timeouts | failures |"
    sep = "|---:|---:|---:|---:|---:|---:|"
    if use_fr:
        head += (" FreeRADIUS+SQL logins/s (3 steps) | login p50 ms | p99 ms | timeouts |"
                 " radiusd / FreeRADIUS |")
        sep += "---:|---:|---:|---:|---:|"
    print(head)
    print(sep)
    for level in levels:
        ours = results.get(("radiusd", "login", level), [])
        fails = sum(sum(r["failures"].values()) + r["sms_timeouts"] for r in ours)
        row = (f"| {level} | {fmt(median(ours, 'logins_per_s'), 0)} | "
               f"{fmt(median(ours, 'login_p50_ms'))} | {fmt(median(ours, 'login_p99_ms'))} | "
               f"{sum(r['timeouts'] for r in ours)} | {fails} |")
        if use_fr:
            fr = results.get(("freeradius-sql", "login", level), [])
            a, b = median(ours, "logins_per_s"), median(fr, "logins_per_s")
            row += (f" {fmt(b, 0)} | {fmt(median(fr, 'login_p50_ms'))} | "
                    f"{fmt(median(fr, 'login_p99_ms'))} | {sum(r['timeouts'] for r in fr)} | "
                    f"{a / b:.2f}x |" if a and b else " – | – | – | – | – |")
        print(row)
    print("\nPer step, p50 / p99 ms (medians of the runs' percentiles):\n")
    print("| server | in flight | get_password | sms (Reject -> code in outbox) | login "
          "| start | stop |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("radiusd", "freeradius-sql") if use_fr else ("radiusd",):
        for level in levels:
            rs = results.get((name, "login", level), [])
            print(f"| {name} | {level} | " + " | ".join(
                steps_cell(rs, st) for st in ("get_password", "sms", "login", "start", "stop"))
                + " |")


def print_accept_table(results: dict[tuple[str, str, int], list[dict[str, Any]]],
                       levels: list[int], use_fr: bool,
                       half: dict[str, list[dict[str, Any]]]) -> None:
    print("\n#### accept (closed loop)\n")
    print_table(results, ["accept"], levels, use_fr, ARGS, None, fr_name="freeradius-sql")
    if half:
        print("\n#### accept, open loop (--rate)\n")
        print("| server | rate req/s | what | answered req/s | p50 ms | p99 ms | max ms |"
              " timeouts | late sends |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for key, rs in half.items():
            name, what, rate = key.split("|")
            print(f"| {name} | {int(rate):,} | {what} | {fmt(median(rs, 'rps'), 0)} | "
                  f"{fmt(median(rs, 'p50_ms'))} | {fmt(median(rs, 'p99_ms'))} | "
                  f"{fmt(median(rs, 'max_ms'))} | {sum(r['timeouts'] for r in rs)} | "
                  f"{sum(r.get('backlogged') or 0 for r in rs)} |")
        print("\np99 of each run: " + "; ".join(
            f"{k.split('|')[0]} @ {k.split('|')[2]}/s: "
            + ", ".join(str(r["p99_ms"]) for r in rs) for k, rs in half.items()))


def print_table(results: dict[tuple[str, str, int], list[dict[str, Any]]], modes: list[str],
                levels: list[int], use_fr: bool, args: argparse.Namespace,
                info: dict[str, str] | None, fr_name: str = "freeradius") -> None:
    if info is not None:
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
                fr = results.get((fr_name, mode, level), [])
                a, b = median(ours, "rps"), median(fr, "rps")
                ratio = f"{a / b:.2f}x" if a and b else "–"
                row += (f" {fmt(b, 0)} | {fmt(median(fr, 'p50_ms'))} | "
                        f"{fmt(median(fr, 'p99_ms'))} | {sum(r['timeouts'] for r in fr)} | "
                        f"{ratio} |")
            print(row)
    replies: dict[str, dict[str, int]] = {}
    for (name, mode, _), rs in results.items():
        for r in rs:
            for code, n in r.get("replies", {}).items():
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
