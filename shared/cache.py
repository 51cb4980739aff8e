"""The aiocache store of job records, on Redis or in memory; shared/backend.py picks which.

Both get the same JSON serializer and key builder, so a test that passes on memory passes on
Redis too (aiocache's memory cache would otherwise keep live Python objects).
"""

from typing import Any

from aiocache import Cache
from aiocache.base import BaseCache
from aiocache.serializers import JsonSerializer

from shared.connections import address_options
from shared.keys import namespaced
from shared.settings import Settings


def _build_key(key: str, namespace: str | None = None) -> str:
    return key if not namespace else namespaced(namespace, key)


def _common(settings: Settings) -> dict[str, Any]:
    return {
        "ttl": settings.cache_ttl,
        "namespace": settings.cache_namespace,
        "serializer": JsonSerializer(),
        "key_builder": _build_key,
    }


def memory_cache(settings: Settings) -> BaseCache:
    """A namespaced in-memory cache with a TTL (the local mode's)."""
    return Cache(Cache.MEMORY, **_common(settings))


def redis_cache(settings: Settings) -> BaseCache:
    """A namespaced cache with a TTL on the cache's Redis, with the same connection options as
    every other client of that Redis."""
    options = address_options(settings.cache_redis, settings)
    return Cache(
        Cache.REDIS,
        endpoint=options.pop("host"),
        port=options.pop("port"),
        password=options.pop("password"),
        db=options.pop("db"),
        create_connection_timeout=options.pop("socket_connect_timeout"),
        ssl=options.pop("ssl", False),
        connection_pool_kwargs={
            **options,
            "health_check_interval": 30,
        },
        # No per-call timer task (aiocache's default is 5 s): the connection's own socket
        # timeout bounds each call, and a worker's retry policy may outlast it on purpose.
        timeout=None,
        **_common(settings),
    )
