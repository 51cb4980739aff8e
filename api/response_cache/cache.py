"""The response cache: a per-process near cache in front of a shared store, one fill per key
at a time (one task per process, a short lock across processes), and invalidation."""

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from api.response_cache.breaker import CircuitBreaker
from api.response_cache.entry import CachedResponse, decode, encode
from api.response_cache.near import NearCache
from api.response_cache.variants import checked_namespace, variant
from shared.keys import ResponseKeys
from shared.responses import MISS, ResponseStore

logger = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 0.005
LONGEST_POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Produced:
    """What running an endpoint gave: the one response that is sent now and, when `storable`
    (a 200 that sets no cookie), stored for later requests byte for byte, so that the ETag a
    miss answers with is the one its hits answer with."""

    response: CachedResponse
    storable: bool


@dataclass(frozen=True, slots=True)
class Served:
    response: CachedResponse
    remaining: float
    """Seconds of TTL left, for Cache-Control's max-age."""
    hit: bool
    cacheable: bool


@dataclass(frozen=True, slots=True)
class Filled:
    own: Served
    """For the request that ran the fill."""
    shared: Served | None
    """For the requests of this process that waited on it; None when the answer was not
    storable (it may carry what belongs to one request only, such as a cookie): then each of
    them runs the endpoint itself."""


Producer = Callable[[], Awaitable[Produced]]


