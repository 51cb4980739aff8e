"""The local mode's Idempotency-Keys: claims in memory, forgotten KEPT_SECONDS after they were
made (every claim lives as long, so the oldest is always the first to go)."""

import time
from collections import OrderedDict

from shared.idempotency.base import KEPT_SECONDS, Claim


class MemoryIdempotencyBook:
    def __init__(self) -> None:
        self._claims: OrderedDict[tuple[str | None, str], tuple[float, Claim]] = OrderedDict()

    async def claim(self, owner: str | None, key_digest: str, claim: Claim) -> Claim | None:
        now = time.monotonic()
        while self._claims:
            expires, _ = next(iter(self._claims.values()))
            if expires > now:
                break
            self._claims.popitem(last=False)
        held = self._claims.get((owner, key_digest))
        if held is not None:
            return held[1]
        self._claims[(owner, key_digest)] = (now + KEPT_SECONDS, claim)
        return None

    async def give_up(self, owner: str | None, key_digest: str) -> None:
        self._claims.pop((owner, key_digest), None)
