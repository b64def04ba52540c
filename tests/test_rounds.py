"""`backend.rounds`: a group commit's requests as one round trip per statement they
share, with the outcome of running them one after another (issue 12)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from radiusd.store import backend, passwords, sessions
from radiusd.store.backend import KEYED, Op, rounds


@pytest.fixture()
def keyed() -> Iterator[None]:
    saved = dict(KEYED)
    KEYED.update({"A": lambda p: ("k", p[0]), "B": lambda p: ("k", p[0]),
                  "C": lambda p: ("other", p[0])})
    yield
    KEYED.clear()
    KEYED.update(saved)


def test_requests_that_look_alike_take_a_round_per_statement(keyed: None) -> None:
    starts = [[("A", (n,)), ("B", (n,)), ("C", (n,))] for n in range(5)]
    assert list(rounds(starts)) == [("A", [(n,) for n in range(5)]),
                                    ("B", [(n,) for n in range(5)]),
                                    ("C", [(n,) for n in range(5)])]


def test_each_request_keeps_its_own_order(keyed: None) -> None:
    got = list(rounds([[("A", (1,)), ("B", (1,))], [("B", (2,)), ("A", (2,))],
                       [("B", (3,))]]))
    assert got == [("A", [(1,)]), ("B", [(1,), (2,), (3,)]), ("A", [(2,)])]
    for n in (1, 2):  # request 2's B before its A, request 1's A before its B
        order = [(sql, p) for sql, ps in got for p in ps if p == (n,)]
        assert order == ([("A", (1,)), ("B", (1,))] if n == 1 else [("B", (2,)), ("A", (2,))])


def test_a_stop_queued_before_starts_shares_their_record_round(keyed: None) -> None:
    """A round takes a head statement no request needs further down: the Starts'
    retire first, then one record for the Stop and the Starts, then seen. Taking the
    Stop's record first (the earliest head) would give 4 rounds."""
    stop = [("B", (0,))]
    starts = [[("A", (n,)), ("B", (n,)), ("C", (n,))] for n in (1, 2)]
    assert list(rounds([stop, *starts])) == [("A", [(1,), (2,)]),
                                             ("B", [(0,), (1,), (2,)]),
                                             ("C", [(1,), (2,)])]


def test_requests_that_share_a_key_keep_the_queue_order(keyed: None) -> None:
    # The second touches what the first does: it runs after all of the first.
    got = list(rounds([[("A", (1,)), ("B", (1,))], [("A", (1,)), ("B", (1,))]]))
    assert got == [("A", [(1,)]), ("B", [(1,)]), ("A", [(1,)]), ("B", [(1,)])]
    # The same value in another key's namespace is another row.
    assert list(rounds([[("A", (1,))], [("C", (1,))]])) == [("A", [(1,)]), ("C", [(1,)])]


def test_the_same_statement_in_a_row_is_one_call_as_before(keyed: None) -> None:
    """Requests that are not keyed still share a call for consecutive ops of one
    statement (e.g. the outbox cancelling many rows in one write)."""
    assert list(rounds([[("X", (1,)), ("X", (2,))], [("X", (3,))], [("A", (4,))]])) == [
        ("X", [(1,), (2,), (3,)]), ("A", [(4,)])]


def test_any_other_statement_is_a_barrier(keyed: None) -> None:
    got = list(rounds([[("A", (1,))], [("X", (9,)), ("A", (2,))], [("A", (3,))],
                       [("A", (4,))]]))
    # X runs alone, in its place; what follows it in a row is one call again.
    assert got == [("A", [(1,)]), ("X", [(9,)]), ("A", [(2,), (3,), (4,)])]
    assert list(rounds([[("A", (1,))], [("X", (9,))], [("C", (2,))], [("A", (3,))]])) == [
        ("A", [(1,)]), ("X", [(9,)]), ("C", [(2,)]), ("A", [(3,)])]


def test_no_requests_no_rounds() -> None:
    assert list(rounds([])) == []
    assert list(rounds([[]])) == []


def test_accounting_statements_are_keyed_by_their_session() -> None:
    """Starts and Stops of different sessions commute; the same session twice in one
    batch does not."""
    def start(uid: str, login: str) -> list[Op]:
        return [sessions.retire(uid), _record(uid, login, None),
                passwords.seen_by_login(login, "aabbccddeeff", 1.0)]

    batch = [start(f"nas:{n}:h", f"+7701000000{n}") for n in range(4)]
    assert [len(p) for _, p in rounds(batch)] == [4, 4, 4]
    # One login's Starts on several sessions: its first-seen time is set once, either
    # Start's, so they still go together.
    batch = [start(f"nas:{n}:h", "+77010000001") for n in range(4)]
    assert [len(p) for _, p in rounds(batch)] == [4, 4, 4]
    # A NAS that echoes Class: the same, by the Class.
    batch = [[sessions.retire(f"nas:{n}:h"), _record(f"nas:{n}:h", "+77010000001", None),
              passwords.seen_by_class(f"rd1:{n}", 1.0)] for n in range(4)]
    assert [len(p) for _, p in rounds(batch)] == [4, 4, 4]
    same = [start("nas:1:h", "+77010000001"), [_record("nas:1:h", "+77010000001", 9.0)]]
    assert [len(p) for _, p in rounds(same)] == [1, 1, 1, 1]
    assert backend.KEYED  # the store modules registered theirs on import


def _record(uid: str, login: str, stopped: float | None) -> Op:
    return sessions.record(unique_id=uid, login=login, device="aabbccddeeff", nas="nas",
                           nas_address="127.0.0.1", acct_session_id=uid.split(":")[1],
                           framed_ip=None, started_at=0.0, updated_at=1.0,
                           stopped_at=stopped, session_time=0, input_octets=0,
                           output_octets=0, input_packets=0, output_packets=0,
                           terminate_cause=None, class_token=None)


def test_the_rounds_give_what_one_after_another_gives(tmp_path: object) -> None:
    """A batch with a Start and a Stop of the same session, and other sessions', run
    round by round and one op after another: the same rows."""
    from radiusd.store.sqlite import connect_sync

    def start(uid: str) -> list[Op]:
        return [sessions.retire(uid), _record(uid, "+77010000001", None)]

    batch = [start("nas:1:h"), start("nas:2:h"), [_record("nas:1:h", "+77010000001", 5.0)],
             start("nas:1:h"), start("nas:3:h"), [_record("nas:3:h", "+77010000001", 6.0)]]
    got = []
    for grouped in (True, False):
        conn: sqlite3.Connection = connect_sync(":memory:")
        if grouped:
            for sql, params in rounds(batch):
                conn.executemany(sql, params)
        else:
            for ops in batch:
                for sql, params in ops:
                    conn.execute(sql, params)
        got.append(conn.execute("SELECT unique_id, stopped_at FROM sessions"
                                " ORDER BY id").fetchall())
        conn.close()
    assert got[0] == got[1]
    assert ("nas:1:h", None) in got[0]  # the session started again after its Stop
