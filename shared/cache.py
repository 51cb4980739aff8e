"""The aiocache store of job records, on Redis or in memory; shared/backend.py picks which.

Both get the same JSON serializer and key builder, so a test that passes on memory passes on
Redis too (aiocache's memory cache would otherwise keep live Python objects).
"""

import functools
from collections.abc import Callable
from typing import Any

from aiocache import Cache
from aiocache.base import BaseCache
from aiocache.serializers import JsonSerializer

from shared.connections import address_options
from shared.keys import namespaced
from shared.sentinel import sentinel_pool
from shared.settings import RedisAddress, Settings


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


def sentinel_pool_class(address: RedisAddress, settings: Settings) -> Callable[..., Any]:
    """What aiocache's Redis cache takes as its pool class, making a pool that finds the master
    through the Sentinels instead of at `host` and `port`.

    aiocache builds its client's pool itself, from a host and a port, and takes no client or
    Sentinel of ours (aiocache#422); its `connection_pool_class` is the one way in. The pool
    gets every option aiocache passes but the address."""
    return functools.partial(sentinel_pool, address, settings)


def redis_cache(settings: Settings) -> BaseCache:
    """A namespaced cache with a TTL on the cache's Redis, with the same connection options as
    every other client of that Redis."""
    address = settings.cache_redis
    options = address_options(address, settings)
    if address.sentinel_master is not None:
        options["connection_pool_class"] = sentinel_pool_class(address, settings)
    return Cache(
        Cache.REDIS,
        endpoint=options.pop("host"),
        port=options.pop("port"),
        password=options.pop("password"),
        db=options.pop("db"),
        create_connection_timeout=options.pop("socket_connect_timeout"),
        ssl=options.pop("ssl", False),
        connection_pool_class=options.pop("connection_pool_class", None),
        connection_pool_kwargs={
            **options,
            "health_check_interval": 30,
        },
        # No per-call timer task (aiocache's default is 5 s): the connection's own socket
        # timeout bounds each call, and a worker's retry policy may outlast it on purpose.
        timeout=None,
        **_common(settings),
    )
