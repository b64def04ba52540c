"""Seeded fuzzing of the RadSec TCP framing (RFC 6614 §2.4, issue 16 item 4).

Two layers. The sans-IO `Framer` gets random streams cut at random places and must
return exactly the packets a reference cutter finds, or raise `Malformed` where the
reference says the framing is lost. Then the real server with a RadSec listener gets,
over TLS connections, partial frames, Length 0 and 4,096+ headers, garbage, valid
packets cut into random pieces and a packet a byte at a time: what must hold is that
nothing raises inside the server (no ``internal_error``), a connection whose framing
broke is closed (that connection only), and the server still answers at the end.

Deterministic (a fixed seed) and bounded by count and by wall clock::

    RADIUSD_FUZZ_SEED=7 RADIUSD_RADSEC_FUZZ_ITERATIONS=5000 RADIUSD_FUZZ_SECONDS=120 \\
        .venv/bin/python -m pytest -q tests/test_radsec_fuzz.py

A failure names the seed and the case.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from radiusd.radius.radsec import Framer
from radiusd.radius.wire import Malformed
from tests.radsec_support import (
    Pki,
    RadsecNas,
    address,
    client_context,
    make_pki,
    radsec_config,
    radsec_server,
)

SEED = int(os.environ.get("RADIUSD_FUZZ_SEED", "11"))
ITERATIONS = int(os.environ.get("RADIUSD_RADSEC_FUZZ_ITERATIONS", "300"))
FRAMER_ITERATIONS = int(os.environ.get("RADIUSD_RADSEC_FRAMER_ITERATIONS", "3000"))
SECONDS = float(os.environ.get("RADIUSD_FUZZ_SECONDS", "6"))


def reference_cut(stream: bytes) -> tuple[list[bytes], bool]:
    """The packets in ``stream`` and whether its framing breaks (a Length below 20 or
    above 4,096 in a complete header)."""
    out, i = [], 0
    while len(stream) - i >= 4:
        length = int.from_bytes(stream[i + 2:i + 4], "big")
        if length < 20 or length > 4096:
            return out, True
        if len(stream) - i < length:
            break
        out.append(stream[i:i + length])
        i += length
    return out, False


def random_packet(rng: random.Random) -> bytes:
    length = rng.choice([20, 21, rng.randint(20, 200), rng.randint(20, 4096), 4096])
    return bytes((rng.randint(0, 255), rng.randint(0, 255))) + length.to_bytes(2, "big") \
        + rng.randbytes(length - 4)


def bad_header(rng: random.Random) -> bytes:
    length = rng.choice([0, 1, 4, 19, 4097, 4100, 65535, rng.randint(0, 19),
                         rng.randint(4097, 65535)])
    return bytes((rng.randint(0, 255), 0)) + length.to_bytes(2, "big")


def test_framer_cuts_random_streams_as_the_reference_does() -> None:
    rng = random.Random(SEED)
    deadline = time.monotonic() + SECONDS
    for case in range(FRAMER_ITERATIONS):
        if time.monotonic() > deadline:
            break
        parts = [random_packet(rng) for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.3:
            parts.insert(rng.randint(0, len(parts)), bad_header(rng))
        if rng.random() < 0.2:
            parts.append(rng.randbytes(rng.randint(1, 30)))
        stream = b"".join(parts)
        expected, broken = reference_cut(stream)
        framer, got = Framer(), []
        i, failed = 0, False
        while i < len(stream):
            step = rng.choice([1, 2, 3, rng.randint(1, 64), rng.randint(1, 5000)])
            try:
                got += framer.feed(stream[i:i + step])
            except Malformed:
                failed = True
                break
            i += step
        where = f"seed {SEED} case {case}: {stream[:64].hex()}..."
        assert failed == broken, where
        if broken:
            assert got == expected[:len(got)], where
        else:
            assert got == expected, where
            assert framer.pending == len(stream) - sum(map(len, expected)), where


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_the_server_survives_fuzzed_streams_and_still_answers(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from radiusd.radius.radsec_listener import RadsecListener

    monkeypatch.setattr(RadsecListener, "FRAME_SECONDS", 0.1)  # stalled frames end soon
    rng = random.Random(SEED)
    config = radsec_config(tmp_path, pki, max_connections_per_address=64)
    async with radsec_server(config) as server:
        where, ctx = address(server), client_context(pki.ca, pki.nas)
        nas = await RadsecNas.connect(where, ctx)
        deadline = time.monotonic() + SECONDS
        kinds: dict[str, int] = {}
        reconnects = 0
        for case in range(ITERATIONS):
            if time.monotonic() > deadline:
                break
            kind = rng.choice(["valid_split", "garbage", "bad_length", "partial",
                               "byte_at_a_time", "random_packet"])
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "valid_split":
                raw = nas.nas.encode(nas.status_server())
                cuts = sorted(rng.sample(range(1, len(raw)), k=min(3, len(raw) - 1)))
                for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True):
                    nas.writer.write(raw[a:b])
                    await nas.writer.drain()
                reply = await nas.read_packet(timeout=5)
                assert reply[0] == 2, f"seed {SEED} case {case}: {reply.hex()}"
                continue
            if kind == "garbage":
                data = rng.randbytes(rng.randint(1, 9000))
            elif kind == "bad_length":
                data = bad_header(rng) + rng.randbytes(rng.randint(0, 50))
            elif kind == "partial":
                data = random_packet(rng)[:rng.randint(1, 19)]
            elif kind == "byte_at_a_time":
                data = b""
                for byte in nas.nas.encode(nas.status_server())[:rng.randint(1, 30)]:
                    nas.writer.write(bytes((byte,)))
                    await nas.writer.drain()
                    await asyncio.sleep(0.001)
            else:
                data = random_packet(rng)
            try:
                # Then four zero octets: a Length of 0 if the stream is between packets
                # (framing lost), else the tail of a packet that never ends.
                nas.writer.write(data + bytes(4))
                await nas.writer.drain()
            except (ConnectionError, OSError):
                pass
            # Each case ends its connection, so that the next starts clean.
            assert await nas.closed_by_server(timeout=10), f"seed {SEED} case {case}: {kind}"
            await nas.close()
            nas = await RadsecNas.connect(where, ctx)
            reconnects += 1
        answer = await nas.send(nas.status_server())
        assert answer.code == 2
        await nas.close()
        assert server.stats.dropped.get("internal_error", 0) == 0
        print(f"radsec fuzz: seed {SEED}, {sum(kinds.values())} cases {kinds}")
        assert reconnects > 0 and len(kinds) >= 3, kinds
