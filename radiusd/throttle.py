"""Log lines that hostile or failing traffic cannot multiply, sans-IO.

A flood of malformed requests or failing writes must not fill the disk: each
reason is logged at most once per interval, and the next line for it says how
many were left out in between. Memory is bounded: the reasons are ours (a fixed
vocabulary), and at most ``max_keys`` keys (e.g. reason/address) are kept.

    throttle = LogThrottle(interval=60.0)
    throttle.log(log, logging.WARNING, "http.bad_request", now, "bad request from %s: %s",
                 ip, why)
"""

from __future__ import annotations

import logging


class LogThrottle:
    def __init__(self, interval: float = 60.0, max_keys: int = 10_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def due(self, key: str, now: float) -> int | None:
        """None when ``key`` was logged less than ``interval`` ago (and count it);
        otherwise how many lines for it were left out since the last one."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return None
        if key not in self._last and len(self._last) >= self.max_keys:
            self._last.clear()
            self._left_out.clear()
        self._last[key] = now
        return self._left_out.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: str, now: float, msg: str,
            *args: object, exc_info: bool = False) -> bool:
        """One line for ``key`` per interval (with the traceback only when ``exc_info``:
        for our own bugs, never for hostile input); True when written."""
        left_out = self.due(key, now)
        if left_out is None:
            return False
        if left_out:
            msg += " (%d more like this in the last %.0fs)"
            args = (*args, left_out, self.interval)
        logger.log(level, msg, *args, exc_info=True if exc_info else None)
        return True
