"""SQLite store: WAL, versioned migrations, one writer with group commit.

The writer is a plain sqlite3 connection on one dedicated thread, and a whole batch
runs there in one hop (aiosqlite, which the readers once used, hops per statement).

Group commit: writers hand in their statements and wait; one task takes everything
queued, runs it in one transaction and wakes them all when it commits. While a
commit is in the SQLite thread, new writes queue up for the next one, so under load
a batch grows by itself and the fsync is paid once per batch, not per packet; with
one request in flight the latency is one transaction. FreeRADIUS's
`buffered-sql` gets durability with a detail file; this gets it with the database.

Health (RFC 5997 §4: Status-Server must say whether we can serve): when a commit
fails because of the database itself (disk full, locked, read-only, I/O error,
corrupt; or the file was deleted or replaced under us) the store reports
`Health.failed("store", <SQLite's own error>)`, which logs it once, fails the whole
batch at once (no per-write retries against a database that cannot commit), and
from then on writes a trivial probe transaction every `PROBE_SECONDS` when nothing
else is written; the first commit that succeeds, a request's or the probe's, reports
`recovered`. An error in one write only (a constraint) fails that write alone.

Reads (issue 18 item 3: a RADIUS answer never waits behind a long read): `READERS`
read-only connections under WAL, each on its own thread, so reads run side by side
with each other and with the writer. Each statement is run and fetched whole in one
hop, in autocommit: its snapshot ends with it, and no reader holds the WAL across an
await. `fetchone`/`fetchall` take any free connection; `slow=True` marks a read that
no answer waits for (an outbox round, /metrics, a health check, the reaper, anything
bulk): slow reads share at most `READERS - 1` connections, so one is always left for
the reads an answer needs (a Start's lost-Stop check, a voucher's name), which then
wait behind other quick reads at most. A read whose caller gave up (a timeout) keeps
its connection until SQLite has finished with it.

The WAL stays bounded (issue 18 item 6): SQLite's own checkpoint after commits
(`wal_autocheckpoint`, 1000 pages) copies the WAL back; `journal_size_limit` cuts the
file back to `WAL_LIMIT` whenever the WAL starts over. A long reader can hold a
checkpoint back (or a migration at start leave a large WAL): once the file is past
the limit, the writer runs `wal_checkpoint(TRUNCATE)` on its own thread when it has
nothing queued (or, busy, once the file is twice the limit), waiting at most
`CHECKPOINT_BUSY_MS` for readers. When readers were only in the way for a moment
(every frame was copied back) it tries again at the next chance; when one holds an
older snapshot, after another `WAL_LIMIT` of growth, `CHECKPOINT_RETRY_COMMITS`
commits or `CHECKPOINT_RETRY_SECONDS` (for a server at rest), whichever comes first.

Damage (issue 14 item 2): a file up to `CHECK_BEFORE_START_BYTES` is checked whole
(`PRAGMA quick_check`) before the server is ready, and a damaged one is refused
(`DamagedDatabase`, saying what to do). A larger file gets a look that costs
milliseconds at any size (header, schema, the small tables) and the full check on a
thread of its own right after start. Whenever SQLite calls the file damaged (that
check, a read or a commit: SQLITE_CORRUPT, SQLITE_NOTADB) the store reports
`Health.failed("store", ...)` once and stays failed, probes or not, until the file is
restored and the server restarted: a damaged file does not heal by itself.
`serve` holds a shared `flock` on the file while it runs, which is how
`radiusd db restore` knows to refuse (`lock_exclusive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from radiusd.clock import Clock, SystemClock
from radiusd.health import Health
from radiusd.store.backend import commit_isolated, next_batch
from radiusd.store.migrations import migrate
from radiusd.throttle import LogThrottle

log = logging.getLogger("radiusd.store")

Op = tuple[str, Any]  # (sql, parameters)

PROBE_SECONDS = 2.0  # while failing and idle: how often a probe write tries again
WRITER_BUSY_SECONDS = 5.0  # "database is locked" after this: a NAS has given up by then
READER_BUSY_SECONDS = 30.0
LOCK_POLL_SECONDS = 0.0005  # the writer's try for the write lock another process holds
_sleep = time.sleep  # between those tries (a test counts them)
READERS = 3  # read connections; slow reads may hold all but one (module docstring)
WAL_LIMIT = 16 * 1024 * 1024  # bytes: journal_size_limit, and when to checkpoint idle
CHECKPOINT_BUSY_MS = 10  # how long a TRUNCATE checkpoint waits for readers to finish
CHECKPOINT_RETRY_COMMITS = 32  # after a reader's older snapshot held it back...
CHECKPOINT_RETRY_SECONDS = 1.0  # ...or this, when nothing is written
# A real write that changes nothing: the first UPDATE dirties the page (SQLite skips
# writing a row updated to the value it has), the second restores it, and COMMIT must
# append it to the WAL, which is what fails on a full disk.
PROBE: list[Op] = [("UPDATE schema_version SET version = -version", ()),
                   ("UPDATE schema_version SET version = -version", ())]
# SQLite primary result codes that mean the database cannot commit at all.
_DATABASE_DOWN = {
    5,   # SQLITE_BUSY: locked by another process past the busy timeout
    6,   # SQLITE_LOCKED
    7,   # SQLITE_NOMEM
    8,   # SQLITE_READONLY
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL: database or disk is full
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    26,  # SQLITE_NOTADB
}
# Of those, the ones that mean the file itself is damaged: it does not heal by itself,
# so the store stays unhealthy until restored and restarted (docs/store.md, "Damage").
_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
# Up to this size the whole file is checked (`PRAGMA quick_check`) before the server
# says ready; a larger file gets a quick look at start and the full check in the
# background (quick_check reads every page: 28 s for 4.7 GB, 5 M sessions).
CHECK_BEFORE_START_BYTES = 128 * 1024 * 1024
WHAT_TO_DO = ("stop radiusd, keep the file for inspection, and restore the last backup "
              "(radiusd db restore FILE; README \"Backup and restore\")")


class MissingDatabase(FileNotFoundError):
    """A command other than `serve`/`db init` was pointed at a database that is not
    there (issue 14: only those create one)."""


class DamagedDatabase(OSError):
    """The SQLite file fails its integrity check or SQLite calls it corrupt."""


class DatabaseInUse(OSError):
    """`radiusd serve` has the database open (it holds a shared `flock` on the file)."""


def create_private(path: str) -> None:
    """Create the database file with mode 0600 (it holds personal data, Rules §10)."""
    if path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def connect_sync(path: str, timeout: float = 10.0, same_thread: bool = True,
                 create: bool = True) -> sqlite3.Connection:
    """A plain connection for the CLI, start-up and the writer thread: WAL, migrated,
    busy timeout, autocommit (transactions are explicit). ``create=False``: a missing
    file is `MissingDatabase`, never a new empty database."""
    if not create and path != ":memory:" and not os.path.exists(path):
        raise MissingDatabase(path)
    create_private(path)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    migrate(conn)
    return conn


def is_damage(error: BaseException) -> bool:
    """SQLite says the file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.DatabaseError) and code is not None \
        and code & 0xFF in _DAMAGED


