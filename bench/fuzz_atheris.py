#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the wire decoder, the endpoint and
the real policy, for long local runs. CI runs the seeded mutation fuzzer in
tests/test_fuzz_endpoint.py instead (bounded, no extra package).

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz_atheris.py tests/fuzz_corpus -max_total_time=3600
    .venv/bin/python bench/fuzz_atheris.py --replay crash-*    # no atheris needed

Each input is one datagram. It goes to the accounting port when it is an
Accounting-Request (or a Status-Server with an odd Identifier), else to the
authentication port; from the signing NAS when its Identifier is even, else from
the old NAS that never signs. It is re-signed with the shared secret first, so that
what libFuzzer changes gets past authentication into the policy. A raised exception
or a reply that does not verify is a crash (libFuzzer saves the input).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_fuzz_endpoint import (  # noqa: E402
    SIGNED,
    UNSIGNED,
    check_reply,
    fuzz_config,
    resign,
)

from radiusd.app import Server  # noqa: E402
from radiusd.radius import wire  # noqa: E402
from radiusd.radius.endpoint import Port, Process, Resend  # noqa: E402
from radiusd.radius.message import Drop  # noqa: E402


class Target:
    """One server on loopback for the whole run, driven without its sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory(prefix="radiusd-fuzz-")
        self.server = Server(fuzz_config(Path(self.tmp.name)))
        self.loop.run_until_complete(self.server.start())
        self.endpoints = {ls.endpoint.port: ls.endpoint for ls in self.server.listeners}

    def one(self, data: bytes) -> None:
        data = resign(data)
        acct = len(data) > 1 and (data[0] == wire.Code.ACCOUNTING_REQUEST or (
            data[0] == wire.Code.STATUS_SERVER and data[1] % 2 == 1))
        port: Port = "acct" if acct else "auth"
        source = SIGNED if len(data) < 2 or data[1] % 2 == 0 else UNSIGNED
        endpoint = self.endpoints[port]
        action = endpoint.receive(data, source, self.loop.time())
        if isinstance(action, Resend | Drop):
            return
        assert isinstance(action, Process)
        dispatcher = self.server.dispatcher
        assert dispatcher is not None
        outcome = self.loop.run_until_complete(dispatcher(action.request, port))
        reply = endpoint.finish(action, outcome, self.loop.time())
        if reply is not None:
            check_reply(data, reply, port)

    def close(self) -> None:
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()
        self.tmp.cleanup()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--replay"]:
        target = Target()
        try:
            files = [p for a in argv[1:] for p in
                     (sorted(Path(a).glob("*.bin")) if Path(a).is_dir() else [Path(a)])]
            for path in files:
                target.one(path.read_bytes())
                print(f"ok {path}")
        finally:
            target.close()
        return 0
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris\n"
              "or run the seeded fuzzer longer: RADIUSD_FUZZ_ITERATIONS=1000000 "
              "RADIUSD_FUZZ_SECONDS=600 .venv/bin/python -m pytest tests/test_fuzz_endpoint.py",
              file=sys.stderr)
        return 2
    target = Target()
    atheris.Setup([sys.argv[0], *argv], target.one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
