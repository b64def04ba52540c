"""Duplicate detection, RFC 5080 §2.2.2.

A request is the same request when it reached the same port kind (auth or acct:
the same socket, as RFC 5080 §2.2.2 keys it) from the same source address and port
with the same code, Identifier and Request Authenticator: a Status-Server sent to
1812 and then, byte for byte, to 1813 is two requests with two different answers.
While the first copy is being processed, copies are dropped; once it is answered,
copies within the window get the byte-identical reply.
"""

from __future__ import annotations

from collections import OrderedDict

# receiving port kind, source host, source port, code, identifier, authenticator
DedupKey = tuple[str, str, int, int, int, bytes]

IN_PROGRESS = b""


# (reply, expires): a plain tuple of bytes and float, which the garbage collector
# stops tracking, so tens of thousands of cached replies cost no GC pause.
_Entry = tuple[bytes, float]


class DuplicateCache:
    def __init__(self, window: float, max_entries: int = 200_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._entries: OrderedDict[DedupKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: DedupKey, now: float) -> bytes | None:
        """None: a new request (now marked in progress). b"": in progress, drop it.
        Otherwise: the cached reply to send again."""
        entry = self._entries.get(key)
        if entry is not None and (not entry[0] or entry[1] > now):
            return entry[0]
        self._expire(now)
        self._entries[key] = (IN_PROGRESS, now + self.window)
        self._entries.move_to_end(key)
        return None

    def answered(self, key: DedupKey, reply: bytes, now: float) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._entries[key] = (reply, now + self.window)

    def forget(self, key: DedupKey) -> None:
        """The request got no reply (dropped by policy): let a retransmission retry."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (reply, expires) = next(iter(entries.items()))
            if not reply and len(entries) < self.max_entries:
                break  # oldest is still being processed; later ones are younger
            if expires > now and len(entries) < self.max_entries:
                break
            del entries[key]
