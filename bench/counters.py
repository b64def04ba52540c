#!/usr/bin/env python3
"""The `/metrics` password counters on PostgreSQL (docs/store.md, "One statement over
thousands of passwords"): one statement that changes many passwords, and the
per-request statements that change one, under three designs of the counter
triggers, in one run on one server:
- `row`: schema version 13, a row trigger per password adding to the counter rows
  (the same rows again and again in one statement: N squared);
- `statement`: radiusd's schema now (migration 14), statement triggers with
  transition tables, one UPSERT per counter row per statement, and the per-request
  seen marks as functions that update only when there is a password to mark;
- `pending`: version 13 with its row triggers appending to an unlogged
  `counter_pending` table, moved into `counters` by a statement trigger on the same
  events (the other cure considered, not taken).

    .venv/bin/python bench/counters.py
    .venv/bin/python bench/counters.py --n 1000,8000,16000 --runs 5 --out counters.jsonl

For each schema and each N: one INSERT of N live passwords of one NAS (the bulk path,
as a voucher import would be), then the NAS's Accounting-On (`passwords.expire_at_nas`,
the store's own statement: every live password of that NAS expired in one
statement), then one DELETE of those expired rows (as `radiusd purge` would, in one
statement). Then the per-request path, each in group-commit batches of 20 statements
per transaction as the writer runs them (each variant in the form it has on
PostgreSQL: `statement`'s seen mark is its function): a Start's `seen_by_login` that
finds its password, one that finds none (the common case: the mark is set once),
a "Get password" press's `supersede` that finds no unused code (the usual case), and
a Stop's `expire_by_class`. Times are wall clock on a throwaway PostgreSQL (radiusd.testing.
postgres: fsync on) over a TCP loopback connection; each figure is the median of
--runs. After each bulk step and each run the counters are checked against a count
of the rows themselves: a mismatch exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import asyncpg  # noqa: E402

from radiusd.store import passwords  # noqa: E402
from radiusd.store.pg_migrations import migrate, scripts, take_shard  # noqa: E402
from radiusd.store.postgres import translate  # noqa: E402
from radiusd.testing.postgres import running_postgres  # noqa: E402

BATCH = 20  # statements per transaction on the per-request path

_UPSERT = ("ON CONFLICT (name, label, shard) DO UPDATE "
           "SET value = counters.value + excluded.value;")
# A Start's seen mark as radiusd sent it to PostgreSQL up to schema 13 (36fd571): an
# UPDATE, the login's rows looked up apart; from 14 on, `passwords_seen_by_login`.
_SEEN_BY_LOGIN_13 = (
    "UPDATE passwords SET acct_seen_at = $1 WHERE id IN (SELECT id FROM (SELECT * FROM "
    "passwords WHERE login = $2 OFFSET 0) AS one WHERE state = 'active' AND device = $3 "
    "AND acct_seen_at IS NULL)")


def _replace(name: str, body: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{body}\n    RETURN NULL;\nEND $$;\n")


def _append(*rows: str) -> str:
    return f"INSERT INTO counter_pending (name, label, value) VALUES ({'), ('.join(rows)});"


_PENDING = """
CREATE UNLOGGED TABLE counter_pending (name TEXT NOT NULL, label TEXT NOT NULL,
                                       value BIGINT NOT NULL);
CREATE FUNCTION counters_fold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH pending AS (DELETE FROM counter_pending RETURNING name, label, value)
    INSERT INTO counters (name, label, shard, value)
    SELECT name, label, counters_shard(), SUM(value) FROM pending GROUP BY name, label
    """ + _UPSERT + """
    RETURN NULL;
END $$;
CREATE TRIGGER counters_fold AFTER INSERT OR DELETE OR UPDATE OF claimed_at, state
ON passwords FOR EACH STATEMENT EXECUTE FUNCTION counters_fold();
""" + _replace("counters_password_issued", """
    INSERT INTO counter_pending (name, label, value)
    SELECT 'passwords_issued', '', 1
    UNION ALL SELECT 'passwords_used', '', 1 WHERE new.claimed_at IS NOT NULL
    UNION ALL SELECT 'passwords_expired', COALESCE(new.expire_reason, 'unknown'), 1
        WHERE new.state = 'expired'
    UNION ALL SELECT 'passwords', 'expired', 1 WHERE new.state = 'expired';
""") + _replace("counters_password_used", _append("'passwords_used', '', 1")) + _replace(
    "counters_password_expired",
    _append("'passwords_expired', COALESCE(new.expire_reason, 'unknown'), 1",
            "'passwords', 'expired', 1")) + _replace(
    "counters_password_revived", _append("'passwords', 'expired', -1"))

# Each variant: the schema version it starts from, then its own triggers over it.
ROWS = 13  # the last version with a row trigger per password
VARIANTS = {"row": (ROWS, ""), "statement": (len(scripts()), ""), "pending": (ROWS, _PENDING)}

_FILL = """
INSERT INTO passwords (login, kind, state, secret, language, issued_at, unclaimed_until,
    claimed_at, device, nas, nas_address, class_token)
SELECT '+7700' || i, 'phone', 'active', '\\x00', 'en', 1, 2, 1.5,
    'dev' || i, $2, '10.0.0.1', $3 || i
