"""The response cache's shared store: the port and its memory and Redis backends (the cache
itself, its near copies and its decorator are the api's: api/response_cache/)."""

from shared.responses.base import MISS, Found, Lookup, ResponseStore

__all__ = ["MISS", "Found", "Lookup", "ResponseStore"]
