"""Rules §6 under failure: the delivery process is killed with SIGKILL while SMS are
queued, then restarted: every press yields exactly one SMS at a real Kannel."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from radiusd.sealing import Sealer
from radiusd.store.sqlite import connect_sync
from tests.conftest import require_peer
from tests.peers import kannel as k

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parent.parent
TO = "+77011234578"


@pytest.fixture
def kannel(tmp_path: Path) -> Iterator[k.Kannel]:
    require_peer(k.BEARERBOX, "kannel")
    require_peer(k.FAKESMSC, "kannel-extras")
    peer = k.Kannel(tmp_path / "kannel")
    peer.start()
    yield peer
    peer.stop_all()


def seed(db: Path, key: bytes, n: int) -> list[str]:
    sealer = Sealer(key)
    conn = connect_sync(str(db))
    now = time.time()
    texts = [f"Код {i:06d}" for i in range(1, n + 1)]
    with conn:
        conn.executemany(
            "INSERT INTO sms_outbox (id, password_id, recipient, body, created_at, state, "
            "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?)",
            [(i, i, TO, sealer.seal(t.encode(), aad=b"sms"), now, now)
             for i, t in enumerate(texts, 1)])
    conn.close()
    return texts


def rows(db: Path) -> list[tuple[int, str, int, str | None]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(
            "SELECT id, state, attempts, last_error FROM sms_outbox ORDER BY id").fetchall()
    finally:
        conn.close()


def wait_for(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def runner(db: Path, key: bytes, peer: k.Kannel, lease: float = 60.0) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.outbox_runner", str(db),
         base64.b64encode(key).decode(), peer.url, k.USERNAME, k.PASSWORD, str(lease)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)


def test_sigkill_while_gateway_down_then_restart_delivers_each_once(
        kannel: k.Kannel, tmp_path: Path) -> None:
    kannel.stop("smsbox")
    db, key = tmp_path / "radiusd.db", os.urandom(32)
    texts = seed(db, key, 10)
    proc = runner(db, key, kannel)
    try:
        assert wait_for(lambda: all(r[2] >= 1 and r[1] == "queued" for r in rows(db)))
    finally:
        kill9(proc)
    kannel.start_smsbox()
    proc = runner(db, key, kannel)
    try:
        assert wait_for(lambda: all(r[1] == "sent" for r in rows(db))), rows(db)
    finally:
        kill9(proc)
    kannel.wait_received(10)
    time.sleep(0.3)
    assert sorted(g.text for g in kannel.received()) == texts


def test_sigkill_mid_stream_never_duplicates_and_voids_only_unknowns(
        kannel: k.Kannel, tmp_path: Path) -> None:
    db, key = tmp_path / "radiusd.db", os.urandom(32)
    texts = seed(db, key, 60)
    proc = runner(db, key, kannel, lease=2.0)
    try:
        assert wait_for(lambda: sum(r[1] == "sent" for r in rows(db)) >= 10)
    finally:
        kill9(proc)  # in the middle of the stream
    proc = runner(db, key, kannel, lease=2.0)
    try:
        assert wait_for(lambda: all(r[1] in ("sent", "failed") for r in rows(db)))
    finally:
        kill9(proc)
    final = rows(db)
    time.sleep(0.3)
    got = Counter(g.text for g in kannel.wait_received(sum(r[1] == 'sent' for r in final)))
    assert max(got.values()) == 1, "an SMS was sent twice for one press"
    by_text = dict(zip(texts, final, strict=True))
    for text, (_id, state, _attempts, error) in by_text.items():
        if state == "sent":
            assert got[text] == 1
        else:  # killed between handing it to Kannel and recording the answer
            assert error is not None and "delivery unknown" in error
    unknown = [r for r in final if r[1] == "failed"]
    assert len(unknown) <= 8  # at most the sends in flight at the kill (concurrency)
