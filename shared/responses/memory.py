"""The memory backend of the response store, for the local mode: one process, so locks and
broadcasts stay in it; payloads are the same JSON text as in Redis."""

import time
from collections.abc import Callable

from shared.responses.base import Found, Lookup

SWEEP_EVERY = 1000
"""Expired responses are swept after this many stores, so unread ones do not pile up."""
MAX_RESPONSES = 100_000
"""Like a cache Redis with maxmemory: when full, the oldest stored response goes, so clients
sending ever new query strings cannot grow the process without bound."""


class MemoryResponseStore:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_responses: int = MAX_RESPONSES
    ) -> None:
        self._clock = clock
        self._max_responses = max_responses
        self._responses: dict[str, tuple[str, float]] = {}
        self._epochs: dict[str, int] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._on_invalidation: Callable[[str], None] | None = None
        self._stores = 0

    async def start(self, on_invalidation: Callable[[str], None]) -> None:
        self._on_invalidation = on_invalidation

    async def close(self) -> None:
        self._responses.clear()

    async def lookup(self, key: str, epoch_key: str) -> Lookup:
        epoch = str(self._epochs.get(epoch_key, ""))
        stored = self._responses.get(key)
        if stored is None:
            return Lookup(None, epoch)
        payload, expires_at = stored
        remaining = expires_at - self._clock()
        if remaining <= 0:
            del self._responses[key]
            return Lookup(None, epoch)
        return Lookup(Found(payload, remaining), epoch)

    async def store(self, key: str, payload: str, ttl: float, epoch_key: str, epoch: str) -> bool:
        if str(self._epochs.get(epoch_key, "")) != epoch:
            return False
        self._responses.pop(key, None)
        while len(self._responses) >= self._max_responses:
            del self._responses[next(iter(self._responses))]
        self._responses[key] = (payload, self._clock() + ttl)
        self._stores += 1
        if self._stores % SWEEP_EVERY == 0:
            now = self._clock()
            for expired in [k for k, (_, at) in self._responses.items() if at <= now]:
                del self._responses[expired]
        return True

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        now = self._clock()
        held = self._locks.get(key)
        if held is not None and held[1] > now:
            return False
        self._locks[key] = (token, now + ttl)
        return True

    async def unlock(self, key: str, token: str) -> None:
        held = self._locks.get(key)
        if held is not None and held[0] == token:
            del self._locks[key]

    async def delete(self, key: str, epoch_key: str) -> int:
        self._bump(epoch_key)
        return 1 if self._responses.pop(key, None) is not None else 0

    async def delete_prefix(self, prefix: str, epoch_key: str) -> int:
        self._bump(epoch_key)
        matching = [key for key in self._responses if key.startswith(prefix)]
        for key in matching:
            del self._responses[key]
        return len(matching)

    async def announce(self, prefix: str) -> None:
        if self._on_invalidation is not None:
            self._on_invalidation(prefix)

    def _bump(self, epoch_key: str) -> None:
        self._epochs[epoch_key] = self._epochs.get(epoch_key, 0) + 1
