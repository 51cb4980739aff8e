"""Opens the response cache on the backend the settings name: a store of its own on the cache's
Redis (it needs Lua, SCAN and pub/sub, which aiocache does not offer), or in memory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import assert_never

import redis.asyncio

from api.response_cache.breaker import CircuitBreaker
from api.response_cache.cache import ResponseCache
from api.response_cache.memory_store import MemoryResponseStore
from api.response_cache.near import NearCache
from api.response_cache.redis_store import RedisResponseStore
from api.response_cache.store import ResponseStore
from shared.connections import cache_redis_client, explain_redis_error
from shared.errors import BackendUnavailableError
from shared.keys import ResponseKeys
from shared.settings import Settings


@asynccontextmanager
async def open_response_cache(settings: Settings) -> AsyncIterator[ResponseCache]:
    """The response cache for the api's lifetime; in the redis mode its client of the cache's
    Redis and its subscription to invalidations are closed when the api stops."""
    keys = ResponseKeys(settings.cache_namespace)
    backend = settings.cache_backend
    client: redis.asyncio.Redis | None = None
    store: ResponseStore
    if backend == "redis":
        client = cache_redis_client(settings)
        store = RedisResponseStore(client, keys.channel)
    elif backend == "local":
        store = MemoryResponseStore()
    else:
        assert_never(backend)
    cache = ResponseCache(
        store,
        keys,
        NearCache(settings.response_cache_near_entries, settings.response_cache_near_seconds),
        CircuitBreaker(settings.response_cache_timeout, settings.response_cache_breaker_seconds),
        default_ttl=settings.cache_ttl,
        lock_seconds=settings.response_cache_lock_seconds,
    )
    try:
        try:
            await cache.start()
        except BackendUnavailableError as error:
            raise explain_redis_error(error, settings, cache=True) from None
        yield cache
    finally:
        await cache.close()
        if client is not None:
            await client.aclose()
