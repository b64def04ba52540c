"""Rules §4–§6: "Get password" through the controller's own login page (issue 4
items 1–2): the number is checked and normalised, a password is issued and its SMS
queued, and the NAS is told so in a Reply-Message."""

from pathlib import Path

import pytest
from otp_support import (
    ACCEPT,
    CHALLENGE,
    MAC,
    MASKED,
    PHONE,
    REJECT,
    SENT_EN,
    enter,
    get_password,
    nas_of,
    otp_server,
    password_rows,
    reply_message,
    sms_code,
    sms_count,
    sms_file_entries,
    sms_rows,
    sms_text,
)

from radiusd.app import Server
from radiusd.clock import ManualClock
from radiusd.testing.nas import SimulatedNAS
from radiusd.testing.server import eventually


@pytest.mark.parametrize("typed", ["8 701 234 56 78", "+7 (701) 234-56-78", "77012345678"])
async def test_typed_number_is_normalised_to_e164_and_gets_one_sms(
        server: Server, nas: SimulatedNAS, typed: str) -> None:
    answer = await get_password(nas, typed)
    assert answer.code == REJECT
    assert reply_message(answer) == SENT_EN
    rows = await sms_rows(server)
    assert [r["recipient"] for r in rows] == [PHONE]
    # Queued in the transaction that issued the password (Rules §6), so it is there
    # when the answer is; the outbox worker, woken by that commit, may already be
    # sending or have sent it: whichever, it is one SMS and it has not failed.
    assert rows[0]["state"] in ("queued", "sending", "sent")
    assert [r["login"] for r in await password_rows(server)] == [PHONE]
    # The user types the number the same way to log in.
    answer = await enter(nas, await sms_code(server, PHONE), typed)
    assert answer.code == ACCEPT


@pytest.mark.parametrize(("typed", "message"), [
    ("+7 727 250 00 00", "Only mobile numbers can receive a password"),
    ("8 727 250 00 00", "Only mobile numbers can receive a password"),
    ("+7 912 345 67 89", "Passwords are not sent to numbers of this country"),
    ("+44 7911 123456", "Passwords are not sent to numbers of this country"),
    ("hello", "That is not a phone number. Example: 8 701 234 56 78"),
    ("12345", "That is not a phone number. Example: 8 701 234 56 78"),
])
async def test_refused_number_is_told_why_and_gets_no_sms(
        server: Server, nas: SimulatedNAS, typed: str, message: str) -> None:
    answer = await get_password(nas, typed)
    assert answer.code == REJECT
    assert reply_message(answer) == message
    assert await sms_count(server) == 0
    assert await server.store.fetchall("SELECT id FROM passwords") == []


async def test_allowed_regions_config_lets_another_country_in(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, otp={"allowed_regions": ["KZ", "RU"]}) as server:
        nas = nas_of(server)
        answer = await get_password(nas, "+7 912 345 67 89")
        assert reply_message(answer) == "Password sent by SMS to +7 912 *** ** 89"
        assert [r["recipient"] for r in await sms_rows(server)] == ["+79123456789"]


async def test_pap_empty_password_gets_password_by_sms(
        server: Server, nas: SimulatedNAS) -> None:
    pkt = nas.access_request("8 701 234 56 78", "", mac=MAC)
    assert len(pkt["User-Password"][0]) == 16  # one all-zero block, hidden
    answer = await nas.send(pkt)
    assert answer.code == REJECT
    assert reply_message(answer) == f"Password sent by SMS to {MASKED}"
    assert len(await sms_rows(server, PHONE)) == 1
    text = await sms_text(server, PHONE)
    code = await sms_code(server, PHONE)
    assert text == f"Wi-Fi password: {code}"
    assert len(code) == 6
    (pw,) = await password_rows(server)
    assert pw["state"] == "issued"
    assert pw["request_device"] == "aabbccddee01"
    assert pw["request_nas"] == "localhost"


@pytest.mark.parametrize("chap_challenge", [True, False], ids=["chap-challenge", "authenticator"])
async def test_chap_over_empty_password_gets_password_by_sms(
        server: Server, nas: SimulatedNAS, chap_challenge: bool) -> None:
    """MikroTik http-chap sends CHAP computed over the empty password."""
    answer = await get_password(nas, chap=True, chap_challenge=chap_challenge)
    assert answer.code == REJECT
    assert reply_message(answer) == SENT_EN
    assert len(await sms_rows(server)) == 1
    code = await sms_code(server, PHONE)
    answer = await enter(nas, code, chap=True, chap_challenge=chap_challenge)
    assert answer.code == ACCEPT


