"""From a checked request to an outcome: the one place where packets meet policy.

The stages are the ones FreeRADIUS's `sites-available/default` made familiar:
``authorize`` -> ``authenticate`` -> ``post_auth`` for Access-Request, ``preacct`` ->
``accounting`` for Accounting-Request. Status-Server (RFC 5997) is answered here,
only while this server can serve (`Health`).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from radiusd.clock import Clock
from radiusd.health import Health
from radiusd.radius.endpoint import Port
from radiusd.radius.message import Drop, Outcome, Reply, Request
from radiusd.radius.wire import Code

Context = TypeVar("Context")  # what `authorize` found, handed to the next stages
Record = TypeVar("Record")  # what `preacct` read from the packet, handed to `accounting`


class AuthPolicy(Protocol[Context]):
    """Access-Request stages. ``authorize`` may answer at once (a reject, a challenge,
    "password sent by SMS"); otherwise its context flows through the next stages."""

    async def authorize(self, request: Request, now: float) -> Context | Outcome: ...

    async def authenticate(self, request: Request, context: Context, now: float) -> bool: ...

    async def post_auth(
        self, request: Request, context: Context, ok: bool, now: float
    ) -> Outcome: ...


class AccountingPolicy(Protocol[Record]):
    """Accounting-Request stages. The Accounting-Response is returned only after the
    record is committed (RFC 2866 §2: the server MUST NOT reply before it has
    successfully recorded the packet)."""

    def preacct(self, request: Request, now: float) -> Record | Drop: ...

    async def accounting(self, request: Request, record: Record, now: float) -> Outcome: ...


class Dispatcher(Generic[Context, Record]):
    # What a request needs working for Status-Server to be answered. SMS is not one:
    # logins, accounting and codes already sent go on without it.
    STATUS_SERVER_NEEDS = ("store",)

    def __init__(self, auth: AuthPolicy[Context], accounting: AccountingPolicy[Record],
                 clock: Clock, health: Health | None = None) -> None:
        self.auth = auth
        self.accounting = accounting
        self.clock = clock
        self.health = health or Health()

    async def __call__(self, request: Request, port: Port) -> Outcome:
        code = request.code
        if code in (Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST) \
                and not self.health.ok("store"):
            # Issue 12 item 5: a server that cannot reach its database answers nothing
            # (dropped, counted "store_failing"), so the NAS fails over to its other
            # server instead of rejecting users it cannot check.
            return Drop("store_failing")
        if code in (Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST):
            try:
                if code == Code.ACCESS_REQUEST:
                    return await self.access_request(request)
                return await self.accounting_request(request)
            except Exception:
                if not self.health.ok("store"):
                    # The database went away while this request was at it: the same
                    # silence as above (the store logged the outage once), not a
                    # policy error per request.
                    return Drop("store_failing")
                raise
        if code == Code.STATUS_SERVER:
            return self.status_server(port)
        return Drop("unexpected_code")

    async def access_request(self, request: Request) -> Outcome:
        now = self.clock.now()
        context = await self.auth.authorize(request, now)
        if isinstance(context, Reply | Drop):
            return context
        ok = await self.auth.authenticate(request, context, now)
        return await self.auth.post_auth(request, context, ok, now)

    async def accounting_request(self, request: Request) -> Outcome:
        now = self.clock.now()
        record = self.accounting.preacct(request, now)
        if isinstance(record, Drop):
            return record
        return await self.accounting.accounting(request, record, now)

    def status_server(self, port: Port) -> Outcome:
        """RFC 5997 §3: Access-Accept on the auth port, Accounting-Response on acct;
        no answer while the store cannot commit (RFC 5997 §4: the watchdog must
        reflect the ability to serve, so that NAS fail over to another server)."""
        for part in self.STATUS_SERVER_NEEDS:
            if not self.health.ok(part):
                return Drop(f"{part}_failing")
        return Reply(Code.ACCESS_ACCEPT if port == "auth" else Code.ACCOUNTING_RESPONSE)