FROM generate_series($1::bigint, $1::bigint + $4 - 1) AS i
"""
_PURGE = "DELETE FROM passwords WHERE state = 'expired' AND nas = $1"
# What the counters must say, counted from the rows (the counters also count what a
# purge deleted, so the check runs before any delete and after each).
_TRUTH = """
SELECT 'passwords_expired' AS name, COALESCE(expire_reason, 'unknown') AS label, COUNT(*)
FROM passwords WHERE state = 'expired' GROUP BY 2
UNION ALL SELECT 'passwords', 'expired', COUNT(*) FROM passwords WHERE state = 'expired'
"""


async def schema(conn: asyncpg.Connection, variant: str) -> None:
    """radiusd's schema up to the variant's version, then the variant's triggers."""
    version, extra = VARIANTS[variant]
    await migrate(conn, upto=version)
    if extra:
        async with conn.transaction():
            await conn.execute(extra)
    await take_shard(conn)


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    t = time.perf_counter()
    await call()
    return time.perf_counter() - t


async def bulk(conn: asyncpg.Connection, n: int, base: int) -> dict[str, float]:
    """One statement each over N passwords of one NAS: insert, Accounting-On, delete."""
    nas = f"nas{base}"
    expire_sql, expire_params = passwords.expire_at_nas(nas, "10.0.0.1", 5.0, "nas-reboot")
    out = {"insert_s": await timed(lambda: conn.execute(_FILL, base, nas, f"c{base}-", n)),
           "accounting_on_s": await timed(
               lambda: conn.execute(translate(expire_sql), *expire_params))}
    await check(conn)
    out["delete_s"] = await timed(lambda: conn.execute(_PURGE, nas))
    return out


def form(variant: str, sql: str) -> str:
    """The statement as radiusd sends it to PostgreSQL at the variant's schema."""
    if VARIANTS[variant][0] <= ROWS and sql == passwords.seen_by_login("", "", 0.0)[0]:
        return _SEEN_BY_LOGIN_13
    return translate(sql)


async def per_request(conn: asyncpg.Connection, variant: str, base: int, count: int
                      ) -> dict[str, float]:
    """Median ms of a transaction of BATCH single-password statements."""
    await conn.execute(_FILL, base, "nas-req", f"r{base}-", count)
    await conn.execute("ANALYZE passwords")

    def login(i: int) -> str:
        return f"+7700{base + i}"

    kinds = {
        "seen_found": lambda i: passwords.seen_by_login(login(i), f"dev{base + i}", 3.0),
        "seen_none": lambda i: passwords.seen_by_login(login(i), f"dev{base + i}", 3.0),
        # A "Get password" press: the number's unused codes superseded (usually none).
        "supersede_none": lambda i: passwords.supersede(login(i), 3.5),
        "stop_expire": lambda i: passwords.expire_by_class(f"r{base}-{base + i}", 4.0, "stop"),
    }
    out = {}
    for name, op in kinds.items():
        times = []
        for start in range(0, count, BATCH):
            ops = [op(i) for i in range(start, start + BATCH)]

            async def run(ops: list[Any] = ops) -> None:
                async with conn.transaction():
                    await conn.executemany(form(variant, ops[0][0]), [p for _, p in ops])
            times.append(await timed(run))
        out[f"{name}_batch_ms"] = statistics.median(times) * 1000
        if name == "seen_found":  # each mark found its password
            marked = await conn.fetchval(
                "SELECT COUNT(*) FROM passwords WHERE acct_seen_at = 3.0")
            if marked != count:
                raise SystemExit(f"seen_found marked {marked} of {count} passwords")
    await check(conn)
    return out


async def check(conn: asyncpg.Connection) -> None:
    """The counters equal the rows (no delete has run yet in this database)."""
    truth = {(r[0], r[1]): int(r[2]) for r in await conn.fetch(_TRUTH)}
    kept = {(r[0], r[1]): int(r[2]) for r in await conn.fetch(
        "SELECT name, label, SUM(value) FROM counters WHERE name IN "
        "('passwords', 'passwords_expired') GROUP BY 1, 2")}
    purged = kept.get(("passwords", "expired"), 0) - truth.get(("passwords", "expired"), 0)
    if purged != 0 or any(kept.get(k, 0) < v for k, v in truth.items()):
        raise SystemExit(f"counters disagree with the rows: kept {kept}, rows {truth}")


async def one_run(url: str, variant: str, ns: list[int], per: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await schema(conn, variant)
        out: dict[str, Any] = {}
        for k, n in enumerate(ns):
            for key, v in (await bulk(conn, n, 1_000_000 * (k + 1))).items():
                out[f"{key}@{n}"] = v
        out.update(await per_request(conn, variant, 50_000_000, per))
        return out
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="1000,2000,4000,8000",
                   help="passwords one statement changes (comma-separated)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--per-request", type=int, default=2000,
                   help="statements of each per-request kind per run")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="subset of " + ",".join(VARIANTS))
    p.add_argument("--out", type=Path, help="append each run's JSON here")
    args = p.parse_args(argv)
    ns = [int(x) for x in args.n.split(",")]
    wanted = args.variants.split(",")
    if any(v not in VARIANTS for v in wanted) or args.runs < 1:
        p.error(f"--variants takes some of {','.join(VARIANTS)}; --runs at least 1")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in wanted}
    with running_postgres() as pg:
        for run in range(args.runs):
            for variant in wanted:  # interleaved, run by run
                url = pg.create_database(f"counters_{variant}_r{run}")
                r = asyncio.run(one_run(url, variant, ns, args.per_request))
                results[variant].append(r)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps({"variant": variant, "run": run, **r}) + "\n")
                print(f"[{variant} run {run + 1}] done", file=sys.stderr)
    keys = list(results[wanted[0]][0])
    print(f"| median of {args.runs} runs | " + " | ".join(wanted) + " |")
    print("|---|" + "---:|" * len(wanted))
    for key in keys:
        unit = "ms" if key.endswith("_ms") else "s"
        cells = [f"{statistics.median(r[key] for r in results[v]):.3f} {unit}" for v in wanted]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