def quick_look(conn: sqlite3.Connection) -> list[str]:
    """What start-up can afford on any size (well under a second at 5 M rows): the
    header and schema read, and `quick_check` of the small tables every request
    touches. Problems as SQLite words them; empty: none seen."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        problems: list[str] = []
        for table in ("schema_version", "counters"):
            problems += [line for r in conn.execute(f"PRAGMA quick_check({table})")
                         for line in str(r[0]).splitlines()
                         if line not in ("ok", "") and not line.startswith("*** ")]
        return problems
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            return [str(e)]
        raise


def check(conn: sqlite3.Connection, full: bool = False, limit: int = 20) -> list[str]:
    """`PRAGMA quick_check` (every page, structure and index entries), or with ``full``
    `integrity_check` (also each row against its indexes): at most ``limit`` problems
    as SQLite words them; empty: the file is sound."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({int(limit)})").fetchall()
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            return [str(e)]
        raise
    # SQLite words one problem per row, some over several lines under a heading.
    return [line for r in rows for line in str(r[0]).splitlines()
            if line not in ("ok", "") and not line.startswith("*** ")][:limit]


def check_file(path: str, full: bool = True) -> list[str]:
    """`radiusd db check`: `check` on the file at ``path``, read only where SQLite
    can be (a WAL file without its -shm needs write access to make one)."""
    conn = _open_backup(path)
    try:
        return check(conn, full=full)
    finally:
        conn.close()


