"""What the user reads, in Kazakh, Russian and English (issue 4 item 10):
`[otp] language` picks the Reply-Message and SMS language; the SMS carries the code."""

from pathlib import Path

import pytest
from otp_support import (
    ACCEPT,
    OTHER_MAC,
    PHONE,
    REJECT,
    enter,
    get_password,
    log_in,
    nas_of,
    otp_server,
    reply_message,
    sms_code,
    sms_text,
)

from radiusd.clock import ManualClock
from radiusd.messages import TEXTS

EXPECTED = {
    "en": {
        "sent": "Password sent by SMS to +7 701 *** ** 78",
        "sms": "Wi-Fi password: {code}",
        "not_a_number": "That is not a phone number. Example: 8 701 234 56 78",
        "wait": "You can ask for a new password in 60 s",
        "wrong": "Wrong password",
        "expired": 'This password is no longer valid. Press "Get password"',
        "mac": "Log in with your phone number",
    },
    "ru": {
        "sent": "Пароль отправлен по SMS на +7 701 *** ** 78",
        "sms": "Пароль Wi-Fi: {code}",
        "not_a_number": "Это не номер телефона. Пример: 8 701 234 56 78",
        "wait": "Новый пароль можно запросить через 60 с",
        "wrong": "Неверный пароль",
        "expired": "Пароль недействителен. Нажмите «Получить пароль»",
        "mac": "Для входа введите номер телефона",
    },
    "kk": {
        "sent": "Пароль SMS арқылы +7 701 *** ** 78 нөміріне жіберілді",
        "sms": "Wi-Fi паролі: {code}",
        "not_a_number": "Бұл телефон нөмірі емес. Мысалы: 8 701 234 56 78",
        "wait": "Жаңа парольді 60 секундтан кейін сұраңыз",
        "wrong": "Пароль қате",
        "expired": "Пароль жарамсыз. «Парольды алу» батырмасын басыңыз",
        "mac": "Кіру үшін телефон нөмірін енгізіңіз",
    },
}


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
async def test_user_reads_every_step_in_the_configured_language(
        tmp_path: Path, clock: ManualClock, language: str) -> None:
    want = EXPECTED[language]
    async with otp_server(tmp_path, clock, otp={"language": language}) as server:
        nas = nas_of(server)
        assert reply_message(await get_password(nas, "hello")) == want["not_a_number"]
        assert reply_message(await get_password(nas, "AA:BB:CC:DD:EE:01")) == want["mac"]
        answer = await get_password(nas)
        assert answer.code == REJECT
        assert reply_message(answer) == want["sent"]
        code = await sms_code(server, PHONE)
        assert await sms_text(server, PHONE) == want["sms"].format(code=code)
        assert reply_message(await get_password(nas)) == want["wait"]
        wrong = "".join(str((int(c) + 1) % 10) for c in code)
        assert reply_message(await enter(nas, wrong)) == want["wrong"]
        assert (await enter(nas, code)).code == ACCEPT
        # Another device gets the same answer as a wrong code: no oracle for guessers.
        assert reply_message(await enter(nas, code, mac=OTHER_MAC)) == want["wrong"]
        sid = nas.new_session_id()
        await nas.send(nas.accounting_request("Stop", user=PHONE, session_id=sid))
        assert reply_message(await enter(nas, code)) == want["expired"]


async def test_sms_template_from_config_carries_the_code(
        tmp_path: Path, clock: ManualClock) -> None:
    sms = {"templates": {"ru": "Код для Wi-Fi кафе: {code}. Никому не сообщайте."}}
    async with otp_server(tmp_path, clock, otp={"language": "ru"}, sms=sms) as server:
        nas = nas_of(server)
        await log_in(server, nas)
        code = await sms_code(server, PHONE)
        assert await sms_text(server, PHONE) == \
            f"Код для Wi-Fi кафе: {code}. Никому не сообщайте."


def test_every_message_exists_in_all_three_languages() -> None:
    for key, table in TEXTS.items():
        assert set(table) == {"kk", "ru", "en"}, key
        assert all(text.strip() for text in table.values()), key
