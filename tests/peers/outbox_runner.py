"""The outbox worker alone in a process, so that a test can SIGKILL it mid-flight.

    python -m tests.peers.outbox_runner DB KEY_B64 KANNEL_URL USER PASSWORD [LEASE]

Prints READY, then delivers until killed (SystemClock, short backoff)."""

from __future__ import annotations

import asyncio
import base64
import random
import sys

from radiusd.clock import SystemClock
from radiusd.config import SmsKannelConfig
from radiusd.sealing import Sealer
from radiusd.sms.kannel import KannelProvider
from radiusd.sms.outbox import OutboxWorker
from radiusd.store.sqlite import Store


async def main(db: str, key: str, url: str, user: str, password: str, lease: float) -> None:
    store = Store(db)
    await store.open()
    provider = KannelProvider(SmsKannelConfig(url=url, username=user, password=password,
                                              timeout_seconds=2))
    worker = OutboxWorker(store, provider, Sealer(base64.b64decode(key)), SystemClock(), 600,
                          lambda _pid, _now: [], backoff_base=0.2, backoff_max=0.5,
                          send_timeout=lease / 2, lease_seconds=lease, idle_poll=0.2,
                          rng=random.Random())
    print("READY", flush=True)
    await worker.run()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], a[4], float(a[5]) if len(a) > 5 else 60.0))
