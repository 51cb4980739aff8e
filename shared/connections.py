"""Connecting to Redis: client options (a server's address, or its master found through
Sentinel), a startup check with a clear message, and the boundary where a Redis failure becomes
the one domain error."""

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
import redis.sentinel

from shared.errors import BackendUnavailableError, StartupError
from shared.sentinel import sentinel_options, sentinel_pool
from shared.settings import RedisAddress, Settings

REDIS_FAILURES = (redis.RedisError, OSError, TimeoutError)
"""What a call of redis-py raises when Redis fails, refuses or does not answer in time (a
connect that times out raises the builtin TimeoutError)."""

P = ParamSpec("P")
T = TypeVar("T")


Method = Callable[P, Coroutine[Any, Any, T]]


def calls_redis(what: str) -> Callable[[Method[P, T]], Method[P, T]]:
    """Mark a method of a Redis backend: a Redis failure inside it is raised as
    BackendUnavailableError saying what could not be done (the cause stays attached)."""

    def decorate(method: Method[P, T]) -> Method[P, T]:
        @functools.wraps(method)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await method(*args, **kwargs)
            except REDIS_FAILURES as error:
                raise BackendUnavailableError(
                    f"Redis failed to {what}: {type(error).__name__}"
                ) from error

        return call

    return decorate


def explain_redis_error(
    error: BaseException, settings: Settings, *, cache: bool = False
) -> StartupError:
    """A message that says what went wrong and which setting to check; never the password.
    `cache` says the error came from the cache's Redis, which CACHE_REDIS_* may name."""
    if isinstance(error, BackendUnavailableError) and error.__cause__ is not None:
        error = error.__cause__
    server = settings.cache_redis if cache else settings.queue_redis
    where = str(server)
    own_address = cache and (settings.cache_redis_host or settings.cache_redis_port)
    address = "CACHE_REDIS_HOST/CACHE_REDIS_PORT" if own_address else "REDIS_HOST/REDIS_PORT"
    if server.sentinel_master is not None:
        address = "REDIS_SENTINELS and the master's name (" + (
            "CACHE_REDIS_SENTINEL_MASTER)" if cache and settings.cache_redis_sentinel_master
            else "REDIS_SENTINEL_MASTER)"
        )  # fmt: skip
    own_password = cache and settings.cache_redis_password
    password = "CACHE_REDIS_PASSWORD" if own_password else "REDIS_PASSWORD"
    if isinstance(error, redis.AuthenticationError) or "AUTH" in str(error).upper():
        return StartupError(
            f"{where} refused the credentials: check {password} ({type(error).__name__})"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError | TimeoutError):
        return StartupError(
            f"cannot reach {where} within {settings.redis_connect_timeout:g}s: check that "
            f"Redis runs there and {address} ({type(error).__name__})"
        )
    return StartupError(f"{where} answered with an error: {error}")


def address_options(address: RedisAddress, settings: Settings) -> dict[str, Any]:
    """Client options for one Redis server and database (the queue's or the cache's)."""
    password = address.password
    options: dict[str, Any] = {
        "host": address.host,
        "port": address.port,
        "db": address.db,
        "username": settings.redis_username,
        "password": password.get_secret_value() if password else None,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_connect_timeout,
        "retry_on_timeout": False,
    }
    if settings.redis_tls:
        options["ssl"] = True
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    return options


def client_options(address: RedisAddress, settings: Settings) -> dict[str, Any]:
    """Keyword arguments of an asyncio client (redis.asyncio.Redis, or arq's subclass) of one
    Redis database: its address, or, with Sentinel, a connection pool that asks the Sentinels
    for the master as it connects and so follows a failover (a connection to a master that
    became a replica fails its next write and connects again)."""
    options = address_options(address, settings)
    if address.sentinel_master is None:
        return options
    return {"connection_pool": sentinel_pool(address, settings, **options)}


def check_redis(settings: Settings) -> None:
    """Ping the queue and cache databases or raise a StartupError (for sync entry points)."""
    for address, cache in ((settings.queue_redis, False), (settings.cache_redis, True)):
        options = address_options(address, settings)
        if address.sentinel_master is None:
            client = redis.Redis(**options)
        else:
            del options["host"], options["port"]
            sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(address.sentinels), sentinel_kwargs=sentinel_options(settings)
            )
            client = sentinels.master_for(  # type: ignore[no-untyped-call]
                address.sentinel_master, **options
            )
        try:
            client.ping()
        except redis.RedisError as error:
            raise explain_redis_error(error, settings, cache=cache) from None
        finally:
            client.close()


def cache_redis_client(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio client of the cache's Redis (no I/O until first used)."""
    return redis.asyncio.Redis(**client_options(settings.cache_redis, settings))
