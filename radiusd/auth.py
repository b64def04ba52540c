"""Access-Request policy (placeholder until the OTP policy lands): reject, politely."""

from __future__ import annotations

from radiusd.radius.message import Outcome, Reply, Request


class RejectAll:
    async def authorize(self, request: Request, now: float) -> object | Outcome:
        return Reply.reject("Login is not available yet")

    async def authenticate(self, request: Request, context: object, now: float) -> bool:
        return False

    async def post_auth(self, request: Request, context: object, ok: bool, now: float) -> Outcome:
        return Reply.reject("Login is not available yet")
