"""Each api process's own copy of recently served responses, so that a hit costs no round trip.

An entry lives until the response's TTL ends or for `max_age` seconds after the read from the
shared store began, whichever comes first. Invalidations broadcast by any process drop entries
at once; `max_age` bounds how long a process may serve an invalidated response when a
broadcast is lost.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.response_cache.entry import CachedResponse


@dataclass(frozen=True, slots=True)
class NearEntry:
    response: CachedResponse
    expires_at: float
    """When the response's TTL ends (monotonic clock): its Cache-Control max-age counts to it."""
    valid_until: float
    """When this process stops serving its copy: min(expires_at, read time + max_age)."""


class NearCache:
    """A bounded map of key to response; the oldest entry goes first when it is full."""

    def __init__(
        self, max_entries: int, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: dict[str, NearEntry] = {}
        self._max_entries = max_entries
        self._max_age = max_age
        self.clock = clock
        self.generation = 0
        """Counts invalidations; a fill that saw another generation must not add its copy."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[CachedResponse, float] | None:
        """The response and the seconds left of its TTL, if this process may still serve it."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.valid_until:
            self._entries.pop(key, None)
            return None
        return entry.response, entry.expires_at - now

    def put(
        self, key: str, response: CachedResponse, remaining: float, since: float, generation: int
    ) -> None:
        """Keep a copy for `remaining` seconds (the TTL left) or max_age, both counted from
        `since`, when the read (or write) of the shared store began: a copy never outlives the
        stored response, nor an invalidation by more than max_age. Nothing is kept if an
        invalidation reached this process since the caller read `generation`."""
        if generation != self.generation or self._max_entries == 0 or self._max_age == 0:
            return
        expires_at = since + remaining
        valid_until = min(expires_at, since + self._max_age)
        if valid_until <= self.clock():
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = NearEntry(response, expires_at, valid_until)

    def drop_prefix(self, prefix: str) -> None:
        """Forget every copy whose key starts with `prefix` (a namespace, a path or one key)."""
        self.generation += 1
        for key in [key for key in self._entries if key.startswith(prefix)]:
            del self._entries[key]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
