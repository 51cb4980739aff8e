"""Request-level caching of API endpoints: `@cache_response` on a route, invalidation through
`ResponseCache`, on Redis or in memory (see docs/caching.md)."""

from api.response_cache.cache import ResponseCache
from api.response_cache.decorator import cache_response

__all__ = ["ResponseCache", "cache_response"]
