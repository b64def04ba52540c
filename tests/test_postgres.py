"""PostgreSQL as the store (issue 12 items 2 and 5), against a real server
(`tests/pg.py`): selected by `[database] url`, migrated once when several nodes start
together, `check-config` saying in one line what failed, and a node that loses its
database answering nothing until it is back, losing no acknowledged record."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from radiusd import cli
from radiusd.config import ConfigError, load
from radiusd.store import limits
from radiusd.store.pg_migrations import scripts
from radiusd.store.postgres import PgStore, translate
from radiusd.testing.nas import NoReply, SimulatedNAS
from tests.pg import PASSWORD, PgServer
from tests.test_serve_process import SECRET, ServeProcess, free_port


def test_path_and_url_both_set_is_a_config_error_naming_both_keys(tmp_path: Path) -> None:
    conf = tmp_path / "radiusd.toml"
    conf.write_text('[database]\npath = "x.db"\nurl = "postgresql://u:p@h:5432/radiusd"\n')
    with pytest.raises(ConfigError) as e:
        load(conf)
    assert len(str(e.value).splitlines()) == 1
    assert "database" in str(e.value) and "path" in str(e.value) and "url" in str(e.value)


def test_url_alone_selects_postgresql_with_a_pool_of_ten(tmp_path: Path) -> None:
    conf = tmp_path / "radiusd.toml"
    conf.write_text('[database]\nurl = "postgresql://u:p@h:5432/radiusd"\n')
    database = load(conf).database
    assert (database.url, database.pool_size) == ("postgresql://u:p@h:5432/radiusd", 10)


async def test_migrations_are_applied_once_when_four_nodes_start_together(
        pg_url: str) -> None:
    stores = [PgStore(pg_url, pool_size=2) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        rows = await stores[0].fetchall("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(scripts()) + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


def _check_config(tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
                  ) -> tuple[int, str, str]:
    conf = tmp_path / "radiusd.toml"
    conf.write_text(f'[database]\nurl = "{url}"\n')
    status = cli.main(["check-config", "-c", str(conf)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(("case", "expected"), [
    ("password", 'authentication failed for user "radiusd"'),
    ("port", "cannot reach 127.0.0.1:{port}: connection refused"),
    ("database", 'database "nosuchdb" does not exist'),
])
def test_check_config_says_in_one_line_what_failed(
        pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        case: str, expected: str) -> None:
    closed = free_port("127.0.0.1")
    url = {"password": pg_server.url("postgres", password="wrong"),
           "port": pg_server.url("postgres").replace(f":{pg_server.port}/", f":{closed}/"),
           "database": pg_server.url("nosuchdb")}[case]
    status, _out, err = _check_config(tmp_path, url, capsys)
    assert status == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "database.url: cannot connect: " + expected.format(port=closed) in err
    assert "wrong" not in err  # never the password


def test_check_config_connects_and_shows_the_url_without_its_password(
        pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _check_config(tmp_path, pg_url, capsys)
    assert status == 0, err
    assert "database postgresql://radiusd:***@127.0.0.1" in out
    assert PASSWORD not in out


class PgServeProcess(ServeProcess):
    """`radiusd serve` with `[database] url` and `/healthz` on a loopback port."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.url = url
        self.http = ("127.0.0.1", 0)
        super().__init__(tmp)

    def write_config(self) -> None:
        super().write_config()
        self.http = ("127.0.0.1", free_port("127.0.0.1"))
        text = self.config.read_text()
        path_line = next(line for line in text.splitlines() if line.startswith("path = ")
                         and "radiusd.db" in line)
        text = text.replace(path_line, f'url = "{self.url}"')
        self.config.write_text(text + f'\n[http]\nlisten = ["127.0.0.1:{self.http[1]}"]\n')

    def healthz(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http[1]}/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


class Load:
    """A NAS sending Accounting-Start after Accounting-Start from a thread, keeping
    the session ids the server acknowledged."""

    def __init__(self, proc: PgServeProcess) -> None:
        self.nas = SimulatedNAS(auth_address=proc.auth4, acct_address=proc.acct4,
                                secret=SECRET.encode(), timeout=0.3, retries=0)
        self.acknowledged: list[str] = []
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        while not self._stop.is_set():
            sid = self.nas.new_session_id()
            try:
                await self.nas.send(self.nas.accounting_request(
                    "Start", user="+77011234567", session_id=sid))
            except NoReply:
                self.unanswered += 1
            else:
                self.acknowledged.append(sid)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _until(condition: object, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)  # polling a real process, not waiting for time to pass
    raise AssertionError(f"not within {limit}s")


