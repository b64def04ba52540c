"""What users read: Reply-Message texts and the SMS, in Kazakh, Russian and English.

Reply-Message is what MikroTik shows as `$(error)` and CoovaChilli hands to the portal,
so each text is short and says what to do next. The SMS fits one UCS-2 segment
(70 characters) with a 12-digit code.
"""

from __future__ import annotations

from typing import Literal

Language = Literal["kk", "ru", "en"]

TEXTS: dict[str, dict[str, str]] = {
    "sms_sent": {
        "kk": "Пароль SMS арқылы {phone} нөміріне жіберілді",
        "ru": "Пароль отправлен по SMS на {phone}",
        "en": "Password sent by SMS to {phone}",
    },
    "sms_text": {
        "kk": "Wi-Fi паролі: {code}",
        "ru": "Пароль Wi-Fi: {code}",
        "en": "Wi-Fi password: {code}",
    },
    "enter_code": {
        "kk": "SMS-тегі парольді енгізіңіз",
        "ru": "Введите пароль из SMS",
        "en": "Enter the password from the SMS",
    },
    "no_login": {
        "kk": "Ұялы телефон нөмірін енгізіңіз",
        "ru": "Введите номер мобильного телефона",
        "en": "Enter your mobile phone number",
    },
    "not_a_number": {
        "kk": "Бұл телефон нөмірі емес. Мысалы: 8 701 234 56 78",
        "ru": "Это не номер телефона. Пример: 8 701 234 56 78",
        "en": "That is not a phone number. Example: 8 701 234 56 78",
    },
    "not_mobile": {
        "kk": "Тек ұялы телефон нөмірі қабылданады",
        "ru": "Нужен номер мобильного телефона",
        "en": "Only mobile numbers can receive a password",
    },
    "region_not_allowed": {
        "kk": "Бұл елдің нөмірлеріне пароль жіберілмейді",
        "ru": "На номера этой страны пароль не отправляется",
        "en": "Passwords are not sent to numbers of this country",
    },
    "mac_login": {
        "kk": "Кіру үшін телефон нөмірін енгізіңіз",
        "ru": "Для входа введите номер телефона",
        "en": "Log in with your phone number",
    },
    "resend_wait": {
        "kk": "Жаңа парольді {seconds} секундтан кейін сұраңыз",
        "ru": "Новый пароль можно запросить через {seconds} с",
        "en": "You can ask for a new password in {seconds} s",
    },
    "number_limit": {
        "kk": "Бұл нөмірге пароль тым жиі сұралды. Кейінірек көріңіз",
        "ru": "Слишком много запросов пароля на этот номер. Попробуйте позже",
        "en": "Too many passwords for this number. Try again later",
    },
    "device_limit": {
        "kk": "Бұл құрылғыдан тым көп сұрау. Кейінірек көріңіз",
        "ru": "Слишком много запросов с этого устройства. Попробуйте позже",
        "en": "Too many requests from this device. Try again later",
    },
    "busy": {
        "kk": "Қызмет бос емес. Бір минуттан кейін көріңіз",
        "ru": "Сервис занят. Попробуйте через минуту",
        "en": "The service is busy. Try again in a minute",
    },
    "sms_unavailable": {
        "kk": "Бүгін мұнда SMS арқылы кіру қолжетімсіз. Қызметкерлерге жүгініңіз",
        "ru": "Вход по SMS здесь сегодня недоступен. Обратитесь к персоналу",
        "en": "SMS login is not available here today. Please ask the staff",
    },
    "daily_time_used": {
        "kk": "Бүгінгі Wi-Fi уақыты таусылды. Ертең келіңіз",
        "ru": "Время Wi-Fi на сегодня закончилось. Приходите завтра",
        "en": "Your Wi-Fi time for today is used up. Come back tomorrow",
    },
    "device_guess_limit": {
        "kk": "Бұл құрылғыдан қате пароль тым көп. {minutes} минуттан кейін көріңіз",
        "ru": "Слишком много неверных паролей с этого устройства. Попробуйте через "
              "{minutes} мин",
        "en": "Too many wrong passwords from this device. Try again in {minutes} min",
    },
    "nas_guess_limit": {
        "kk": "Бұл кіру нүктесінде қате пароль тым көп. {minutes} минуттан кейін көріңіз",
        "ru": "Слишком много неверных паролей на этой точке доступа. Попробуйте через "
              "{minutes} мин",
        "en": "Too many wrong passwords at this access point. Try again in {minutes} min",
    },
    "wrong_password": {
        "kk": "Пароль қате",
        "ru": "Неверный пароль",
        "en": "Wrong password",
    },
    "password_expired": {
        "kk": "Пароль жарамсыз. «Парольды алу» батырмасын басыңыз",
        "ru": "Пароль недействителен. Нажмите «Получить пароль»",
        "en": "This password is no longer valid. Press \"Get password\"",
    },
    "too_many_attempts": {
        "kk": "Қате әрекеттер тым көп. Жаңа пароль сұраңыз",
        "ru": "Слишком много неверных попыток. Запросите новый пароль",
        "en": "Too many wrong tries. Ask for a new password",
    },
    "sms_failed": {
        "kk": "SMS жеткізілмеді. Қайта көріңіз",
        "ru": "Не удалось доставить SMS. Попробуйте ещё раз",
        "en": "The SMS could not be delivered. Please try again",
    },
    "unsigned_request": {
        "kk": "Бұл кіру нүктесінің контроллері сұрауларға қол қоймайды (Message-Authenticator)",
        "ru": "Контроллер этой точки доступа не подписывает запросы (Message-Authenticator)",
        "en": "This access point's controller does not sign its requests "
              "(Message-Authenticator)",
    },
    "number_blocked": {
        "kk": "Бұл нөмірге Wi-Fi жабық. Әкімшіге хабарласыңыз",
        "ru": "Для этого номера доступ к Wi-Fi закрыт. Обратитесь к администратору",
        "en": "Wi-Fi access is blocked for this number. Please contact the staff",
    },
    "unsupported_method": {
        "kk": "Бұл кіру әдісіне қолдау көрсетілмейді (PAP немесе CHAP керек)",
        "ru": "Этот способ входа не поддерживается (нужен PAP или CHAP)",
        "en": "This login method is not supported (use PAP or CHAP)",
    },
}


def text(key: str, language: str, **values: object) -> str:
    table = TEXTS[key]
    template = table.get(language) or table["en"]
    return template.format(**values)


def sms_text(language: str, code: str, templates: dict[str, str] | None = None) -> str:
    template = (templates or {}).get(language) or TEXTS["sms_text"].get(language) \
        or TEXTS["sms_text"]["en"]
    return template.replace("{code}", code)
