"""Connecting to Redis: arq's connection settings and a startup check with a clear message."""

import asyncio
from typing import Any

import redis
import redis.asyncio
from arq.connections import RedisSettings

from shared.errors import StartupError
from shared.settings import Settings


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's view of the queue's Redis; no retries, since a failed startup must fail fast."""
    password = settings.redis_password
    return RedisSettings(
        host=settings.redis_host,
        port=settings.redis_port,
        database=settings.redis_queue_db,
        password=password.get_secret_value() if password else None,
        conn_timeout=max(1, round(settings.redis_connect_timeout)),
        conn_retries=0,
    )


def explain_redis_error(error: BaseException, settings: Settings) -> StartupError:
    """A message that says what went wrong and which setting to check; never the password."""
    where = f"Redis at {settings.redis_host}:{settings.redis_port}"
    if isinstance(error, redis.AuthenticationError) or "AUTH" in str(error).upper():
        return StartupError(
            f"{where} refused the credentials: check REDIS_PASSWORD ({type(error).__name__})"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError | TimeoutError):
        return StartupError(
            f"cannot reach {where} within {settings.redis_connect_timeout:g}s: check that "
            f"Redis runs there and REDIS_HOST/REDIS_PORT ({type(error).__name__})"
        )
    return StartupError(f"{where} answered with an error: {error}")


def redis_client_options(settings: Settings, db: int) -> dict[str, Any]:
    password = settings.redis_password
    return {
        "host": settings.redis_host,
        "port": settings.redis_port,
        "db": db,
        "password": password.get_secret_value() if password else None,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_connect_timeout,
        "retry_on_timeout": False,
    }


def check_redis(settings: Settings) -> None:
    """Ping the queue and cache databases or raise a StartupError (for sync entry points)."""
    for db in {settings.redis_queue_db, settings.redis_cache_db}:
        client = redis.Redis(**redis_client_options(settings, db))
        try:
            client.ping()
        except redis.RedisError as error:
            raise explain_redis_error(error, settings) from None
        finally:
            client.close()


def redis_client(settings: Settings, db: int) -> redis.asyncio.Redis:
    """An asyncio client of one database of the configured Redis (no I/O until first used)."""
    return redis.asyncio.Redis(**redis_client_options(settings, db))


async def ping(client: redis.asyncio.Redis, settings: Settings) -> None:
    """Ping with a deadline or raise a StartupError saying why."""
    try:
        async with asyncio.timeout(settings.redis_connect_timeout + 1):
            await client.ping()
    except (redis.RedisError, OSError, TimeoutError) as error:
        raise explain_redis_error(error, settings) from None
