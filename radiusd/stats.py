"""Counters the server keeps about itself: what it received, answered and dropped
and why. Exposed in the log at shutdown and to the HTTP `/metrics` endpoint."""

from __future__ import annotations

from collections import Counter


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.counts.items())]
        parts += [f"dropped.{k}={v}" for k, v in sorted(self.dropped.items())]
        return " ".join(parts) or "nothing received"