def test_a_node_that_loses_postgresql_answers_nothing_then_recovers_losing_nothing(
        pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    proc = PgServeProcess(tmp_path, pg_url).start()
    try:
        with Load(proc) as load:
            _until(lambda: len(load.acknowledged) >= 20)
            pg_server.stop()
            _until(lambda: proc.healthz()[0] == 503)
            _status, body = proc.healthz()
            assert "store" in body["checks"] and body["checks"]["store"] != "ok"  # type: ignore[operator,index]
            # Down: nothing is answered, Status-Server included (the NAS fails over).
            _until(lambda: not proc.status_ok(proc.auth4, timeout=0.3))
            during = len(load.acknowledged)
            missed = load.unanswered
            _until(lambda: load.unanswered >= missed + 3)
            assert len(load.acknowledged) == during
            pg_server.start()
            # Back by itself: answered again, healthy again.
            _until(lambda: len(load.acknowledged) >= during + 20)
        _until(lambda: proc.healthz()[0] == 200)
        assert proc.log.count("store failing") == 1, proc.log
        assert proc.log.count("store recovered") == 1, proc.log
    finally:
        proc.stop()
    stored = asyncio.run(_session_ids(pg_url))
    assert set(load.acknowledged) <= stored, set(load.acknowledged) - stored


async def _session_ids(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch("SELECT acct_session_id FROM sessions")}
    finally:
        await conn.close()


def test_purge_on_postgresql_removes_the_same_rows_as_on_sqlite(
        pg_url: str, tmp_path: Path) -> None:
    """Retention (issue 18 item 5) on both stores: the same history, the same cutoff,
    the same rows left, in the same small steps."""
    from radiusd import retention
    from radiusd.store.pg_sync import PgSyncConnection
    from radiusd.store.sqlite import connect_sync
    from tests.test_purge_steps import CUTOFF, TABLES, fill_conn

    def left(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
        key = {"journal_span": "journal_id"}
        return {t: sorted(tuple(r) for r in conn.execute(
            f"SELECT {key.get(t, 'id')} FROM {t} ORDER BY 1").fetchall()) for t in TABLES}

    lite = connect_sync(str(tmp_path / "radiusd.db"))
    fill_conn(lite)
    pg = PgSyncConnection(pg_url)
    try:
        fill_conn(pg)
        assert left(pg) == left(lite)  # the same history on both
        steps: list[tuple[str, int]] = []
        on_pg = retention.purge(pg, CUTOFF, batch=7, pause=0, sleep=lambda _: None,
                                on_step=lambda what, n: steps.append((what, n)))
        on_sqlite = retention.purge(lite, CUTOFF, batch=7, pause=0, sleep=lambda _: None)
        assert on_pg == on_sqlite and sum(on_pg.values()) > 0
        assert left(pg) == left(lite)
        assert steps and max(n for _, n in steps) <= 7
    finally:
        pg.close()
        lite.close()


def test_admin_purge_on_postgresql_prints_what_it_removed(
        pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from radiusd.store.pg_sync import PgSyncConnection
    from tests.test_purge_steps import fill_conn

    pg = PgSyncConnection(pg_url)
    try:
        fill_conn(pg)  # January 2026: more than 30 days ago
        closed = pg.execute("SELECT COUNT(*) FROM sessions WHERE stopped_at IS NOT NULL"
                            ).fetchone()
    finally:
        pg.close()
    conf = tmp_path / "radiusd.toml"
    conf.write_text(f'[database]\nurl = "{pg_url}"\n')
    status = cli.main(["purge", "--older-than", "30", "-c", str(conf)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert closed is not None and f"sessions: {closed[0]}" in out.splitlines()
    pg = PgSyncConnection(pg_url)
    try:
        assert pg.execute("SELECT COUNT(*) FROM sessions WHERE stopped_at IS NOT NULL"
                          ).fetchone() == (0,)
    finally:
        pg.close()


async def test_two_nodes_writers_never_wait_on_each_others_counters(pg_url: str) -> None:
    """Migration 11: every writer adds to `counters` in a shard of its own. With one
    row per counter, node A's open transaction (a password issued) and node B's (one
    expired) each held a counter row the other's next write needed, and PostgreSQL
    broke the deadlock only after `deadlock_timeout` (1 s), failing a whole batch.
    The SMS caps' bucket rows (`limit_counts`) are split the same way."""
    nodes = [PgStore(pg_url, pool_size=2) for _ in range(2)]
    await asyncio.gather(*(n.open() for n in nodes))
    try:
        assert {n.shard for n in nodes} == {0, 1}
        a, b = (n._writer for n in nodes)
        assert a is not None and b is not None
        insert = ("INSERT INTO passwords (login, state, secret, language, issued_at, "
                  "unclaimed_until) VALUES ($1, 'issued', '\\x00', 'en', 0, 0) RETURNING id")
        expire = ("UPDATE passwords SET state = 'expired', expired_at = 1, "
                  "expire_reason = 'test' WHERE id = $1")
        p0 = await a.fetchval(insert, "+77010000000")
        p2 = await a.fetchval(insert, "+77010000002")
        async with a.transaction(), b.transaction():
            await a.fetchval(insert, "+77010000001")  # A: passwords_issued
            await b.execute(expire, p0)  # B: passwords_expired, passwords/expired
            # Each would now wait for the other's counter row: a deadlock.
            await asyncio.wait_for(a.execute(expire, p2), 0.5)
            await asyncio.wait_for(b.fetchval(insert, "+77010000003"), 0.5)
            # ...and the SMS caps' counters: both nodes count one press in one bucket.
            for conn in (a, b):
                await asyncio.wait_for(conn.execute(translate(limits._ADD),
                                                    "global_daily", "", 0, 1.0), 0.5)
        totals: dict[tuple[str, str], int] = {}
        for name, label, value in await nodes[0].fetchall(
                "SELECT name, label, value FROM counters"):
            totals[(name, label)] = totals.get((name, label), 0) + value
        assert totals[("passwords_issued", "")] == 4
        assert totals[("passwords_expired", "test")] == 2
        assert totals[("passwords", "expired")] == 2
        got = await limits.counts(nodes[1], [limits.Ask("global_daily", "", 0)])
        assert sum(c.hits for c in got) == 2
    finally:
        await asyncio.gather(*(n.close() for n in nodes))
