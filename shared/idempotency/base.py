"""Idempotent submissions (`Idempotency-Key`): the port, the request's identity, and the claim
a request makes on its key. Its backends are shared/idempotency/memory.py and
shared/idempotency/redis.py.

A request with a key claims it before any job is recorded, naming the ids its jobs will have:
the first claim within KEPT_SECONDS wins, and every repeat finds the ids (and the earlier
request's fingerprint, to refuse a key reused for another request). A request that fails gives
its claim up, so that a retry can make the jobs. The key is kept only as its sha256, per
owner, so keys of different callers never collide and the key is never stored.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from pydantic import BaseModel

from shared.keys import digest

KEPT_SECONDS = 24 * 60 * 60
"""How long a key is remembered: a repeat within this time gets the first request's jobs."""
KEY_PATTERN = r"^[!-~]{1,255}$"
"""An Idempotency-Key: 1 to 255 visible ASCII characters."""


class Claim(BaseModel):
    """What the request that claimed a key recorded under it."""

    job_ids: list[str]
    """The ids of the jobs it makes, in order."""
    fingerprint: str
    """The digest of what it asked for (IdempotentRequest.fingerprint)."""
    claimed_at: float
    """When it claimed the key (Unix time, seconds)."""


@dataclass(frozen=True)
class IdempotentRequest:
    """A request's Idempotency-Key, by its digest, and the fingerprint of what it asks."""

    key_digest: str
    fingerprint: str

    @classmethod
    def of(
        cls, key: str, job_type: str, parameters: Any, query: Iterable[tuple[str, str]]
    ) -> "IdempotentRequest":
        """`parameters`: the validated parameters as JSON data (one object, or a batch's
        list), so that a repeat that spells the same values another way is the same request;
        `query`: the query parameters, whose order does not count."""
        canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"))
        return cls(
            key_digest=digest(key),
            fingerprint=digest("\n".join((job_type, canonical, urlencode(sorted(query))))),
        )


class IdempotencyBook(Protocol):
    async def claim(self, owner: str | None, key_digest: str, claim: Claim) -> Claim | None:
        """Claim the key for this request unless a request claimed it in the last
        KEPT_SECONDS: None when this one now holds it, else the earlier claim."""
        ...

    async def give_up(self, owner: str | None, key_digest: str) -> None:
        """The request that holds the key failed: a retry may claim it."""
        ...
