"""`[server] workers = N`: N processes of the same server on one box (issue 12 item 4).

Processes, not threads, for cores (DESIGN.md): the parent forks N copies of
`radiusd serve` and does nothing else but watch them. Each worker binds its own
sockets with `SO_REUSEPORT`, so the kernel spreads datagrams over the workers by a
hash of source and destination address and port: a NAS's retransmission, from the
same source port as the request, reaches the same worker and its RFC 5080 duplicate
cache. The workers share nothing but the database, which is why several are allowed
only with PostgreSQL: every rule that must hold across them is the database's.

- SIGTERM or SIGINT to the parent is passed to every worker; each stops cleanly
  (finishes what is in flight, flushes its writes) and the parent exits 0 when they
  all did.
- A worker that dies on its own (a crash, the OOM killer) is started again, at most
  once per `RESTART_SECONDS` per slot, and logged once per death; its sockets leave
  the `SO_REUSEPORT` group with it, so the kernel sends its share to the others until
  it is back.

The supervisor is plain code around `os.fork`/`os.waitpid`; what a worker runs is
the caller's (`run_worker(index)` returning an exit status).

`/metrics` is served by the first worker, and most of it is read from the database;
what each process counts itself (datagrams, drops, answers by client and code, the
latency histogram, refusals) the others publish every `PUBLISH_SECONDS` as a small
JSON file in a directory the parent made (`Exchange`), and the first adds them to
its own. A worker that restarts starts its counts from zero, which Prometheus reads
as a counter reset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("radiusd.workers")

RESTART_SECONDS = 1.0  # a slot whose worker died is refilled at most this often
PUBLISH_SECONDS = 2.0  # how often a worker publishes its own counters for /metrics


class Exchange:
    """The directory where workers leave their counters for the first one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def publish(self, worker: int, figures: dict[str, Any]) -> None:
        """Replace this worker's file at once (write aside, then rename)."""
        final = self.path / f"worker-{worker}.json"
        tmp = final.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(figures))
        os.replace(tmp, final)

    def others(self, worker: int) -> list[dict[str, Any]]:
        """What every other worker published last (a file being replaced is skipped)."""
        out = []
        for f in sorted(self.path.glob("worker-*.json")):
            if f.name == f"worker-{worker}.json":
                continue
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(f.read_text()))
        return out


def supervise(n: int, run_worker: Callable[[int], int],
              clock: Callable[[], float] = time.monotonic) -> int:
    """Fork `n` workers running `run_worker(index)`; pass SIGTERM/SIGINT/SIGHUP on; restart a
    worker that dies unasked; return 0 when all stopped cleanly after a signal, else
    the first non-zero status seen at shutdown."""
    children: dict[int, int] = {}  # pid -> slot
    started: dict[int, float] = {}  # slot -> when its current worker started
    stopping = False
    status = 0

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, then the server
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() takes it
            code = 1
            try:
                code = run_worker(slot)
            except BaseException:  # a worker must never return into the parent's loop
                log.exception("worker %d failed", slot)
            finally:
                os._exit(code)
        children[pid] = slot
        started[slot] = clock()

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def hangup(signum: int, _frame: FrameType | None) -> None:
        """SIGHUP (radiusd.reload): every worker reads the config again."""
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)
    try:
        for slot in range(n):
            if stopping:
                break
            spawn(slot)
        log.info("%d workers started (pids %s)", n, ", ".join(map(str, children)))
        while children:
            try:
                pid, raw = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries waitpid
                continue
            if pid not in children:
                continue
            slot = children.pop(pid)
            code = os.waitstatus_to_exitcode(raw)
            if stopping:
                if code != 0 and status == 0:
                    status = code if code > 0 else 128 - code
                continue
            how = f"exit status {code}" if code >= 0 else f"signal {-code}"
            log.error("worker %d (pid %d) died (%s): starting it again", slot, pid, how)
            wait = started.get(slot, 0.0) + RESTART_SECONDS - clock()
            if wait > 0:
                time.sleep(wait)
            if not stopping:
                spawn(slot)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return status
