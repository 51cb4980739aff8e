"""The one place that picks the cache backend (Redis or in-memory) from the settings."""

from typing import Any, assert_never

from aiocache import Cache
from aiocache.base import BaseCache
from aiocache.serializers import JsonSerializer

from shared.errors import ConfigurationError
from shared.keys import namespaced
from shared.redis_connection import address_options
from shared.settings import Settings


def _build_key(key: str, namespace: str | None = None) -> str:
    return key if not namespace else namespaced(namespace, key)


def create_cache(
    settings: Settings,
    namespace: str | None = None,
) -> BaseCache:
    """A namespaced cache with a TTL; both backends store JSON so they behave the same."""
    namespace = namespace or settings.cache_namespace
    common: dict[str, Any] = {
        "ttl": settings.cache_ttl,
        "namespace": namespace,
        "serializer": JsonSerializer(),
        "key_builder": _build_key,
    }
    backend = settings.cache_backend
    if backend == "redis":
        # The same connection options as every other client of the cache's Redis.
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
            **common,
        )
    if backend == "local":
        return Cache(Cache.MEMORY, **common)
    assert_never(backend)
    raise ConfigurationError(  # pragma: no cover - settings validation rejects it first
        f"CACHE_BACKEND must be 'redis' or 'local', not {backend!r}"
    )
