"""A test that hangs fails within minutes, saying what every thread and asyncio task
was waiting for, instead of holding CI until its time runs out.

A fresh-clone CI run once sat 19 minutes in one test with its event loop asleep in
`epoll` and every store thread idle (seventh session's note); nothing said which await
was stuck, and a SIGINT let it go on. So: after `HANG_SECONDS` in one phase of a test
(setup, call or teardown), a watchdog thread writes to stderr every thread's stack and
every pending task's await chain, and for each running loop whether it sleeps in its
selector with callbacks already queued (a wake-up lost: something called `call_soon`
from another thread, where only `call_soon_threadsafe` wakes the loop). It then wakes
each loop; the phase fails once it returns, with that finding in its message. If it has
not returned `CANCEL_SECONDS` later, every task of those loops is cancelled.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import sys
import threading
import traceback
from collections.abc import Generator
from types import FrameType
from typing import IO

import pytest

HANG_SECONDS = float(os.environ.get("RADIUSD_TEST_HANG_SECONDS", "120"))
CANCEL_SECONDS = float(os.environ.get("RADIUSD_TEST_HANG_CANCEL_SECONDS", "60"))


def running_loops() -> list[asyncio.AbstractEventLoop]:
    """Every event loop of this process that is running now, on whatever thread."""
    return [o for o in gc.get_objects()
            if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]


def _asleep(frame: FrameType | None) -> bool:
    """The thread waits in a selector's `select` (the loop has nothing it knows of)."""
    while frame is not None:
        if frame.f_code.co_name == "select" and "selectors" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def loop_finding(loop: asyncio.AbstractEventLoop) -> str:
    """What one loop is doing, as far as another thread can tell."""
    ready = len(getattr(loop, "_ready", ()))
    timers = len(getattr(loop, "_scheduled", ()))
    tid = getattr(loop, "_thread_id", None)
    asleep = _asleep(sys._current_frames().get(tid) if tid is not None else None)
    if asleep and ready:
        return (f"its loop sleeps in select with {ready} callback(s) ready and "
                f"{timers} timer(s): a wake-up was lost (call_soon from another thread?)")
    where = "asleep in select" if asleep else "running"
    return f"its loop is {where}, {ready} callback(s) ready, {timers} timer(s)"


def _tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[object]]:
    for _ in range(5):  # read from another thread: the set may change under us
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return []


def dump(out: IO[str], what: str) -> list[str]:
    """Every thread's stack and every task's await chain to `out`; one finding a loop."""
    out.write(f"\n=== {what}: every thread ===\n")
    out.flush()
    faulthandler.dump_traceback(file=out, all_threads=True)
    findings = []
    for loop in running_loops():
        finding = loop_finding(loop)
        findings.append(finding)
        out.write(f"=== {what}: {finding}; its tasks ===\n")
        for task in _tasks(loop):
            out.write(f"--- {task.get_name()}: {task.get_coro()!r}\n")
            for frame in task.get_stack():
                out.write("".join(traceback.format_stack(frame, limit=1)))
    out.flush()
    return findings


class Watch:
    """The watchdog of one phase of one test."""

    def __init__(self, what: str, seconds: float = HANG_SECONDS,
                 out: IO[str] | None = None) -> None:
        self.what = what
        self.seconds = seconds
        self.out = out or sys.__stderr__ or sys.stderr
        self.findings: list[str] = []
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hang-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.fired = True
        self.findings = dump(self.out, f"{self.what} still running after {self.seconds:g} s")
        loops = running_loops()
        for loop in loops:
            loop.call_soon_threadsafe(lambda: None)  # a lost wake-up goes on from here
        if self._done.wait(CANCEL_SECONDS):
            return
        dump(self.out, f"{self.what} still running after {self.seconds + CANCEL_SECONDS:g} s;"
                       " cancelling its tasks")
        for loop in loops:
            for task in _tasks(loop):
                loop.call_soon_threadsafe(task.cancel)

    def message(self) -> str:
        found = "; ".join(self.findings) or "no event loop was running"
        return (f"{self.what} hung for more than {self.seconds:g} s ({found}); every thread's"
                " stack and every task's await chain are on stderr")


def watched(item: pytest.Item, when: str) -> Generator[None, object, object]:
    """Body of a `wrapper=True` hook around one phase of `item`."""
    result: object = None
    with Watch(f"{item.nodeid} ({when})") as watch:
        try:
            result = yield
        except BaseException:
            if not watch.fired:  # failed on its own
                raise
    if watch.fired:  # woken or cancelled by the watchdog: the hang is the failure
        pytest.fail(watch.message(), pytrace=False)
    return result
