"""Connecting to Redis: client options, arq's connection settings, a startup check with a clear
message, and the boundary where a Redis failure becomes the one domain error."""

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
from arq.connections import RedisSettings

from shared.errors import BackendUnavailableError, StartupError
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


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's view of the queue's Redis; no retries, since a failed startup must fail fast."""
    options = address_options(settings.queue_redis, settings)
    return RedisSettings(
        host=options["host"],
        port=options["port"],
        database=options["db"],
        username=options["username"],
        password=options["password"],
        ssl=options.get("ssl", False),
        ssl_ca_certs=options.get("ssl_ca_certs"),
        conn_timeout=max(1, round(settings.redis_connect_timeout)),
        conn_retries=0,
    )


def explain_redis_error(
    error: BaseException, settings: Settings, *, cache: bool = False
) -> StartupError:
    """A message that says what went wrong and which setting to check; never the password.
    `cache` says the error came from the cache's Redis, which CACHE_REDIS_* may name."""
    if isinstance(error, BackendUnavailableError) and error.__cause__ is not None:
        error = error.__cause__
    server = settings.cache_redis if cache else settings.queue_redis
    where = f"Redis at {server.host}:{server.port}"
    own_address = cache and (settings.cache_redis_host or settings.cache_redis_port)
    address = "CACHE_REDIS_HOST/CACHE_REDIS_PORT" if own_address else "REDIS_HOST/REDIS_PORT"
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


def check_redis(settings: Settings) -> None:
    """Ping the queue and cache databases or raise a StartupError (for sync entry points)."""
    for address, cache in ((settings.queue_redis, False), (settings.cache_redis, True)):
        client = redis.Redis(**address_options(address, settings))
        try:
            client.ping()
        except redis.RedisError as error:
            raise explain_redis_error(error, settings, cache=cache) from None
        finally:
            client.close()


def cache_redis_client(settings: Settings, **extra: Any) -> redis.asyncio.Redis:
    """An asyncio client of the cache's Redis (no I/O until first used); `extra` options
    replace the defaults."""
    return redis.asyncio.Redis(**{**address_options(settings.cache_redis, settings), **extra})
