"""The hang watchdog (tests/hangs.py) on two made-up hangs, run by an inner pytest:
a lost wake-up is named as one and the test fails once woken; a task that waits for
ever is cancelled. Both inner runs end in seconds instead of never."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import pytest
from tests.hangs import watched

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from watched(item, "call"))
'''

HANGS = '''
import asyncio
import threading
import time


async def test_lost_wake_up():
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish():  # on another thread, the wrong way: nothing wakes the loop
        time.sleep(0.2)
        loop.call_soon(done.set_result, "finished")

    threading.Thread(target=finish).start()
    assert await done == "finished"


async def test_waits_for_ever():
    await asyncio.Event().wait()
'''


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RADIUSD_TEST_HANG_SECONDS", "1")
    monkeypatch.setenv("RADIUSD_TEST_HANG_CANCEL_SECONDS", "1")
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_hangs_inner=HANGS)
    return pytester


def test_a_lost_wake_up_is_named_and_fails_the_test(inner: pytest.Pytester) -> None:
    result = inner.runpytest_subprocess("-k", "lost_wake_up", timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*call) hung for more than 1 s (its loop sleeps in select with 1 callback(s) "
        "ready*a wake-up was lost*"])
    # The stacks (in the report, captured): the thread that sleeps in select, and the
    # task awaiting `done`.
    result.stdout.fnmatch_lines(["*still running after 1 s: every thread*",
                                 "*in select*",
                                 "*its tasks*",
                                 "*test_lost_wake_up*"])


def test_a_task_that_waits_for_ever_is_cancelled(inner: pytest.Pytester) -> None:
    result = inner.runpytest_subprocess("-k", "waits_for_ever", timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*call) hung for more than 1 s (its loop is asleep in "
                                 "select, 0 callback(s) ready*"])
    result.stdout.fnmatch_lines(["*still running after 2 s; cancelling its tasks*",
                                 "*await asyncio.Event().wait()*"])
