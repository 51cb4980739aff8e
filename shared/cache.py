"""The one place that picks the cache backend (Redis or in-memory) from the settings."""

from collections.abc import Mapping
from typing import Any, assert_never

from aiocache import Cache
from aiocache.base import BaseCache
from aiocache.serializers import JsonSerializer

from shared.errors import ConfigurationError
from shared.keys import namespaced
from shared.settings import Settings


def _build_key(key: str, namespace: str | None = None) -> str:
    return key if not namespace else namespaced(namespace, key)


def create_cache(
    settings: Settings,
    namespace: str | None = None,
    *,
    connection_options: Mapping[str, Any] | None = None,
) -> BaseCache:
    """A namespaced cache with a TTL; both backends store JSON so they behave the same.

    `connection_options` go to the Redis connections; a worker passes a retry policy there.
    """
    namespace = namespace or settings.cache_namespace
    common: dict[str, Any] = {
        "ttl": settings.cache_ttl,
        "namespace": namespace,
        "serializer": JsonSerializer(),
        "key_builder": _build_key,
    }
    backend = settings.cache_backend
    if backend == "redis":
        server = settings.cache_redis
        return Cache(
            Cache.REDIS,
            endpoint=server.host,
            port=server.port,
            password=server.password.get_secret_value() if server.password else None,
            db=server.db,
            create_connection_timeout=settings.redis_connect_timeout,
            ssl=settings.redis_tls,
            connection_pool_kwargs={
                "username": settings.redis_username,
                "socket_timeout": settings.redis_connect_timeout,
                **({"ssl_ca_certs": settings.redis_tls_ca_file} if settings.redis_tls else {}),
                "health_check_interval": 30,
                **(connection_options or {}),
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