def lock_shared(path: str) -> int | None:
    """`serve` marks the file in use: a shared `flock` on it, held until `unlock`
    (SQLite's own locks are POSIX locks, which flock does not touch). Raises
    `DatabaseInUse` while `radiusd db restore` holds it."""
    if path == ":memory:":
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(f"{path}: radiusd db restore is replacing it; start again "
                            "when it has finished") from None
    return fd


def lock_exclusive(path: str) -> int | None:
    """`radiusd db restore`: the file to itself, or `DatabaseInUse` while a server has
    it (its shared lock); None when there is no file yet. Release with `unlock`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(f"{path}: a radiusd server is using this database; stop it "
                            "first (systemctl stop radiusd), then restore") from None
    return fd


def unlock(fd: int | None) -> None:
    """Close the descriptor `lock_shared`/`lock_exclusive` gave (this drops the lock).
    Only after every SQLite connection to the file is closed: closing any descriptor
    of a file drops the process's POSIX locks on it, SQLite's included."""
    if fd is not None:
        os.close(fd)


def backup(path: str, target: str) -> int:
    """`radiusd db backup`: a consistent copy of the database at ``path`` while the
    server writes (SQLite's online backup in one step: one read snapshot; under WAL
    writers are not held up), as a single file (rollback journal mode) with mode 0600,
    written beside ``target`` and renamed into place. Returns its size in bytes."""
    tmp = f"{target}.partial"
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=READER_BUSY_SECONDS)
        try:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(str(Path(target).absolute().parent))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return os.stat(target).st_size


def restore(source: str, path: str) -> str | None:
    """`radiusd db restore`: check ``source`` (a radiusd database, `quick_check` ok),
    copy it beside ``path`` and rename it into place, the file it replaces kept as
    PATH.before-restore (returned; None when there was none). `DatabaseInUse` while a
    server has ``path`` open; `DamagedDatabase` for a damaged ``source``."""
    held = lock_exclusive(path)
    tmp = f"{path}.restoring"
    try:
        create_private(tmp)
        src = _open_backup(source)
        try:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                problems = check(dst)
                if problems:
                    raise DamagedDatabase(f"the backup is damaged ({'; '.join(problems[:3])})")
                dst.execute("SELECT version FROM schema_version").fetchone()
            finally:
                dst.close()
        finally:
            src.close()
        _fsync(tmp)
        kept = None
        if held is not None:
            with contextlib.suppress(sqlite3.Error):  # the old WAL into the old file
                old = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1.0)
                try:
                    old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    old.close()
            kept = f"{path}.before-restore"
            os.replace(path, kept)
            if os.path.exists(f"{path}-wal"):
                os.replace(f"{path}-wal", f"{kept}-wal")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}-shm")
        os.replace(tmp, path)
        _fsync(str(Path(path).absolute().parent))
        return kept
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        unlock(held)


def _open_backup(source: str) -> sqlite3.Connection:
    """A backup file, read only if SQLite can (a copy in WAL mode without its -shm
    needs write access to make one)."""
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        return sqlite3.connect(f"file:{source}?mode=rw", uri=True)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def connect_reader(path: str) -> sqlite3.Connection:
    """A read-only connection for one reader thread (rows as `sqlite3.Row`)."""
    conn = sqlite3.connect(path, timeout=READER_BUSY_SECONDS, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only = ON")
    return conn


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any],
           one: bool) -> list[sqlite3.Row]:
    """On a reader's thread: the statement run and fetched (or, for one row, closed),
    so its read snapshot ends here."""
    cur = conn.execute(sql, params)
    try:
        if one:
            row = cur.fetchone()
            return [] if row is None else [row]
        return cur.fetchall()
    finally:
        cur.close()


@dataclass(slots=True, eq=False)
class _Reader:
    conn: sqlite3.Connection
    thread: ThreadPoolExecutor


@dataclass(slots=True)
class _Pending:
    ops: list[Op]
    done: asyncio.Future[None] | None  # None: the health probe, which nobody awaits
    rows: list[list[Any]] | None = None  # `run`: what each op returned (RETURNING)
    guard: bool = False  # `run(guard=True)`: the rest only when the first op returned rows


class DatabaseGone(OSError):
    """The database file was deleted or replaced while the writer had it open."""


class Store:
    """The one writer (group commit, its own thread) and `readers` read connections
    (a thread each); see the module docstring."""

    def __init__(self, path: str, batch_max: int = 256, health: Health | None = None,
                 clock: Clock | None = None, readers: int = READERS) -> None:
        if readers < 1:
            raise ValueError("a store needs at least one reader")
        self.path = path
        self.batch_max = batch_max
        self.health = health or Health()
        self.clock = clock or SystemClock()
        self.probe_seconds = PROBE_SECONDS
        self.wal_limit = WAL_LIMIT
        self.readers = readers
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._readers: list[_Reader] = []
        self._idle: asyncio.Queue[_Reader] | None = None
        self._busy: set[_Reader] = set()  # running a statement
        self._slow = asyncio.Semaphore(max(1, readers - 1))
        self._task: asyncio.Task[None] | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._wal_next = 0  # backing off after a checkpoint a reader held back: until
        self._wal_retry = 0  # the -wal file is past this size or `commits` reaches this
        self._wal_timer: asyncio.TimerHandle | None = None
        self.checkpoints = 0  # TRUNCATE checkpoints that emptied the WAL
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of what we opened
        self._throttle = LogThrottle(60.0)
        self.commits = 0
        self.writes = 0
        self.check_before_start_bytes = CHECK_BEFORE_START_BYTES
        self.damaged: str | None = None  # set once SQLite calls the file damaged: sticky
        self.checked: asyncio.Task[None] | None = None  # the background full check
        self._check_conn: sqlite3.Connection | None = None
        self._lock: int | None = None

    async def open(self) -> None:
        """Open (creating and migrating it when missing), refuse a damaged file with
        `DamagedDatabase` (module docstring, "Damage"), then start the writer."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        loop = asyncio.get_running_loop()
        new = self.path != ":memory:" and not os.path.exists(self.path)
        made_dir = new and not Path(self.path).absolute().parent.exists()
        # Created, migrated and used only on the writer thread.
        try:
            self._writer = await loop.run_in_executor(self._thread, self._connect_writer)
        except sqlite3.DatabaseError as e:
            self._thread.shutdown(wait=False)
            self._thread = None
            if is_damage(e):
                raise DamagedDatabase(f"the database is damaged ({e}): {WHAT_TO_DO}") from e
            raise
        if new:  # said, so that a typo in the path is seen (issue 14)
            log.warning("created a new, empty database %s%s: no file was there",
                        Path(self.path).absolute(),
                        " and its directory" if made_dir else "")
        background = False
        try:
            if self.path != ":memory:":
                st = os.stat(self.path)
                self._file = (st.st_dev, st.st_ino)
                self._lock = lock_shared(self.path)
                background = st.st_size > self.check_before_start_bytes
                look = quick_look if background else check
                problems = await loop.run_in_executor(self._thread, look, self._writer)
                if problems:
                    raise DamagedDatabase(f"the database is damaged "
                                          f"({'; '.join(problems[:3])}): {WHAT_TO_DO}")
        except BaseException:
            await loop.run_in_executor(self._thread, self._writer.close)
            self._thread.shutdown(wait=True)
            self._thread = None
            self._writer = None
            unlock(self._lock)
            self._lock = None
            raise
        idle: asyncio.Queue[_Reader] = asyncio.Queue()
        for i in range(self.readers):
            thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-reader-{i}")
            try:
                conn = await loop.run_in_executor(thread, connect_reader, self.path)
                # A first read opens the WAL and schema now: a connection that first
                # reads after the file was deleted under us fails (SQLITE_IOERR) where
                # the others still read, and the writer is what must report it.
                await loop.run_in_executor(thread, _fetch, conn,
                                           "SELECT version FROM schema_version", (), True)
            except BaseException:
                thread.shutdown(wait=False)
                raise
            reader = _Reader(conn, thread)
            self._readers.append(reader)
            idle.put_nowait(reader)
        self._idle = idle
        self._task = asyncio.create_task(self._run(), name="store-writer")
        self._queue.put_nowait(_Pending([], None))  # a migration may have left a big WAL
        if background:
            self.checked = asyncio.create_task(self._check_in_background(),
                                               name="store-check")

    async def _check_in_background(self) -> None:
        """The full `quick_check` of a large file, on a connection and thread of its
        own after start: a damaged page marks the store unhealthy (module docstring)."""
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-check")
        t0 = time.monotonic()
        try:
            conn = self._check_conn = await loop.run_in_executor(
                thread, connect_reader, self.path)
            try:
                problems = await loop.run_in_executor(thread, check, conn)
            finally:
                self._check_conn = None
                await loop.run_in_executor(thread, conn.close)
        except sqlite3.Error as e:  # interrupted by close, or the file went away
            log.debug("background integrity check stopped: %s", e)
            return
        finally:
            thread.shutdown(wait=False)
        if problems:
            self._damage("; ".join(problems[:3]))
        else:
            log.info("integrity check of %s: ok (%.1fs)", self.path, time.monotonic() - t0)

    def _damage(self, reason: str) -> None:
        """The file is damaged: unhealthy until restored and restarted (sticky)."""
        if self.damaged is None:
            self.damaged = f"the database is damaged ({reason}): {WHAT_TO_DO}"
        self.health.failed("store", self.damaged, self.clock.now())

    def _connect_writer(self) -> sqlite3.Connection:
        conn = connect_sync(self.path, timeout=WRITER_BUSY_SECONDS, same_thread=False)
        conn.execute(f"PRAGMA journal_size_limit = {int(self.wal_limit)}")
        # Migrated (waiting up to WRITER_BUSY_SECONDS for a command holding the lock);
        # from now on the writer tries for the lock itself (`_begin`), never in SQLite's
        # busy handler, and a checkpoint sets its own short wait (`_truncate_wal`).
        conn.execute("PRAGMA busy_timeout = 0")
        return conn

    @property
    def ok(self) -> bool:
        """False while the database cannot commit (see the module docstring)."""
        return self.health.ok("store")

    async def close(self) -> None:
        """Flush what is queued, then close (graceful shutdown). A read still running
        is interrupted (its caller gets `sqlite3.OperationalError`)."""
        for timer in (self._probe_timer, self._wal_timer):
            if timer is not None:
                timer.cancel()
        self._probe_timer = self._wal_timer = None
        if self.checked is not None:
            if self._check_conn is not None:
                self._check_conn.interrupt()  # the PRAGMA stops with "interrupted"
            with contextlib.suppress(Exception):
                await self.checked
            self.checked = None
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        while not self._queue.empty():  # arrived after the stop mark: refuse, never hang
            item = self._queue.get_nowait()
            if item is not None:
                _settle(item, error=True)
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._thread is not None:
            await loop.run_in_executor(self._thread, self._writer.close)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._idle = None  # no new reads
        for reader in self._busy:
            reader.conn.interrupt()
        for reader in self._readers:
            with contextlib.suppress(RuntimeError):  # its thread is already gone
                await loop.run_in_executor(reader.thread, reader.conn.close)
            reader.thread.shutdown(wait=True)
        self._readers.clear()
        self._writer = None
        self._thread = None
        unlock(self._lock)  # last: after every SQLite connection is closed
        self._lock = None

    async def write(self, ops: list[Op]) -> None:
        """Run ``ops`` in one transaction shared with other writers; return once durable."""
        if not ops:
            return
        if self._task is None:
            raise RuntimeError("store is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(ops, fut))
        await fut

    async def run(self, ops: list[Op], *, guard: bool = False) -> list[list[Any]]:
        """Run ``ops`` in the same group commit as `write` (one transaction shared with
        other writers) and return, for each op in order, the rows it returned
        (RETURNING), as a list (empty for statements that return none). Rows support
        r[0] and r["column"]. Each op runs on its own (executemany cannot fetch), and a
        failing op fails only its own request, as for `write`."""
        if not ops:
            return []
        if self._task is None:
            raise RuntimeError("store is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = _Pending(ops, fut, [], guard)
        self._queue.put_nowait(pending)
        await fut
        assert pending.rows is not None
        return pending.rows

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> list[sqlite3.Row]:
        """Every row of one read. `slow=True`: no RADIUS answer waits for it (module
        docstring, "Reads")."""
        return await self._read(sql, params, slow=slow, one=False)

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *,
                       slow: bool = False) -> sqlite3.Row | None:
        """The first row of one read, or None."""
        rows = await self._read(sql, params, slow=slow, one=True)
        return rows[0] if rows else None

    async def _read(self, sql: str, params: Sequence[Any], *, slow: bool,
                    one: bool) -> list[sqlite3.Row]:
        if self._idle is None:
            raise RuntimeError("store is not open")
        idle = self._idle
        gate = self._slow if slow else None
        if gate is not None:
            await gate.acquire()
        try:
            reader = await idle.get()
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        loop = asyncio.get_running_loop()
        self._busy.add(reader)
        try:
            done = reader.thread.submit(_fetch, reader.conn, sql, params, one)
        except BaseException:
            self._back(reader, gate, idle)
            raise

        def back(_: Future[list[sqlite3.Row]]) -> None:  # on the reader's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._back, reader, gate, idle)

        # The connection goes back when SQLite is done with it, even if our caller
        # stops waiting first (asyncio.wait_for).
        done.add_done_callback(back)
        try:
            return await asyncio.wrap_future(done)
        except sqlite3.DatabaseError as e:
            if is_damage(e):
                self._damage(_reason(e))
            raise

    def _back(self, reader: _Reader, gate: asyncio.Semaphore | None,
              idle: asyncio.Queue[_Reader]) -> None:
        self._busy.discard(reader)
        idle.put_nowait(reader)
        if gate is not None:
            gate.release()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            batch, stop = await next_batch(queue, self.batch_max)
            if stop and not batch:
                break
            batch = [p for p in batch if p.ops]  # no ops: a wake-up to check the WAL
            if batch:
                await self._commit(batch)
            await self._bound_wal(idle=queue.empty())
            if stop:
                break

    async def _commit(self, batch: list[_Pending]) -> None:
        await commit_isolated(batch, self._transaction, _database_down, self._failing,
                              self._write_failed, lambda p, e: _settle(p, error=e is not None))

    def _failing(self, error: BaseException) -> None:
        """The database cannot commit: once per episode in the log (Health), and a
        probe write later in case nothing else comes to find out it works again."""
        if is_damage(error):
            self._damage(_reason(error))
        else:
            self.health.failed("store", _reason(error), self.clock.now())
        if self._probe_timer is None and self._task is not None:
            self._probe_timer = asyncio.get_running_loop().call_later(
                self.probe_seconds, self._probe)

    def _probe(self) -> None:
        self._probe_timer = None
        if self.health.ok("store") or self._task is None:
            return
        if self._queue.empty():  # otherwise the queued writes are the probe
            self._queue.put_nowait(_Pending(PROBE, None))
        else:
            self._probe_timer = asyncio.get_running_loop().call_later(
                self.probe_seconds, self._probe)

    async def _bound_wal(self, idle: bool) -> None:
        """Empty the WAL once it has outgrown `wal_limit` (module docstring)."""
        size = self._wal_size()
        if size <= self.wal_limit or not (idle or size > 2 * self.wal_limit):
            return
        if size <= self._wal_next and self.commits < self._wal_retry:
            return  # backing off: a reader held the last one back
        assert self._thread is not None
        loop = asyncio.get_running_loop()
        try:
            busy, frames, copied = await loop.run_in_executor(self._thread, self._truncate_wal)
        except sqlite3.Error as e:  # e.g. disk full: the commits report the health
            log.debug("checkpoint failed: %s", e)
            busy, frames, copied = 1, 1, 0
        if not busy:
            self.checkpoints += 1
            self._wal_next = self._wal_retry = 0
            return
        if copied < frames:  # a reader holds an older snapshot: leave it be a while
            self._wal_next = size + self.wal_limit
            self._wal_retry = self.commits + CHECKPOINT_RETRY_COMMITS
        if self._wal_timer is None and self._task is not None:
            self._wal_timer = loop.call_later(CHECKPOINT_RETRY_SECONDS, self._retry_checkpoint)

    def _retry_checkpoint(self) -> None:
        self._wal_timer = None
        self._wal_next = self._wal_retry = 0
        if self._task is not None and self._queue.empty():
            self._queue.put_nowait(_Pending([], None))  # wake the writer (no commit)

    def _wal_size(self) -> int:
        if self._file is None:
            return 0
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def _truncate_wal(self) -> tuple[int, int, int]:
        """On the writer thread: `wal_checkpoint(TRUNCATE)`, waiting for readers only
        briefly: (busy, frames in the WAL, frames copied back); busy 0: emptied."""
        conn = self._writer
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute("PRAGMA busy_timeout = 0")  # the writer's own (`_connect_writer`)
        return int(busy), int(frames), int(copied)

    def _write_failed(self, error: BaseException) -> None:
        self._throttle.log(log, logging.ERROR, f"write/{type(error).__name__}", time.monotonic(),
                           "a write failed and was rolled back: %s", _reason(error))

    async def _transaction(self, batch: list[_Pending]) -> None:
        """One thread hop for the whole batch: BEGIN, every statement, COMMIT."""
        assert self._thread is not None
        rows = await asyncio.get_running_loop().run_in_executor(self._thread, self._apply,
                                                                batch)
        for p, got in zip(batch, rows, strict=True):
            if p.rows is not None and got is not None:
                p.rows[:] = got
        self.writes += sum(len(p.ops) for p in batch)
        self.commits += 1
        if self.damaged is None:  # a damaged file stays reported until restored
            self.health.recovered("store", self.clock.now())

    def _apply(self, batch: list[_Pending]) -> list[list[list[Any]] | None]:
        """Plain writes run grouped (executemany over runs of the same statement, across
        writers); `run`'s ops one by one, their rows fetched. Rows are handed back only
        once the transaction has committed."""
        conn = self._writer
        assert conn is not None
        out: list[list[list[Any]] | None] = []
        _begin(conn)
        try:
            plain: list[Op] = []
            for p in batch:
                if p.rows is None:
                    plain += p.ops
                    out.append(None)
                    continue
                _executemany(conn, plain)
                plain = []
                got: list[list[Any]] = []
                for sql, params in p.ops:
                    if p.guard and got and not got[0]:
                        got.append([])  # the guard returned nothing: not run
                        continue
                    cur = conn.cursor()
                    cur.row_factory = sqlite3.Row
                    try:
                        got.append(cur.execute(sql, params).fetchall())
                    finally:
                        cur.close()
                out.append(got)
            _executemany(conn, plain)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR...): a
            # ROLLBACK then fails with "no transaction is active" and would hide the
            # error that matters.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as e:
                    log.debug("ROLLBACK failed too: %s", e)
            raise
        self._check_file()
        return out

    def _check_file(self) -> None:
        """Committed, but to the file we opened: is it still the one at ``path``? A
        database deleted or replaced under a running server takes writes that nobody
        will ever read."""
        if self._file is None:
            return
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise DatabaseGone(f"the database file is gone ({e.strerror}): writes go to a "
                               f"deleted file; restore it and restart radiusd") from None
        if (st.st_dev, st.st_ino) != self._file:
            raise DatabaseGone("the database file was replaced while radiusd runs: writes go "
                               "to the old file; restart radiusd")


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, trying for the write lock every `LOCK_POLL_SECONDS` while
    another process holds it (`radiusd purge`'s steps, `radiusd journal`), for up to
    `WRITER_BUSY_SECONDS`. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25...
    ms between tries, so a batch behind a 10 ms step waited up to 18 ms, and longer
    each time it lost the race again (issue 18 item 5: requests' p99 during a purge).
    The writer's connection has no busy timeout of its own (`Store._connect_writer`),
    so each try answers at once."""
    deadline = time.monotonic() + WRITER_BUSY_SECONDS
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        _sleep(LOCK_POLL_SECONDS)


def _executemany(conn: sqlite3.Connection, ops: list[Op]) -> None:
    for sql, run in groupby(ops, key=lambda op: op[0]):
        conn.executemany(sql, [p for _, p in run])


def _database_down(error: BaseException) -> bool:
    """An error of the database, not of one write (see `_DATABASE_DOWN`)."""
    if isinstance(error, OSError):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.Error) and code is not None \
        and code & 0xFF in _DATABASE_DOWN


def _reason(error: BaseException) -> str:
    """SQLite's own words, e.g. "database or disk is full (SQLITE_FULL)"."""
    name = getattr(error, "sqlite_errorname", None)
    return f"{error} ({name})" if name else str(error) or type(error).__name__


def _settle(p: _Pending, error: bool = False) -> None:
    if p.done is None or p.done.done():
        return
    if error:
        p.done.set_exception(StoreError("the database cannot commit this write; "
                                        "see the log"))
    else:
        p.done.set_result(None)


class StoreError(Exception):
    pass
