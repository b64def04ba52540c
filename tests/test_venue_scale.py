"""Issue 15 item 4: many venues and clients. The client lookup is a longest-prefix
match over IPv4 and IPv6 entries (its cost bounded by the prefix lengths in use, not
the number of entries: bench/venues.py measures it); a config of 1,000 venues and
10,000 clients loads and serves. Outcomes here, timings in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from otp_support import REJECT, get_password, reply_message

from radiusd.clock import ManualClock
from radiusd.config import ClientConfig, load
from radiusd.radius.clients import ClientTable
from radiusd.testing.server import nas_for, running_server
from tests.test_serve_process import local_files


def _client(name: str, address: str | list[str]) -> ClientConfig:
    return ClientConfig(name=name, address=address, secret="a-long-enough-secret-1")


def test_the_longest_prefix_wins_in_either_family() -> None:
    table = ClientTable([
        _client("campus", ["10.0.0.0/8", "2001:db8::/32"]),
        _client("building", ["10.1.0.0/16", "2001:db8:1::/48"]),
        _client("router", ["10.1.2.3", "2001:db8:1::7"]),
        _client("everything-v6", "::/0"),
    ])
    found = {ip: getattr(table.find(ip), "name", None) for ip in (
        "10.9.9.9", "10.1.9.9", "10.1.2.3", "10.1.2.4", "192.0.2.1",
        "2001:db8:2::1", "2001:db8:1::8", "2001:db8:1::7", "2001:db9::1",
        "::ffff:10.1.2.3", "fe80::1%eth0")}
    assert found == {
        "10.9.9.9": "campus", "10.1.9.9": "building", "10.1.2.3": "router",
        "10.1.2.4": "building", "192.0.2.1": None,
        "2001:db8:2::1": "campus", "2001:db8:1::8": "building", "2001:db8:1::7": "router",
        "2001:db9::1": "everything-v6",
        "::ffff:10.1.2.3": "router",  # an IPv4-mapped source is its IPv4 address
        "fe80::1%eth0": "everything-v6",
    }


def test_the_first_client_listed_for_a_network_answers() -> None:
    table = ClientTable([_client("first", "10.0.0.0/24"), _client("second", "10.0.0.0/24")])
    assert getattr(table.find("10.0.0.5"), "name", None) == "first"


def write_big(path: Path, tmp: Path, clients: int = 10_000, venues: int = 1_000) -> None:
    """`clients` NAS (IPv4 /24s and /32s, IPv6 /48s), ten to a venue."""
    out = [f"""
[server]
auth_listen = ["127.0.0.1:0"]
acct_listen = ["127.0.0.1:0"]
{local_files(tmp)}
"""]
    for i in range(clients):
        address = (f"2001:db8:{i:x}::/48", f"10.{i // 256 % 256}.{i % 256}.0/24",
                   f"172.16.{i // 256 % 256}.{i % 256}")[i % 3]
        out.append(f'[[clients]]\nname = "nas-{i}"\naddress = "{address}"\n'
                   f'secret = "a-long-enough-secret-{i:05d}"\n')
    # The test's own NAS, on loopback, is the last client of the last venue.
    out.append('[[clients]]\nname = "loopback"\naddress = "127.0.0.1"\n'
               'secret = "testing123"\n')
    for v in range(venues):
        names = [f'"nas-{i}"' for i in range(v * 10, min(clients, v * 10 + 10))]
        if v == venues - 1:
            names.append('"loopback"')
        out.append(f'[[venues]]\nname = "venue-{v}"\nclients = [{", ".join(names)}]\n'
                   f'language = "{("en", "ru", "kk")[v % 3]}"\nsms_daily_budget = 100\n')
    path.write_text("\n".join(out))


async def test_a_thousand_venues_and_ten_thousand_clients_load_and_serve(
        tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "radiusd.toml"
    write_big(path, tmp_path)
    config = load(path)
    assert len(config.clients) == 10_001 and len(config.venues) == 1_000
    async with running_server(config, clock) as server:
        assert getattr(server.clients.find("10.3.7.200"), "name", None) == f"nas-{3 * 256 + 7}"
        assert getattr(server.clients.find("2001:db8:2a::9"), "name", None) == "nas-42"
        assert server.auth.venues.of_client("nas-42").name == "venue-4"
        answer = await get_password(nas_for(server, timeout=2.0), "8 701 234 56 78")
        assert answer.code == REJECT
        # venue-999's language: 999 % 3 == 0, English
        assert reply_message(answer) == "Password sent by SMS to +7 701 *** ** 78"
