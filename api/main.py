"""The app factory: `api.main:app` is what uvicorn serves.

Settings are read in the lifespan, when the app starts, and everything it opens there (cache,
Redis pool, embedded worker) is closed when it stops.
"""

import logging.config
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import redis
from fastapi import FastAPI

from api.errors import install_error_handlers
from api.response_cache.factory import open_response_cache
from api.routes import cached, health, jobs
from api.services import Services
from shared.cache import create_cache
from shared.errors import StartupError
from shared.events import MemoryJobEvents
from shared.keys import job_events_channel
from shared.logs import log_config
from shared.records import RecordStore
from shared.redis_connection import explain_redis_error, redis_client
from shared.redis_events import RedisJobEvents
from shared.redis_queue import RedisQueue, open_arq_pool
from shared.settings import Settings, load_settings
from worker.embedded import EmbeddedWorker
from worker.implementations import IMPLEMENTATIONS
from worker.main import create_cpu_pool
from worker.runner import JobRunner

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open what the api needs for its mode; fail with a StartupError if Redis refuses it."""
    async with AsyncExitStack() as stack:
        cache = create_cache(settings)
        stack.push_async_callback(cache.close)
        if settings.cache_backend == "redis":
            pool = await open_arq_pool(settings)
            stack.push_async_callback(pool.aclose)
            events_client = redis_client(settings, settings.redis_cache_db)
            stack.push_async_callback(events_client.aclose)
            redis_events = RedisJobEvents(
                events_client, job_events_channel(settings.cache_namespace)
            )
            try:
                await cache.raw("ping")
            except (redis.RedisError, OSError, TimeoutError) as error:
                raise explain_redis_error(error, settings, cache=True) from None
            try:
                await redis_events.start_listening()
            except (redis.RedisError, OSError, TimeoutError) as error:
                raise explain_redis_error(error, settings) from None
            stack.push_async_callback(redis_events.close)
            records = RecordStore(cache, settings.cache_ttl, redis_events)
            queue = RedisQueue(pool, settings.queue_name)
            response_cache = await stack.enter_async_context(open_response_cache(settings))
            yield Services(settings, cache, records, redis_events, queue, pool, response_cache)
            return
        memory_events = MemoryJobEvents()
        records = RecordStore(cache, settings.cache_ttl, memory_events)
        cpu_pool = create_cpu_pool(settings.cpu_workers)
        stack.callback(cpu_pool.shutdown, wait=False, cancel_futures=True)
        embedded = EmbeddedWorker(
            JobRunner(records, IMPLEMENTATIONS, cpu_pool), settings.worker_concurrency
        )
        embedded.start()
        stack.push_async_callback(embedded.close)
        response_cache = await stack.enter_async_context(open_response_cache(settings))
        yield Services(settings, cache, records, memory_events, embedded, None, response_cache)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The api; `settings` is for tests, otherwise they are read from the environment at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = settings or load_settings()
        logging.config.dictConfig(log_config(active.log_level))
        try:
            async with open_services(active) as services:
                app.state.services = services
                logger.info(
                    "jobcache api ready: backend %s, namespace %s",
                    active.cache_backend, active.cache_namespace,
                )  # fmt: skip
                yield
        except StartupError as error:
            logger.critical("jobcache api cannot start: %s", error)
            raise

    app = FastAPI(
        title="jobcache",
        summary="Run background jobs and serve their results from a cache.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(cached.router)
    app.include_router(health.router)
    return app


app = create_app()
