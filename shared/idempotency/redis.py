"""The Redis backend of Idempotency-Keys, on the cache's Redis: one claim is one
`SET <ns>:idempotency:<owner>:<key digest> <claim JSON> NX GET EX 86400`, which either claims
the key or returns the earlier claim, atomically and in one round trip (Redis 7)."""

import redis.asyncio

from shared.connections import calls_redis
from shared.idempotency.base import KEPT_SECONDS, Claim
from shared.keys import Keys


class RedisIdempotencyBook:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    @calls_redis("claim an Idempotency-Key")
    async def claim(self, owner: str | None, key_digest: str, claim: Claim) -> Claim | None:
        earlier = await self._client.set(
            self._keys.idempotency(owner, key_digest),
            claim.model_dump_json(),
            ex=KEPT_SECONDS,
            nx=True,
            get=True,
        )
        return None if earlier is None else Claim.model_validate_json(earlier)

    @calls_redis("give up an Idempotency-Key")
    async def give_up(self, owner: str | None, key_digest: str) -> None:
        await self._client.delete(self._keys.idempotency(owner, key_digest))
