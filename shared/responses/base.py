"""The port every response store implements (Redis, memory); the cache never asks which."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Found:
    payload: bytes | str
    remaining: float
    """Seconds left of the response's TTL, as the store measures it."""


@dataclass(frozen=True, slots=True)
class Lookup:
    found: Found | None
    epoch: str
    """The namespace's invalidation counter when this was read ('' before the first one)."""


MISS = Lookup(None, "")


class ResponseStore(Protocol):
    """Shared storage of responses, fill locks and invalidation broadcasts."""

    async def start(self, on_invalidation: Callable[[str], None]) -> None:
        """Begin delivering invalidation broadcasts (a key prefix each) to `on_invalidation`."""

    async def close(self) -> None: ...

    async def lookup(self, key: str, epoch_key: str) -> Lookup:
        """The response under `key` with its remaining TTL, and the namespace's epoch, read
        together."""

    async def store(self, key: str, payload: str, ttl: float, epoch_key: str, epoch: str) -> bool:
        """Keep `payload` for `ttl` seconds unless the epoch moved on since it was read (an
        invalidation came in between); False if it did."""

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        """Take the fill lock for `ttl` seconds; False if another process holds it."""

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if this token still holds it."""

    async def delete(self, key: str, epoch_key: str) -> int:
        """Bump the epoch and delete one response; how many were deleted."""

    async def delete_prefix(self, prefix: str, epoch_key: str) -> int:
        """Bump the epoch and delete every response whose key starts with `prefix`."""

    async def announce(self, prefix: str) -> None:
        """Tell every api process to drop its copies of responses under `prefix`."""
