#!/usr/bin/env python3
"""Issue 12 item 8: radiusd on PostgreSQL (1 node, 2 workers, 2 nodes) beside radiusd on
SQLite and FreeRADIUS 3.2 + rlm_sql on the same PostgreSQL, in one run.

    .venv/bin/python bench/cluster.py --runs 3 --duration 5 --out cluster.jsonl
    .venv/bin/python bench/cluster.py --setups sqlite,freeradius --runs 1 --duration 3

Setups (all on this machine, all driven by bench/loadgen.py the same way):
  sqlite       radiusd, 1 process, SQLite (bench/run.py's config)
  pg1          radiusd, 1 process, `[database] url` on the throwaway PostgreSQL
  pg-workers2  the same with `[server] workers = 2` (SO_REUSEPORT)
  pg-nodes2    two radiusd processes on their own ports, one database, one sealing key
               and one SMS outbox file; the load is split over both
  freeradius   FreeRADIUS + rlm_sql with rlm_sql_postgresql on the same PostgreSQL
               server (own database, the stock schema, users in radcheck, acct_unique +
               sql accounting into radacct; otherwise bench/run.py's rlm_sql setup)

One PostgreSQL server (radiusd.testing.postgres: fsync on) holds a fresh database per
setup. Modes: `accept` (re-authentication of K provisioned users: no database write),
`login` (whole logins: get password, SMS, login, Start, Stop) and `acct` (Start/Stop
pairs, each answered once durable). Each cell runs --loadgens load generator processes
in parallel (the in-flight level split over them; pg-nodes2: one node each) with
--ids-per-socket requests per UDP source port, for every setup alike, alternating
setups run by run; the sums are the cell's figures, p99 is the highest of the parts'
(an upper bound of the whole's). After the closed-loop cells, accept and acct run open
loop (--rate) at half of each setup's own peak. A setup radiusd refuses (e.g. `url`
before PostgreSQL support) is reported as "not available: <its error>"; the rest runs.
Every cell also records the CPU used by the server processes, by PostgreSQL and by the
load generators (where the bottleneck is).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import loadgen  # noqa: E402
import run  # noqa: E402

from radiusd.testing.postgres import PostgresServer, PostgresUnavailable, running_postgres  # noqa: E402

SETUPS = ("sqlite", "pg1", "pg-workers2", "pg-nodes2", "freeradius")
MODES = ("accept", "login", "acct")
RADIUSD_DB = {"pg1": "radiusd_pg1", "pg-workers2": "radiusd_workers2",
              "pg-nodes2": "radiusd_nodes2"}
FR_DB = "freeradius"
TARGET_RATIO, TARGET_P99_MS = 1.5, 10.0  # issue 12 item 8
CLK_TCK = os.sysconf("SC_CLK_TCK")

Results = dict[tuple[str, str, int], list[dict[str, Any]]]


# -- configuration (pure) ----------------------------------------------------------------


def radiusd_configs(setup: str, tmp: Path, ports: list[dict[str, int]],
                    url: str | None) -> list[str]:
    """The TOML of each radiusd process of `setup` (pg-nodes2: two; the rest: one).
    Everything but the database and the processes is bench/run.py's config; the nodes
    share `tmp`, so one sealing key and one SMS outbox file."""
    if setup == "sqlite":
        return [run.radiusd_toml(tmp, ports[0])]
    if url is None:
        raise ValueError(f"{setup} needs a PostgreSQL url")
    database = f'url = "{url}"'
    if setup == "pg1":
        return [run.radiusd_toml(tmp, ports[0], database=database)]
    if setup == "pg-workers2":
        return [run.radiusd_toml(tmp, ports[0], "workers = 2", database=database)]
    if setup == "pg-nodes2":
        return [run.radiusd_toml(tmp, p, database=database) for p in ports]
    raise ValueError(f"{setup} is not a radiusd setup")


def nodes(setup: str) -> int:
    return 2 if setup == "pg-nodes2" else 1


def fr_postgresql_driver(pg: PostgresServer, database: str) -> str:
    """rlm_sql's dialect, driver and connection lines for bench/run.py's sql module."""
    return (f'\t\tdialect = "postgresql"\n'
            f'\t\tdriver = "rlm_sql_postgresql"\n'
            f'\t\tserver = "127.0.0.1"\n'
            f'\t\tport = {pg.port}\n'
            f'\t\tlogin = "postgres"\n'
            f'\t\tpassword = "{pg.password}"\n'
            f'\t\tradius_db = "{database}"\n')


# -- servers -------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    ports: list[dict[str, int]] = field(default_factory=list)  # one per node
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    tmp: Path = Path()
    error: str | None = None  # "not available: ..." when set
    accept_users: Path | None = None

    @property
    def outbox(self) -> Path:
        return self.tmp / "outbox.jsonl"


def first_error(log: Path) -> str:
    """The line of radiusd's output that says why it stopped (the last non-empty one)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "exited without a word"


