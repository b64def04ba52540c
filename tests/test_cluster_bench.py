"""bench/cluster.py (issue 12 item 8): the config each setup runs with, how a cell's
load generators add up, the report's ratios and verdicts, and the throwaway PostgreSQL
of radiusd.testing.postgres really starting and holding a new database."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from radiusd.config import Config, OtpConfig
from radiusd.testing.postgres import PostgresServer, PostgresUnavailable, running_postgres
from tests import benches
from tests.conftest import IN_CI

URL = "postgresql://postgres:pw@127.0.0.1:5433/radiusd_pg1"


def cluster() -> ModuleType:
    return benches.load("cluster")


def ports(n: int) -> list[dict[str, int]]:
    return [{"auth": 20000 + 2 * i, "acct": 20001 + 2 * i} for i in range(n)]


def test_sqlite_setup_is_a_valid_config_with_every_sms_cap_out_of_the_way(
        tmp_path: Path) -> None:
    (text,) = cluster().radiusd_configs("sqlite", tmp_path, ports(1), None)
    config = Config.model_validate(tomllib.loads(text))
    assert config.database.path == str(tmp_path / "radiusd.db")
    assert config.server.auth_listen == ["127.0.0.1:20000"]
    # The load generator sends thousands of SMS to one number block from one NAS: any
    # cap on SMS sent must be out of its way (wrong-code budgets are not: it never errs).
    caps = [name for name in OtpConfig.model_fields
            if name.endswith(("_minute", "_hourly", "_daily")) and not name.startswith(
                ("wrong_", "foreign_"))]
    assert caps and all(getattr(config.otp, name) >= 10**9 for name in caps), caps


def test_postgresql_setups_use_the_url_and_their_processes(tmp_path: Path) -> None:
    c = cluster()
    (one,) = c.radiusd_configs("pg1", tmp_path, ports(1), URL)
    (workers,) = c.radiusd_configs("pg-workers2", tmp_path, ports(1), URL)
    a, b = c.radiusd_configs("pg-nodes2", tmp_path, ports(2), URL)
    one_t, workers_t, a_t, b_t = (tomllib.loads(t) for t in (one, workers, a, b))
    for t in (one_t, workers_t, a_t, b_t):
        assert t["database"] == {"url": URL}
    assert "workers" not in one_t["server"] and "workers" not in a_t["server"]
    assert workers_t["server"]["workers"] == 2
    # Two nodes: own ports, one sealing key and one SMS outbox (the shared database's
    # SMS may be sent by either node; the load generator reads one file).
    assert a_t["server"]["auth_listen"] != b_t["server"]["auth_listen"]
    assert a_t["otp"]["key_file"] == b_t["otp"]["key_file"]
    assert a_t["sms"]["file"]["path"] == b_t["sms"]["file"]["path"]
    with pytest.raises(ValueError, match="url"):
        c.radiusd_configs("pg1", tmp_path, ports(1), None)


def test_freeradius_uses_rlm_sql_postgresql_with_the_stock_queries(tmp_path: Path) -> None:
    c = cluster()
    pg = PostgresServer(tmp_path, bindir=tmp_path, port=5433, password="s3cret")
    conf = c.run.freeradius_sql_conf(tmp_path, tmp_path / "raddb", ports(1)[0],
                                     tmp_path / "radius.db",
                                     c.fr_postgresql_driver(pg, "freeradius"))
    sql = conf[conf.index("\tsql {"):conf.index("client_table")]
    for line in ('dialect = "postgresql"', 'driver = "rlm_sql_postgresql"',
                 'server = "127.0.0.1"', "port = 5433", 'password = "s3cret"',
                 'radius_db = "freeradius"', 'acct_table1 = "radacct"'):
        assert line in sql
    assert "sqlite" not in sql
    assert "main/${dialect}/queries.conf" in conf
    assert "acct_unique" in conf and "accounting {\n\t\tsql\n\t}" in conf


def part(rps: float, p50: float, p99: float, completed: int, **extra: Any) -> dict[str, Any]:
    return {"mode": "accept", "inflight": 8, "rps": rps, "p50_ms": p50, "p99_ms": p99,
            "max_ms": p99 * 2, "completed": completed, "timeouts": 1,
            "replies": {"Access-Accept": completed}, **extra}


def test_a_cell_adds_its_load_generators_up() -> None:
    r = cluster().combine([part(1000.0, 1.0, 4.0, 3000), part(500.0, 4.0, 9.0, 1000)])
    assert r["rps"] == 1500.0 and r["inflight"] == 16 and r["timeouts"] == 2
    assert r["p50_ms"] == pytest.approx(1.75)  # weighted by answers
    assert r["p99_ms"] == 9.0 and r["max_ms"] == 18.0  # the highest: an upper bound
    assert r["replies"] == {"Access-Accept": 4000}
    assert cluster().split(16, 2) == [8, 8] and cluster().split(5, 2) == [3, 2]


def test_failed_logins_show_beside_the_timeouts() -> None:
    c = cluster()
    login = {"mode": "login", "inflight": 8, "logins_per_s": 300.0, "login_p50_ms": 5.0,
             "login_p99_ms": 9.0, "max_ms": 20.0, "completed": 900, "timeouts": 1}
    r = c.combine([{**login, "failures": {"login": 2}, "sms_timeouts": 1},
                   {**login, "failures": {}, "sms_timeouts": 0}])
    assert r["logins_per_s"] == 600.0 and r["login_p99_ms"] == 9.0
    assert c.lost([r]) == "2 + 3 failed"
    assert c.lost([{**r, "failures": {}, "sms_timeouts": 0}]) == "2"


def cell(rps: float, p99: float, rate: float | None = None) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": 1.0, "p99_ms": p99, "timeouts": 0, "rate": rate,
            "cpu_pct": {"server": 90.0, "postgres": 40.0, "loadgen": 60.0},
            "loadavg_1m_after": 2.0}


def test_the_report_gives_ratios_verdicts_and_what_was_not_available() -> None:
    c = cluster()
    results = {
        ("pg1", "accept", 16): [cell(3000, 5)], ("pg1", "accept", 64): [cell(4000, 20)],
        ("freeradius", "accept", 16): [cell(2000, 5)],
        ("freeradius", "accept", 64): [cell(2500, 30)],
        ("pg-nodes2", "accept", 16): [cell(3000, 5)],
        ("pg-nodes2", "accept", 64): [cell(3500, 9)],
    }
    half = {("pg1", "accept", 0): [cell(2000, 4.5, 2000.0)],
            ("pg-nodes2", "accept", 0): [cell(1750, 12.0, 1750.0)],
            ("freeradius", "accept", 0): [cell(1250, 3.0, 1250.0)]}
    errors = {"pg-workers2": "not available: radiusd: database.url: unknown key"}
    args = argparse.Namespace(runs=1, duration=3.0, warmup=1.0, loadgens=2, ids_per_socket=2)
    setups = ["pg1", "pg-workers2", "pg-nodes2", "freeradius"]
    text = c.report(results, half, setups, {"accept": [16, 64]}, errors,
                    {"nproc": "2"}, args)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ") and "peak" not in line}
    assert "| pg1 | 64 | 4,000 | 1.00 | 20.00 | 0 | 1.60x | 90 / 40 / 60 |" in text
    summary = [ln for ln in text.splitlines() if ln.startswith("| pg1 | 4,000 (64)")]
    assert summary == ["| pg1 | 4,000 (64) | 1.60x | 4.50 (2,000/s) | 90 / 40 / 60 "
                       "| met |"]
    nodes = [ln for ln in text.splitlines() if ln.startswith("| pg-nodes2 | 3,500 (64)")]
    assert nodes and nodes[0].endswith("| 1.40x | 12.00 (1,750/s) | 90 / 40 / 60 "
                                       "| not met |")
    assert "not available: radiusd: database.url: unknown key" in rows["pg-workers2"]


def test_an_unknown_setup_is_refused_naming_the_choices() -> None:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "bench"
                                              / "cluster.py"), "--setups", "pg1,mysql"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "unknown mysql" in out.stderr and "sqlite,pg1,pg-workers2" in out.stderr


def test_throwaway_postgresql_starts_holds_a_new_database_and_stops() -> None:
    try:
        ctx = running_postgres()
        pg = ctx.__enter__()
    except PostgresUnavailable as e:
        if IN_CI:
            pytest.fail(f"CI=true and a required peer is missing: {e}")
        pytest.skip(str(e))
    try:
        url = pg.create_database("cluster_test")
        assert url == f"postgresql://postgres:{pg.password}@127.0.0.1:{pg.port}/cluster_test"
        shown = pg.psql("cluster_test", "-At", "-c", "SHOW fsync", "-c",
                        "SHOW synchronous_commit", "-c", "SHOW max_connections", "-c",
                        "SHOW listen_addresses").split()
        assert shown == ["on", "on", "200", "127.0.0.1"]
        with pytest.raises(RuntimeError, match="cluster_test"):
            pg.create_database("cluster_test")  # already there: a clear error
        with pytest.raises(ValueError, match="lower-case"):
            pg.create_database("Robert'); DROP")
    finally:
        ctx.__exit__(None, None, None)
    assert not pg.root.exists()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", pg.port))
