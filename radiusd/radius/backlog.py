"""Requests read from the socket and not yet started, stamped with their arrival, sans-IO.

The listener drains its socket as fast as datagrams come, so that the kernel's
buffer never becomes an invisible queue, and puts them here. The queue is bounded
twice: by age (`max_wait`, `[server] max_queue_ms`: a request that has waited longer
is dropped, "queue_timeout", since its NAS has given up on it by then) and by length
(`limit`: a new arrival pushes the oldest waiting request out, "overloaded").

Order: first in, first out while requests start at once. Once the oldest has waited
more than `newest_first_after`, the server is behind: it serves the newest first
(adaptive LIFO, as in Facebook's "Fail at Scale", 2015), so the requests it answers
are ones whose NAS is still waiting, and the oldest age out. Under a sustained
flood, FIFO would answer every request just before its deadline; this answers most
at once and drops the rest.

Controlled delay (CoDel's idea, RFC 8289, as "Fail at Scale" applies it to request
queues): a queue that has not been empty for `standing_after` and holds more than
`standing_depth` requests (more than the listener starts in one turn) is a standing
queue, not a burst or a stall, and while it stands a request may wait only
`short_wait`, not `max_wait`. Newest-first alone still starts an old request whenever the new ones
run out for a moment; under a flood those moments come often, and each such answer
is one a NAS has probably given up on. A burst that the server clears within
`standing_after` keeps the full `max_wait`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

Waiting = tuple[float, bytes, Any]  # (arrived, datagram, source address as recvfrom gave it)


class Backlog:
    def __init__(self, max_wait: float, limit: int, shed: Callable[[str, int], None],
                 newest_first_after: float | None = None, standing_depth: int = 32) -> None:
        """``shed(reason, n)`` is told of every request dropped here. Defaults from
        ``max_wait`` (`[server] max_queue_ms`, 200 ms): newest first after a tenth of
        it, a standing queue after half of it, and then a quarter of it to wait."""
        self.max_wait = max_wait
        self.limit = limit
        self.shed = shed
        self.newest_first_after = (max_wait / 10 if newest_first_after is None
                                   else newest_first_after)
        self.standing_after = max_wait / 2
        self.short_wait = max_wait / 4
        self.standing_depth = standing_depth
        self._items: deque[Waiting] = deque(maxlen=limit)
        self._empty_at: float | None = None  # when the queue was last seen empty

    def __len__(self) -> int:
        return len(self._items)

    def push(self, arrivals: list[Waiting]) -> None:
        """Queue what one read brought, in order of arrival. When the queue is full the
        oldest waiting requests make room (counted "overloaded"): under overload they
        are the ones least likely to still be wanted."""
        overflow = len(self._items) + len(arrivals) - self.limit
        if overflow > 0:
            self.shed("overloaded", overflow)
        if not self._items and arrivals:
            self._empty_at = arrivals[0][0]  # it was empty until this one came
        self._items.extend(arrivals)

    def pop(self, now: float) -> Waiting | None:
        """The next request to start, or None. Drops, and counts, every request that has
        waited more than ``max_wait`` by ``now``."""
        self.expire(now)
        items = self._items
        if not items:
            return None
        if now - items[0][0] > self.newest_first_after:
            return items.pop()
        return items.popleft()

    def standing(self, now: float) -> bool:
        """Has a deep queue not been empty for `standing_after` (a flood, not a burst)?"""
        return (len(self._items) > self.standing_depth and self._empty_at is not None
                and now - self._empty_at > self.standing_after)

    def expire(self, now: float) -> None:
        """Drop, and count, every request that has waited more than ``max_wait``, or
        `short_wait` while the queue stands."""
        items = self._items
        oldest_allowed = now - (self.short_wait if self.standing(now) else self.max_wait)
        n = 0
        while items and items[0][0] < oldest_allowed:
            items.popleft()
            n += 1
        if n:
            self.shed("queue_timeout", n)

    def clear(self, reason: str) -> None:
        """Drop everything still waiting (shutdown)."""
        if self._items:
            self.shed(reason, len(self._items))
            self._items.clear()
