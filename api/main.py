"""The app factory: `api.main:app` is what uvicorn serves.

Settings are read in the lifespan, when the app starts, and everything it opens there (cache,
Redis pool, embedded worker) is closed when it stops.
"""

import logging.config
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import redis
from fastapi import FastAPI

from api.auth import ApiKeys
from api.body_limit import SettingsBodyLimit
from api.errors import install_error_handlers
from api.observability import RequestObserver, count_redis_errors
from api.response_cache.factory import open_response_cache
from api.routes import cached, dashboard, health, jobs, metrics
from api.services import Services
from shared.cache import create_cache
from shared.errors import ConfigurationError, StartupError
from shared.events import MemoryJobEvents
from shared.keys import job_events_channel
from shared.logs import log_config
from shared.metrics import Metrics
from shared.overview import LocalOverview
from shared.quotas import MemoryQuotaLedger
from shared.records import RecordStore
from shared.redis_connection import cache_redis_client, explain_redis_error
from shared.redis_events import RedisJobEvents
from shared.redis_overview import RedisOverview
from shared.redis_queue import RedisQueue, open_arq_pool
from shared.redis_quotas import RedisQuotaLedger
from shared.redis_records import RedisRecordStore
from shared.settings import Settings, load_settings
from shared.workers import WorkerActivity, new_worker_id
from worker.embedded import EmbeddedWorker
from worker.implementations import IMPLEMENTATIONS
from worker.main import create_cpu_pool
from worker.runner import JobRunner

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open what the api needs for its mode; fail with a StartupError if Redis refuses it."""
    async with AsyncExitStack() as stack:
        metrics = Metrics(system_view=True)
        api_keys = ApiKeys(settings.api_key_list)
        cache = create_cache(settings)
        stack.push_async_callback(cache.close)
        if settings.cache_backend == "redis":
            pool = await open_arq_pool(settings)
            stack.push_async_callback(pool.aclose)
            events_client = cache_redis_client(settings)
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
            redis_quotas = RedisQuotaLedger(events_client, settings.cache_namespace)
            records: RecordStore = RedisRecordStore(
                cache, settings.cache_ttl, redis_events, redis_quotas
            )
            queue = RedisQueue(pool, settings.queue_name)
            response_cache = await stack.enter_async_context(open_response_cache(settings))
            overview = RedisOverview(pool, settings.cache_namespace, settings.queue_name)
            stack.push_async_callback(overview.flush)
            yield Services(
                settings, cache, records, redis_events, queue, pool, response_cache,
                metrics=metrics, overview=overview, api_keys=api_keys, quotas=redis_quotas,
            )  # fmt: skip
            return
        memory_events = MemoryJobEvents()
        memory_quotas = MemoryQuotaLedger()
        records = RecordStore(cache, settings.cache_ttl, memory_events, memory_quotas)
        cpu_pool = create_cpu_pool(settings.cpu_workers)
        stack.callback(cpu_pool.shutdown, wait=False, cancel_futures=True)
        activity = WorkerActivity(
            metrics,
            worker_id=f"embedded-{new_worker_id()}",
            concurrency=settings.worker_concurrency,
        )
        embedded = EmbeddedWorker(
            JobRunner(records, IMPLEMENTATIONS, cpu_pool, activity), settings.worker_concurrency
        )
        embedded.start()
        stack.push_async_callback(embedded.close)
        response_cache = await stack.enter_async_context(open_response_cache(settings))
        yield Services(
            settings, cache, records, memory_events, embedded, None, response_cache,
            metrics=metrics, overview=LocalOverview(embedded.backlog, activity.status),
            api_keys=api_keys, quotas=memory_quotas,
        )  # fmt: skip


def create_app(settings: Settings | None = None) -> FastAPI:
    """The api; `settings` is for tests, otherwise they are read from the environment at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            active = settings or load_settings()
            logging.config.dictConfig(log_config(active.log_level, active.log_format))
            async with open_services(active) as services:
                app.state.services = services
                logger.info(
                    "jobcache api ready: backend %s, namespace %s",
                    active.cache_backend, active.cache_namespace,
                )  # fmt: skip
                yield
        except (ConfigurationError, StartupError) as error:
            logger.critical("jobcache api cannot start: %s", error)
            raise

    app = FastAPI(
        title="jobcache",
        summary="Run background jobs and serve their results from a cache.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(SettingsBodyLimit)
    install_error_handlers(app)
    count_redis_errors(app)
    app.add_middleware(RequestObserver)
    app.include_router(jobs.router)
    app.include_router(cached.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app


app = create_app()