class ResponseCache:
    """What the lifespan opens and cached endpoints use; the same on both backends."""

    def __init__(
        self,
        store: ResponseStore,
        keys: ResponseKeys,
        near: NearCache,
        breaker: CircuitBreaker,
        *,
        default_ttl: float,
        lock_seconds: float,
    ) -> None:
        self.keys = keys
        self.default_ttl = default_ttl
        self.lock_seconds = lock_seconds
        self._store = store
        self._near = near
        self._breaker = breaker
        self._clock = near.clock
        self._flights: dict[str, asyncio.Task[Filled]] = {}

    async def start(self) -> None:
        await self._store.start(self._near.drop_prefix)

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()
        await asyncio.gather(*self._flights.values(), return_exceptions=True)
        await self._store.close()

    def near(self, key: str) -> tuple[CachedResponse, float] | None:
        """This process's own copy and its TTL left, if it may still serve one: the hit path,
        no I/O."""
        return self._near.get(key)

    async def serve(
        self, namespace: str, key: str, ttl: float, lock_seconds: float, produce: Producer
    ) -> Served:
        """The stored response, or the one `produce` makes, run once per key at a time: the
        requests of this process that miss the same key meanwhile wait on that one run (and
        get its error if it fails)."""
        flight = self._flights.get(key)
        if flight is not None and not flight.done():
            shared = (await asyncio.shield(flight)).shared
            if shared is not None:
                return shared
            produced = await produce()
            return Served(produced.response, ttl, hit=False, cacheable=False)
        flight = asyncio.create_task(self._fill(namespace, key, ttl, lock_seconds, produce))
        self._flights[key] = flight
        flight.add_done_callback(partial(self._landed, key))
        # Shielded: a client that goes away does not cancel the run the others wait on.
        return (await asyncio.shield(flight)).own

    def _landed(self, key: str, flight: asyncio.Task[Filled]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved here too, in case every waiter went away

    async def _fill(
        self, namespace: str, key: str, ttl: float, lock_seconds: float, produce: Producer
    ) -> Filled:
        generation = self._near.generation
        epoch_key = self.keys.epoch(namespace)
        looked_up = await self._look_up(key, epoch_key, generation)
        if isinstance(looked_up, Served):
            return Filled(looked_up, looked_up)
        epoch = looked_up
        lock_key = self.keys.lock(key)
        token = secrets.token_hex(16)

        async def take_lock() -> bool | None:
            # None: the store did not answer; fill without the lock (fail open).
            return await self._breaker.call(
                "take a fill lock", lambda: self._store.lock(lock_key, token, lock_seconds), None
            )

        locked = await take_lock()
        waited = locked is False
        deadline = self._clock() + lock_seconds
        pause = FIRST_POLL_SECONDS
        while locked is False:
            left = deadline - self._clock()
            if left <= 0:
                logger.warning(
                    "response cache: another process did not fill %s within %gs; filling it here",
                    key, lock_seconds,
                )  # fmt: skip
                break
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_POLL_SECONDS)
            looked_up = await self._look_up(key, epoch_key, generation)
            if isinstance(looked_up, Served):
                return Filled(looked_up, looked_up)
            epoch = looked_up
            locked = await take_lock()
        try:
            if locked and waited:
                # The process that held the lock may have stored the response and let go of the
                # lock between this process's last look-up and its lock: look once more, or the
                # endpoint would run a second time.
                looked_up = await self._look_up(key, epoch_key, generation)
                if isinstance(looked_up, Served):
                    return Filled(looked_up, looked_up)
                epoch = looked_up
            produced = await produce()
            response = produced.response
            if not produced.storable:
                return Filled(Served(response, ttl, hit=False, cacheable=False), None)
            payload = encode(response, ttl)
            since = self._clock()
            stored = await self._breaker.call(
                "store a response",
                lambda: self._store.store(key, payload, ttl, epoch_key, epoch),
                None,
            )
            # False: invalidated while it ran, so no process may keep it. None: the store did
            # not answer; this process keeps its copy for the near cache's short life.
            if stored is not False:
                self._near.put(key, response, ttl, since, generation)
            return Filled(
                Served(response, ttl, hit=False, cacheable=True),
                Served(response, ttl, hit=True, cacheable=True),
            )
        finally:
            if locked:
                await self._breaker.call(
                    "release a fill lock", lambda: self._store.unlock(lock_key, token), None
                )

    async def _look_up(self, key: str, epoch_key: str, generation: int) -> Served | str:
        """The stored response (kept in the near cache too), or the epoch read with the miss."""
        since = self._clock()
        lookup = await self._breaker.call(
            "look up a response", lambda: self._store.lookup(key, epoch_key), MISS
        )
        if lookup.found is None:
            return lookup.epoch
        response = decode(lookup.found.payload)
        if response is None:
            logger.warning("response cache: %s does not hold a stored response; ignoring it", key)
            return lookup.epoch
        self._near.put(key, response, lookup.found.remaining, since, generation)
        return Served(response, lookup.found.remaining, hit=True, cacheable=True)

    async def invalidate_namespace(self, namespace: str) -> int:
        """Drop every response of one namespace, in every api process; how many were stored."""
        prefix = self.keys.namespace_prefix(checked_namespace(namespace))
        epoch_key = self.keys.epoch(namespace)
        return await self._invalidate(prefix, lambda: self._store.delete_prefix(prefix, epoch_key))

    async def invalidate_path(self, namespace: str, path: str) -> int:
        """Drop every response of one path (whatever its query or varying inputs)."""
        prefix = self.keys.path_prefix(checked_namespace(namespace), path)
        epoch_key = self.keys.epoch(namespace)
        return await self._invalidate(prefix, lambda: self._store.delete_prefix(prefix, epoch_key))

    async def invalidate_response(
        self,
        namespace: str,
        path: str,
        query: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        vary: Mapping[str, Any] | None = None,
    ) -> int:
        """Drop one response: the GET of `path` with this query (values as the client sends
        them) and these varying inputs (by the names the endpoint declared)."""
        pairs = query.items() if isinstance(query, Mapping) else query
        query_pairs = [
            (name, str(item))
            for name, value in pairs
            for item in (value if isinstance(value, list | tuple) else [value])
        ]
        key = self.keys.response(
            checked_namespace(namespace),
            path,
            variant("GET", query_pairs, (vary or {}).items()),
        )
        epoch_key = self.keys.epoch(namespace)
        return await self._invalidate(key, lambda: self._store.delete(key, epoch_key))

    async def _invalidate(self, prefix: str, delete: Callable[[], Awaitable[int]]) -> int:
        self._near.drop_prefix(prefix)
        deleted = await self._breaker.attempt("invalidate responses", delete)
        await self._breaker.attempt(
            "announce an invalidation", lambda: self._store.announce(prefix)
        )
        return deleted