def start_radiusd_setup(setup: Setup, url: str | None) -> None:
    """Start every process of a radiusd setup; on failure set `setup.error` and stop
    what did start."""
    setup.ports = [{"auth": run.free_udp_port(), "acct": run.free_udp_port()}
                   for _ in range(nodes(setup.name))]
    for i, text in enumerate(radiusd_configs(setup.name, setup.tmp, setup.ports, url)):
        config = setup.tmp / f"radiusd-{i + 1}.toml"
        config.write_text(text)
        log = setup.tmp / f"radiusd-{i + 1}.log"
        proc = subprocess.Popen([sys.executable, "-m", "radiusd", "serve", "-c", str(config)],
                                cwd=setup.tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        setup.procs.append((proc, log))
        deadline = time.monotonic() + 30
        while not loadgen.probe(("127.0.0.1", setup.ports[i]["auth"]), run.SECRET.encode(),
                                0.3):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = first_error(log) if proc.poll() is not None else \
                    "no answer to Status-Server within 30 s"
                setup.error = f"not available: {why.replace(str(setup.tmp) + '/', '')}"
                stop_setup(setup)
                return
            time.sleep(0.2)


def start_freeradius_pg(setup: Setup, pg: PostgresServer, users: list[loadgen.User]) -> None:
    """FreeRADIUS + rlm_sql_postgresql: its own database from the stock schema, users in
    radcheck as Cleartext-Password (as bench/run.py does for rlm_sql_sqlite)."""
    pg.create_database(FR_DB)
    schema = run.FREERADIUS_ETC / "mods-config/sql/main/postgresql/schema.sql"
    pg.psql(FR_DB, "-f", str(schema))
    rows = "".join(f"{u.number}\tCleartext-Password\t:=\t{u.code}\n" for u in users)
    pg.psql(FR_DB, "-c", r"\copy radcheck (username, attribute, op, value) FROM pstdin",
            stdin=rows)
    proc, ports, log = run.launch_freeradius_sql(
        setup.tmp, fr_postgresql_driver(pg, FR_DB), "freeradius (rlm_sql_postgresql)")
    setup.ports, setup.procs = [ports], [(proc, log)]


def stop_setup(setup: Setup) -> list[str]:
    """SIGTERM every process; the complaints of radiusd processes that did not exit 0."""
    bad = []
    for proc, log in setup.procs:
        rc = run.stop(proc, setup.name)
        if setup.name != "freeradius" and rc != 0 and setup.error is None:
            bad.append(f"{setup.name}: radiusd exited {rc} after SIGTERM: "
                       f"{log.read_text(errors='replace')[-1500:]}")
    setup.procs = []
    return bad


def stop_all(setups: dict[str, Setup]) -> int:
    """Stop every setup; 1 when a radiusd process did not exit 0 after SIGTERM."""
    status = 0
    for setup in setups.values():
        for complaint in stop_setup(setup):
            print(complaint, file=sys.stderr)
            status = 1
    return status


# -- CPU: where the time goes ----------------------------------------------------------------


def cpu_ticks(roots: list[int]) -> int:
    """utime + stime (clock ticks) of the live processes `roots` and their descendants,
    with what their exited children used (cutime + cstime: PostgreSQL's backends come
    and go; without them the sum fell when one exited, and a cell could read < 0)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(d.name)] = int(fields[1])
        ticks[int(d.name)] = sum(int(f) for f in fields[11:15])
    wanted = set(roots)
    grew = True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in wanted and pid not in wanted}
        wanted |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in wanted)


def postmaster_pid(pg: PostgresServer | None) -> list[int]:
    if pg is None:
        return []
    with contextlib.suppress(OSError, ValueError, IndexError):
        return [int((pg.data / "postmaster.pid").read_text().split()[0])]
    return []


@contextlib.contextmanager
def cpu_meter(server_pids: list[int], pg_pids: list[int]) -> Iterator[dict[str, float]]:
    """CPU % (100 = one core) of the server, PostgreSQL and the load generators (the
    children this process reaps meanwhile) over the block."""
    out: dict[str, float] = {}
    t0, s0, p0 = time.monotonic(), cpu_ticks(server_pids), cpu_ticks(pg_pids)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield out
    wall = max(time.monotonic() - t0, 1e-6)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["server"] = round(100 * (cpu_ticks(server_pids) - s0) / CLK_TCK / wall, 1)
    out["postgres"] = round(100 * (cpu_ticks(pg_pids) - p0) / CLK_TCK / wall, 1) \
        if pg_pids else 0.0
    out["loadgen"] = round(100 * (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
                           / wall, 1)


# -- measuring ---------------------------------------------------------------------------------


class CellFailed(RuntimeError):
    pass


def split(total: int, n: int) -> list[int]:
    """`total` in-flight requests over `n` load generators (the first ones get more)."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's figures from its load generators' results: rates and counts summed,
    p50 averaged by answers, p99 and max the highest (an upper bound of the whole's)."""
    rate_key = "logins_per_s" if "logins_per_s" in parts[0] else "rps"
    p50, p99 = ("login_p50_ms", "login_p99_ms") if rate_key == "logins_per_s" \
        else ("p50_ms", "p99_ms")
    weights = [max(p.get("completed", 0), 0) for p in parts]

    def wmean(key: str) -> float | None:
        pairs = [(float(p[key]), int(w)) for p, w in zip(parts, weights, strict=True)
                 if p.get(key) is not None]
        total = sum(w for _, w in pairs)
        if not pairs:
            return None
        if total == 0:
            return round(statistics.mean(v for v, _ in pairs), 3)
        return round(sum(v * w for v, w in pairs) / total, 3)

    def highest(key: str) -> float | None:
        values = [float(p[key]) for p in parts if p.get(key) is not None]
        return max(values) if values else None

    out: dict[str, Any] = {
        "mode": parts[0]["mode"], "loadgens": len(parts),
        "inflight": sum(p["inflight"] for p in parts),
        rate_key: round(sum(p[rate_key] for p in parts), 1),
        p50: wmean(p50), p99: highest(p99), "max_ms": highest("max_ms"),
        "completed": sum(p["completed"] for p in parts),
        "timeouts": sum(p["timeouts"] for p in parts),
        "rate": sum(p.get("rate") or 0 for p in parts) or None,
        "backlogged": sum(p.get("backlogged") or 0 for p in parts),
    }
    replies: dict[str, int] = {}
    for p in parts:
        for code, n in p.get("replies", {}).items():
            replies[code] = replies.get(code, 0) + n
    out["replies"] = replies
    if rate_key == "logins_per_s":
        failures: dict[str, int] = {}
        for p in parts:
            for k, n in p.get("failures", {}).items():
                failures[k] = failures.get(k, 0) + n
        out["failures"] = failures
        out["sms_timeouts"] = sum(p.get("sms_timeouts", 0) for p in parts)
    return out


@dataclass
class Bench:
    args: argparse.Namespace
    pg: PostgresServer | None
    tmp: Path
    out: Any = None  # the --out file
    number_base: int = 0
    fr_pool: list[loadgen.User] = field(default_factory=list)
    _files: dict[tuple[str, int, int], Path] = field(default_factory=dict)

    def users_part(self, kind: str, users: list[loadgen.User], n: int, i: int) -> Path:
        """Part `i` of `n` of a user list as a loadgen --users file (cached)."""
        key = (kind, n, i)
        if key not in self._files:
            self._files[key] = run.write_users(self.tmp / f"{kind}-{n}-{i}.jsonl", users[i::n])
        return self._files[key]

    def cell(self, setup: Setup, mode: str, inflight: int, rate: float = 0.0
             ) -> dict[str, Any]:
        """Run the load generators of one cell in parallel; the combined result."""
        n = max(1, min(self.args.loadgens, inflight))
        cmds = []
        for i, part in enumerate(split(inflight, n)):
            extra = ["--ids-per-socket", str(self.args.ids_per_socket)]
            if rate:
                extra += ["--rate", f"{rate / n:.1f}"]
            if mode == "login" and setup.name == "freeradius":
                extra += ["--users", str(self.users_part("fr-login", self.fr_pool, n, i))]
            elif mode == "login":
                extra += ["--sms-outbox", str(setup.outbox),
                          "--number-base", str(self.number_base)]
                self.number_base += 200_000
            elif mode == "accept":
                pool = self.fr_pool[:self.args.accept_users] if setup.name == "freeradius" \
                    else loadgen.read_users(setup.accept_users or Path("/nonexistent"))
                extra += ["--users", str(self.users_part(f"{setup.name}-accept", pool, n, i))]
            cmds.append(run.loadgen_cmd(mode, setup.ports[i % len(setup.ports)], part,
                                        self.args, extra))
        load_before = os.getloadavg()[0]
        server = [p.pid for p, _ in setup.procs]
        pg = postmaster_pid(self.pg) if setup.name != "sqlite" else []
        with cpu_meter(server, pg) as cpu:
            procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for c in cmds]
            outs = []
            for proc in procs:
                try:
                    outs.append(proc.communicate(
                        timeout=self.args.duration + self.args.warmup + 60))
                except subprocess.TimeoutExpired:
                    for p in procs:
                        p.kill()
                    raise CellFailed(f"{setup.name} {mode}: loadgen did not finish") from None
        parts = []
        for (stdout, stderr), proc in zip(outs, procs, strict=True):
            lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
            if not lines:
                raise CellFailed(f"{setup.name} {mode}: loadgen failed ({proc.returncode}): "
                                 f"{stderr.strip()[-500:]}")
            if stderr.strip():
                print("   ", stderr.strip().splitlines()[-1], file=sys.stderr)
            parts.append(json.loads(lines[-1]))
        r = combine(parts)
        r.update(setup=setup.name, cpu_pct=cpu, parts=parts,
                 loadavg_1m_before=round(load_before, 2),
                 loadavg_1m_after=round(os.getloadavg()[0], 2))
        return r

    def record(self, r: dict[str, Any], run_no: int, what: str = "closed") -> dict[str, Any]:
        r["run"], r["what"] = run_no, what
        if self.out:
            self.out.write(json.dumps(r) + "\n")
            self.out.flush()
        return r

    def provision(self, setup: Setup) -> None:
        """Log --accept-users users in once each through the first node (no Stop)."""
        assert setup.name != "freeradius"
        users = self.tmp / f"{setup.name}-accept-users.jsonl"
        print(f"[{setup.name} provision {self.args.accept_users} users]", file=sys.stderr)
        cmd = run.loadgen_cmd("provision", setup.ports[0], 16, self.args, [
            "--sms-outbox", str(setup.outbox), "--count", str(self.args.accept_users),
            "--users-out", str(users), "--number-base", "9000000", "--warmup", "0",
            "--duration", "300"])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=400)
        if not users.exists() or len(loadgen.read_users(users)) < self.args.accept_users:
            raise CellFailed(f"{setup.name}: provisioning failed ({out.returncode}): "
                             f"{out.stderr.strip()[-300:]}")
        setup.accept_users = users


