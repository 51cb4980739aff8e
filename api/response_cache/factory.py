"""Opens the response cache over the backend's store of responses (shared/responses/), with
this process's near copies and its circuit breaker, sized from the settings."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.response_cache.breaker import CircuitBreaker
from api.response_cache.cache import ResponseCache
from api.response_cache.near import NearCache
from shared.backend import Backend
from shared.connections import explain_redis_error
from shared.errors import BackendUnavailableError
from shared.keys import ResponseKeys
from shared.settings import Settings


@asynccontextmanager
async def open_response_cache(settings: Settings, backend: Backend) -> AsyncIterator[ResponseCache]:
    """The response cache for the api's lifetime; its subscription to invalidations (on Redis)
    is closed when the api stops."""
    cache = ResponseCache(
        backend.responses,
        ResponseKeys(settings.cache_namespace),
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