async def test_no_password_attribute_at_all_asks_for_a_password(
        server: Server, nas: SimulatedNAS) -> None:
    """radclient drops `User-Password = ""`; a request with no password means the same."""
    answer = await nas.send(nas.access_request("8 701 234 56 78", None))
    assert answer.code == REJECT
    assert reply_message(answer) == "Password sent by SMS to +7 701 *** ** 78"
    assert await sms_count(server) == 1


async def test_unusable_pap_value_is_refused_without_sms(
        server: Server, nas: SimulatedNAS) -> None:
    """A User-Password that is not 16..128 octets in 16-octet blocks (RFC 2865 §5.2)."""
    pkt = nas.access_request("8 701 234 56 78", None)
    pkt["User-Password"] = b"\x01" * 5
    answer = await nas.send(pkt)
    assert answer.code == REJECT
    assert reply_message(answer) == "This login method is not supported (use PAP or CHAP)"
    assert await sms_count(server) == 0


async def test_empty_user_name_asks_for_the_number(server: Server, nas: SimulatedNAS) -> None:
    answer = await get_password(nas, " ")
    assert answer.code == REJECT
    assert reply_message(answer) == "Enter your mobile phone number"
    assert await sms_count(server) == 0


@pytest.mark.parametrize("user", ["AA:BB:CC:DD:EE:01", "aa-bb-cc-dd-ee-01", "aabbccddee01"])
@pytest.mark.parametrize("password", ["", "aabbccddee01"])
async def test_mac_address_user_name_is_rejected_without_sms(
        server: Server, nas: SimulatedNAS, user: str, password: str) -> None:
    """MAC authentication (MikroTik login-by=mac) never triggers an SMS."""
    answer = await nas.send(nas.access_request(user, password))
    assert answer.code == REJECT
    assert reply_message(answer) == "Log in with your phone number"
    assert await sms_count(server) == 0
    assert await server.store.fetchall("SELECT id FROM passwords") == []


def _challenge_client() -> list[dict[str, object]]:
    return [{"name": "chilli", "address": ["127.0.0.1", "::1"], "secret": "testing123",
             "otp_request": "challenge"}]


@pytest.mark.parametrize("chap", [False, True], ids=["pap", "chap"])
async def test_challenge_mode_answers_access_challenge_then_state_and_code_log_in(
        tmp_path: Path, clock: ManualClock, chap: bool) -> None:
    async with otp_server(tmp_path, clock, clients=_challenge_client()) as server:
        nas = nas_of(server)
        answer = await get_password(nas, chap=chap)
        assert answer.code == CHALLENGE
        assert reply_message(answer) == SENT_EN
        state = answer.get("State")
        assert isinstance(state, bytes) and state
        assert len(await sms_rows(server, PHONE)) == 1
        code = await sms_code(server, PHONE)
        answer = await enter(nas, code, chap=chap, extra=[("State", state)])
        assert answer.code == ACCEPT
        assert answer.get("Class")


async def test_challenge_mode_wrong_code_with_state_is_rejected(
        tmp_path: Path, clock: ManualClock) -> None:
    async with otp_server(tmp_path, clock, clients=_challenge_client()) as server:
        nas = nas_of(server)
        state = (await get_password(nas)).get("State")
        code = await sms_code(server, PHONE)
        wrong = "000000" if code != "000000" else "111111"
        answer = await enter(nas, wrong, extra=[("State", state)])
        assert answer.code == REJECT
        assert reply_message(answer) == "Wrong password"


async def test_sms_file_provider_gets_the_message_when_the_worker_runs(
        server: Server, nas: SimulatedNAS) -> None:
    if server.sms is None:
        pytest.skip("the SMS outbox worker is not in this build yet")
    await get_password(nas)
    code = await sms_code(server, PHONE)
    # Delivery is asynchronous: the request only queues it (Rules §6, same transaction).
    await eventually(lambda: bool(sms_file_entries(server)), limit=10.0)
    assert [e["to"] for e in sms_file_entries(server)] == [PHONE]
    assert code in sms_file_entries(server)[0]["text"]
