"""The Redis backend of the response store: one client of the cache's Redis, Lua for the two
compare-and-set steps, SCAN with batched UNLINK for invalidation, pub/sub for broadcasts; a
Redis failure is raised as BackendUnavailableError."""

import re
from collections.abc import Callable

import redis.asyncio

from shared.connections import calls_redis
from shared.responses.base import Found, Lookup
from shared.subscriptions import Subscription

SCAN_BATCH = 500

# Store only if no invalidation bumped the namespace's epoch since the fill read it.
STORE_IF_EPOCH = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# Delete the lock only if this process still holds it (it may have expired and been retaken).
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def glob_escaped(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisResponseStore:
    def __init__(self, client: redis.asyncio.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._store_if_epoch = client.register_script(STORE_IF_EPOCH)
        self._unlock = client.register_script(UNLOCK)
        self._subscription: Subscription | None = None

    @calls_redis("subscribe to invalidations")
    async def start(self, on_invalidation: Callable[[str], None]) -> None:
        def deliver(data: bytes) -> None:
            on_invalidation(data.decode("utf-8", "replace"))

        self._subscription = Subscription(self._client, self._channel, deliver)
        await self._subscription.start()

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()

    @calls_redis("look up a response")
    async def lookup(self, key: str, epoch_key: str) -> Lookup:
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.get(key)
            pipeline.pttl(key)
            pipeline.get(epoch_key)
            payload, milliseconds, epoch = await pipeline.execute()
        epoch_text = epoch.decode() if epoch is not None else ""
        # A key without a TTL (-1) is not one of ours: never serve it for ever.
        if payload is None or milliseconds <= 0:
            return Lookup(None, epoch_text)
        return Lookup(Found(payload, milliseconds / 1000), epoch_text)

    @calls_redis("store a response")
    async def store(self, key: str, payload: str, ttl: float, epoch_key: str, epoch: str) -> bool:
        milliseconds = max(1, round(ttl * 1000))
        stored = await self._store_if_epoch(
            keys=[key, epoch_key], args=[epoch, payload, milliseconds]
        )
        return bool(stored)

    @calls_redis("take a fill lock")
    async def lock(self, key: str, token: str, ttl: float) -> bool:
        return bool(await self._client.set(key, token, nx=True, px=max(1, round(ttl * 1000))))

    @calls_redis("release a fill lock")
    async def unlock(self, key: str, token: str) -> None:
        await self._unlock(keys=[key], args=[token])

    @calls_redis("delete a response")
    async def delete(self, key: str, epoch_key: str) -> int:
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.incr(epoch_key)
            pipeline.unlink(key)
            _, deleted = await pipeline.execute()
        return int(deleted)

    @calls_redis("delete responses")
    async def delete_prefix(self, prefix: str, epoch_key: str) -> int:
        """SCAN in batches, never KEYS or FLUSHDB: Redis keeps serving while it runs, and only
        keys under `prefix` (never the queue's) can match."""
        await self._client.incr(epoch_key)
        deleted = 0
        cursor = 0
        pattern = glob_escaped(prefix) + "*"
        while True:
            cursor, keys = await self._client.scan(cursor, match=pattern, count=SCAN_BATCH)
            if keys:
                deleted += int(await self._client.unlink(*keys))
            if cursor == 0:
                return deleted

    @calls_redis("announce an invalidation")
    async def announce(self, prefix: str) -> None:
        await self._client.publish(self._channel, prefix)