def peak(results: Results, setup: str, mode: str, levels: list[int]) -> tuple[float, int]:
    """The best median rate over the in-flight levels, and that level."""
    key = "logins_per_s" if mode == "login" else "rps"
    best = (0.0, 0)
    for lv in levels:
        m = run.median(results.get((setup, mode, lv), []), key)
        if m is not None and m > best[0]:
            best = (m, lv)
    return best


# -- report (pure) -------------------------------------------------------------------------------


def cpu_cell(rs: list[dict[str, Any]]) -> str:
    if not rs or "cpu_pct" not in rs[0]:
        return "–"
    parts = [statistics.median(r["cpu_pct"][k] for r in rs)
             for k in ("server", "postgres", "loadgen")]
    return " / ".join(f"{v:.0f}" for v in parts)


def lost(rs: list[dict[str, Any]]) -> str:
    """Timeouts; for logins also the failed ones (wrong reply, no SMS): "3 + 1 failed"."""
    if not rs:
        return "–"
    timeouts = sum(r["timeouts"] for r in rs)
    failed = sum(sum(r.get("failures", {}).values()) + r.get("sms_timeouts", 0) for r in rs)
    return f"{timeouts} + {failed} failed" if failed else str(timeouts)


def mode_table(results: Results, mode: str, setups: list[str], levels: list[int],
               errors: dict[str, str]) -> list[str]:
    rate = "logins/s" if mode == "login" else "req/s"
    key, p50, p99 = ("logins_per_s", "login_p50_ms", "login_p99_ms") if mode == "login" \
        else ("rps", "p50_ms", "p99_ms")
    lines = [f"| setup | in flight | {rate} | p50 ms | p99 ms | timeouts | x FreeRADIUS "
             "| CPU % server / PostgreSQL / loadgen |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in setups:
        if s in errors:
            lines.append(f"| {s} | – | {errors[s]} | | | | | |")
            continue
        for lv in levels:
            rs = results.get((s, mode, lv), [])
            a = run.median(rs, key)
            b = run.median(results.get(("freeradius", mode, lv), []), key)
            ratio = f"{a / b:.2f}x" if a and b and s != "freeradius" else "–"
            lines.append(f"| {s} | {lv} | {run.fmt(a, 0)} | {run.fmt(run.median(rs, p50))} | "
                         f"{run.fmt(run.median(rs, p99))} | "
                         f"{lost(rs)} | {ratio} | "
                         f"{cpu_cell(rs)} |")
    return lines


def summary_table(results: Results, half: Results, setups: list[str],
                  levels: dict[str, list[int]], errors: dict[str, str]) -> list[str]:
    """Per setup: peak (best in-flight level), x FreeRADIUS's peak, p99 at half of its
    own peak, and whether issue 12's targets hold (>= 1.5x, p99 < 10 ms)."""
    modes = [m for m in ("accept", "acct") if m in levels]
    head = "| setup |"
    sep = "|---|"
    for m in modes:
        head += (f" {m} peak req/s (in flight) | x FreeRADIUS | {m} p99 ms at half peak "
                 f"(rate) | CPU % at half |")
        sep += "---:|---:|---:|---|"
    if "login" in levels:
        head += " login peak logins/s |"
        sep += "---:|"
    head += " target |"
    sep += "---|"
    lines = [head, sep]
    for s in setups:
        if s in errors:
            lines.append(f"| {s} | {errors[s]} |")
            continue
        row = f"| {s} |"
        ok: list[bool] = []
        for m in modes:
            top, lv = peak(results, s, m, levels[m])
            fr, _ = peak(results, "freeradius", m, levels[m])
            hs = half.get((s, m, 0), [])
            p99 = run.median(hs, "p99_ms")
            ratio = top / fr if top and fr and s != "freeradius" else None
            rate = hs[0].get("rate") if hs else None
            row += (f" {run.fmt(top, 0)} ({lv}) | {f'{ratio:.2f}x' if ratio else '–'} | "
                    f"{run.fmt(p99)} ({run.fmt(rate, 0)}/s) | {cpu_cell(hs)} |")
            if s != "freeradius":
                ok += [ratio is not None and ratio >= TARGET_RATIO,
                       p99 is not None and p99 < TARGET_P99_MS]
        if "login" in levels:
            row += f" {run.fmt(peak(results, s, 'login', levels['login'])[0], 0)} |"
        verdict = "–" if s == "freeradius" or not ok else ("met" if all(ok) else "not met")
        lines.append(row + f" {verdict} |")
    return lines


def report(results: Results, half: Results, setups: list[str], levels: dict[str, list[int]],
           errors: dict[str, str], info: dict[str, str], args: argparse.Namespace) -> str:
    out = [f"### Issue 12: cluster, medians of {args.runs} runs x {args.duration:g} s "
           f"(after {args.warmup:g} s warm-up), {args.loadgens} load generators, "
           f"{args.ids_per_socket} requests per source port",
           "",
           "machine: " + ", ".join(f"{k}={v}" for k, v in info.items()
                                   if not k.startswith("uptime")),
           ""]
    for mode in (m for m in MODES if m in levels):
        closed = "closed loop" + (", FreeRADIUS: 3 steps (no SMS)" if mode == "login" else "")
        out += [f"#### {mode} ({closed})", "",
                *mode_table(results, mode, setups, levels[mode], errors), ""]
    out += ["#### Peaks, ratios and p99 at half of each setup's own peak (open loop)", "",
            *summary_table(results, half, setups, levels, errors), "",
            f"Target (issue 12): radiusd on PostgreSQL >= {TARGET_RATIO}x FreeRADIUS + "
            f"rlm_sql(PostgreSQL) on accept and acct, p99 < {TARGET_P99_MS:g} ms at half of "
            "peak. p99 of a cell is the highest of its load generators' p99s. CPU % is of "
            "one core (the machine has " + info.get("nproc", "?") + ").", ""]
    loads = [r["loadavg_1m_after"] for rs in (*results.values(), *half.values()) for r in rs]
    if loads:
        out.append(f"1-minute load average after each run: min {min(loads):.2f}, median "
                   f"{statistics.median(loads):.2f}, max {max(loads):.2f}.")
    out.append(f"start: {info.get('uptime_start', '?')}")
    out.append(f"end:   {info.get('uptime_end', '?')}")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setups", default=",".join(SETUPS),
                   help=f"comma-separated subset of {','.join(SETUPS)}")
    p.add_argument("--modes", default=",".join(MODES), help="subset of accept,login,acct")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3, help="runs per cell; tables show medians")
    p.add_argument("--inflight", default="1,16,64,256", help="acct in-flight levels")
    p.add_argument("--accept-inflight", default="1,16,64,256")
    p.add_argument("--login-inflight", default="1,16,64")
    p.add_argument("--accept-users", type=int, default=1000)
    p.add_argument("--loadgens", type=int, default=2,
                   help="load generator processes per cell (pg-nodes2: one per node)")
    p.add_argument("--ids-per-socket", type=int, default=2,
                   help="in-flight requests per UDP source port (SO_REUSEPORT spreads "
                   "source ports over workers)")
    p.add_argument("--half-slots", type=int, default=256,
                   help="open loop: at most this many requests outstanding")
    p.add_argument("--no-half-peak", action="store_true")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait (up to 3 min) for a quiet machine first")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--out", type=Path, help="append every run's JSON result here")
    args = p.parse_args(argv)
    for name, allowed in (("setups", SETUPS), ("modes", MODES)):
        chosen = getattr(args, name).split(",")
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            p.error(f"--{name}: unknown {', '.join(bad)}; choose from {','.join(allowed)}")
        setattr(args, name, [c for c in allowed if c in chosen])
    try:
        args.levels = {
            "accept": [int(x) for x in args.accept_inflight.split(",")],
            "login": [int(x) for x in args.login_inflight.split(",")],
            "acct": [int(x) for x in args.inflight.split(",")]}
    except ValueError:
        p.error("in-flight levels are comma-separated integers, e.g. --inflight 1,16,64")
    if args.runs < 1 or args.loadgens < 1 or not 1 <= args.ids_per_socket <= 256:
        p.error("--runs and --loadgens must be at least 1, --ids-per-socket 1..256")
    args.levels = {m: v for m, v in args.levels.items() if m in args.modes}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run.ARGS = args
    info = run.machine()
    wanted: list[str] = args.setups
    errors: dict[str, str] = {}
    if "freeradius" in wanted and not os.access(run.FREERADIUS, os.X_OK):
        errors["freeradius"] = f"not available: no {run.FREERADIUS} (apt-get install freeradius)"
    elif "freeradius" in wanted:
        info["freeradius"] = run.freeradius_version()
    if not args.no_wait:
        run.wait_quiet()
    info["uptime_start"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                          check=False).stdout.strip()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
    results: Results = {}
    half: Results = {}
    status = 0
    need_pg = any(s != "sqlite" for s in wanted)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="radiusd-cluster-")))
        pg: PostgresServer | None = None
        if need_pg:
            try:
                pg = stack.enter_context(running_postgres())
                info["postgresql"] = pg.bindir.parent.name
            except (PostgresUnavailable, RuntimeError) as e:
                for s in wanted:
                    if s != "sqlite":
                        errors[s] = f"not available: {e}"
        out = stack.enter_context(args.out.open("a")) if args.out else None
        bench = Bench(args, pg, tmp, out, fr_pool=run.fr_users(run.FR_SQL_USERS))
        setups: dict[str, Setup] = {}
        stack.callback(stop_all, setups)
        for name in wanted:
            if name in errors:
                continue
            setup = setups[name] = Setup(name, tmp=tmp / name)
            setup.tmp.mkdir()
            if name == "freeradius":
                assert pg is not None
                try:
                    start_freeradius_pg(setup, pg, bench.fr_pool)
                except (SystemExit, RuntimeError) as e:  # run.py exits with the reason
                    why = " / ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
                    setup.error = f"not available: {why.replace(str(setup.tmp) + '/', '')}"
            else:
                try:
                    url = pg.create_database(RADIUSD_DB[name]) if pg and name != "sqlite" \
                        else None
                except RuntimeError as e:
                    setup.error = f"not available: {e}"
                else:
                    start_radiusd_setup(setup, url)
            if setup.error:
                errors[name] = setup.error
                print(f"{name}: {setup.error}", file=sys.stderr)
        live = [s for s in wanted if s not in errors]
        measure(bench, setups, live, results, half, errors)
        if "freeradius" in setups and pg is not None and "freeradius" not in errors:
            info["radacct"] = "{} rows, {} with a stop time".format(*pg.psql(
                FR_DB, "-At", "-F", " ", "-c",
                "SELECT COUNT(*), COUNT(acctstoptime) FROM radacct").split())
        status = stop_all(setups)
    info["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                        check=False).stdout.strip()
    print()
    print(report(results, half, wanted, args.levels, errors, info, args))
    if "radacct" in info:
        print(f"FreeRADIUS radacct after the run: {info['radacct']}")
    return status


def measure(bench: Bench, setups: dict[str, Setup], live: list[str], results: Results,
            half: Results, errors: dict[str, str]) -> None:
    """Every mode, level and run, alternating setups run by run; then the open-loop runs.
    A setup that fails mid-way is reported with its error and left out from then on."""
    args = bench.args

    def cell(name: str, mode: str, level: int, run_no: int, into: Results,
             rate: float = 0.0) -> None:
        try:
            r = bench.cell(setups[name], mode, level, rate)
        except CellFailed as e:
            errors[name] = f"failed: {e}"
            print(errors[name], file=sys.stderr)
            return
        key = (name, mode, 0 if rate else level)
        into.setdefault(key, []).append(
            bench.record(r, run_no, "half peak" if rate else "closed"))

    for mode in args.modes:
        if mode == "accept":
            for name in [s for s in live if s != "freeradius" and s not in errors]:
                try:
                    bench.provision(setups[name])
                except CellFailed as e:
                    errors[name] = f"failed: {e}"
        for level in args.levels[mode]:
            for run_no in range(1, args.runs + 1):
                for name in [s for s in live if s not in errors]:
                    print(f"[{name} {mode} inflight={level} run {run_no}]", file=sys.stderr)
                    cell(name, mode, level, run_no, results)
        if mode in ("accept", "acct") and not args.no_half_peak:
            for run_no in range(1, args.runs + 1):
                for name in [s for s in live if s not in errors]:
                    top, _ = peak(results, name, mode, args.levels[mode])
                    if top > 0:
                        print(f"[{name} {mode} --rate {top / 2:.0f} (half of its peak) run "
                              f"{run_no}]", file=sys.stderr)
                        cell(name, mode, args.half_slots, run_no, half, top / 2)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind: stop the servers, PostgreSQL and the temp dirs


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(main())
