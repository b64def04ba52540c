"""Issue 15 item 5: per-venue figures. /metrics counts logins, SMS and refusals by
venue (the configured names only); `radiusd venues report` prints them per venue and
day, from what the server wrote."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from otp_support import ACCEPT, enter, get_password, reply_message, sms_code

from radiusd.cli import main
from radiusd.clock import ManualClock
from radiusd.config import load
from radiusd.testing.server import nas_for, running_server
from tests.test_serve_process import local_files

CAFE, AIRPORT = "127.0.0.1", "127.0.0.2"


def write(path: Path, tmp: Path) -> None:
    path.write_text(f"""
[server]
auth_listen = ["127.0.0.1:0"]
acct_listen = ["127.0.0.1:0"]
{local_files(tmp)}
[http]
listen = ["127.0.0.1:0"]

[[clients]]
name = "cafe"
address = "{CAFE}"
secret = "testing123"
[[clients]]
name = "airport"
address = "{AIRPORT}"
secret = "testing123"
[[clients]]
name = "lobby"
address = "127.0.0.9"
secret = "testing123"

[[venues]]
name = "cafe"
clients = ["cafe"]
timezone = "Asia/Almaty"
[[venues]]
name = "airport"
clients = ["airport"]
timezone = "Asia/Almaty"
sms_daily_budget = 1
""")


async def test_metrics_and_the_report_count_per_venue(
        tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]) -> None:
    clock.set(1_796_529_600.0)  # 2026-12-06 09:00 in Almaty
    path = tmp_path / "radiusd.toml"
    write(path, tmp_path)
    async with running_server(load(path), clock) as server:
        cafe = nas_for(server, source=CAFE, timeout=1.0)
        airport = nas_for(server, source=AIRPORT, timeout=1.0)
        user = "8 701 234 56 78"
        assert (await get_password(cafe, user)).code == 3
        assert reply_message(await get_password(cafe, user)).startswith("You can ask")
        answer = await enter(cafe, await sms_code(server, "+77012345678"), user)
        assert answer.code == ACCEPT
        assert reply_message(await get_password(airport, "8 701 000 00 01")).startswith(
            "Password sent")
        assert reply_message(await get_password(airport, "8 701 000 00 02")).startswith(
            "SMS login is not available")
        assert server.http is not None
        async with aiohttp.ClientSession() as s, s.get(server.http.metrics_url()) as r:
            metrics = set((await r.text()).splitlines())
    assert {
        'radiusd_venue_logins_total{venue="cafe"} 1',
        'radiusd_venue_logins_total{venue="airport"} 0',
        'radiusd_venue_sms_total{venue="cafe"} 1',
        'radiusd_venue_sms_total{venue="airport"} 1',
        'radiusd_venue_refused_total{venue="airport",reason="sms_daily_budget"} 1',
        'radiusd_venue_refused_total{venue="cafe",reason="resend_wait"} 1',
    } <= metrics

    assert main(["venues", "report", "-c", str(path), "--from", "2026-12-06",
                 "--to", "2026-12-06", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"venue": "airport", "day": "2026-12-06", "sms_sent": 1, "logins": 0, "numbers": 0,
         "refused": {"sms_daily_budget": 1}},
        {"venue": "cafe", "day": "2026-12-06", "sms_sent": 1, "logins": 1, "numbers": 1,
         "refused": {"resend_wait": 1}},
    ]
    assert main(["venues", "report", "-c", str(path), "--from", "2026-12-06",
                 "--to", "2026-12-06"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "venue,day,sms_sent,logins,numbers,refused",
        "airport,2026-12-06,1,0,0,sms_daily_budget=1",
        "cafe,2026-12-06,1,1,1,resend_wait=1",
    ]


def test_the_report_says_how_to_write_a_date(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "radiusd.toml"
    write(path, tmp_path)
    assert main(["venues", "report", "-c", str(path), "--from", "yesterday"]) == 2
    assert "--from: 'yesterday' is not a date; write it as 2026-12-06" in \
        capsys.readouterr().err


def test_the_journal_records_the_venue_and_exports_by_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "radiusd.toml"
    write(path, tmp_path)
    base = ["journal", "open", "-c", str(path), "--surname", "Ким", "--name", "Ли"]
    assert main(["db", "init", "-c", str(path)]) == 0
    capsys.readouterr()
    assert main([*base, "--computer", "1"]) == 2
    assert "--venue is missing: this config has venues; type radiusd journal open ... " \
           "--venue NAME (one of: cafe, airport)" in capsys.readouterr().err
    assert main([*base, "--computer", "1", "--venue", "lobby"]) == 2
    assert "--venue: 'lobby' is not a venue of this config (one of: cafe, airport)" in \
        capsys.readouterr().err
    assert main([*base, "--computer", "1", "--venue", "cafe"]) == 0
    assert main([*base, "--computer", "2", "--venue", "airport"]) == 0
    capsys.readouterr()
    assert main(["journal", "export", "-c", str(path), "--venue", "airport",
                 "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["computer"] == "2" and entry["venue"] == "airport"
    assert main(["journal", "list", "-c", str(path), "--venue", "cafe"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[1].split()[4] == "1"  # the header; computer 1
