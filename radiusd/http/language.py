"""Which of the country's languages to speak: Kazakh, Russian or English."""

from __future__ import annotations

LANGUAGES = ("kk", "ru", "en")


def pick_language(explicit: str | None, accept_language: str | None, default: str) -> str:
    """An explicit choice (the switch, ?lang=) wins, then Accept-Language (RFC 9110
    §12.5.4, by q), then the configured default."""
    if explicit in LANGUAGES:
        return explicit
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0:
            ranked.append((-q, i, primary))
    return min(ranked)[2] if ranked else default
