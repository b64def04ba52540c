"""The server answers over loopback on both ports and both address families."""

import logging
from pathlib import Path

import pytest

from radiusd.app import Server
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import loopback_config, nas_for, running_server


async def test_status_server_answered_on_auth_and_acct(nas: SimulatedNAS) -> None:
    auth = await nas.send(nas.status_server("auth"))
    acct = await nas.send(nas.status_server("acct"), acct=True)
    assert auth.code == 2  # Access-Accept, RFC 5997 §3
    assert acct.code == 5  # Accounting-Response


async def test_ipv6_loopback_is_served(server: Server) -> None:
    nas6 = nas_for(server, family=6, timeout=0.5, retries=1)
    assert (await nas6.send(nas6.status_server())).code == 2


async def test_accounting_start_and_stop_are_stored(server: Server, nas: SimulatedNAS) -> None:
    sid = nas.new_session_id()
    await nas.send(nas.accounting_request("Start", user="+77012345678", session_id=sid))
    await nas.send(nas.accounting_request(
        "Stop", user="+77012345678", session_id=sid, Acct_Session_Time=60,
        Acct_Input_Octets=1000, Acct_Input_Gigawords=1, Acct_Terminate_Cause=1))
    row = await server.store.fetchone(
        "SELECT stopped_at, input_octets, terminate_cause FROM sessions WHERE acct_session_id=?",
        (sid,))
    assert row is not None
    assert row["stopped_at"] is not None
    assert row["input_octets"] == (1 << 32) + 1000
    assert row["terminate_cause"] == "User-Request"


async def test_startup_log_names_clients_but_not_the_default_secret(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_server(loopback_config(tmp_path)):
        pass
    assert "client localhost: 127.0.0.1, ::1" in caplog.text
    assert "well-known default secret" in caplog.text
    assert "testing123" not in caplog.text
