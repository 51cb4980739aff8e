"""The worker process: `python -m worker` runs `main()`, an arq worker over the job catalog.

The settings are read when the worker is built (not when this module is imported), and a
worker that cannot work (local mode, Redis refusing it) exits at once with a message.
"""

import asyncio
import logging.config
import multiprocessing
from collections.abc import Coroutine
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

import uvloop
from arq import Retry
from arq.worker import Function, func

from shared.cache import create_cache
from shared.catalog import JOB_TYPES, JobType
from shared.errors import ConfigurationError, StartupError
from shared.keys import cancel_channel, job_events_channel, wakeup_channel
from shared.logs import log_config
from shared.metrics import Metrics
from shared.records import UNFINISHED_RECORD_TTL
from shared.redis_connection import (
    address_options,
    cache_redis_client,
    check_redis,
)
from shared.redis_events import RedisJobEvents
from shared.redis_queue import job_deserializer, job_serializer
from shared.redis_quotas import RedisQuotaLedger
from shared.redis_records import RedisRecordStore
from shared.settings import Settings, load_settings
from shared.subscriptions import Subscription
from shared.workers import WorkerActivity, new_worker_id
from worker.claims import ClaimingWorker
from worker.implementations import IMPLEMENTATIONS
from worker.leases import Leases
from worker.monitoring import start_monitoring
from worker.outages import ride_out_outages
from worker.pool import WorkerPool
from worker.runner import REDELIVERIES, JobRunner, RetryLater

logger = logging.getLogger(__name__)

# arq's own timeout on an attempt, which is not the job's: the runner cuts the job's code off at
# the job type's timeout and records it. arq's would also cut off the record writes that wait
# out a Redis restart, and arq would then end the job as failed while its record said it would
# run again. A day, the longest a job may wait to start, leaves it a backstop only.
ARQ_BACKSTOP_TIMEOUT = float(UNFINISHED_RECORD_TTL)

# Seconds before a job whose attempt could not record its outcome runs again.
UNRECORDED_RETRY_DELAY = 1.0


def arq_function(job_type: JobType) -> Function:
    """The arq function that runs one job type through the runner."""

    async def run(
        ctx: dict[str, Any],
        job_id: str,
        parameters: dict[str, Any],
        created_at: str,
        owner: str | None = None,
    ) -> None:
        runner: JobRunner = ctx["runner"]
        leases: Leases = ctx["leases"]
        try:
            async with leases.hold(job_id):
                outcome = await runner.run(
                    job_type,
                    job_id,
                    parameters,
                    attempt=ctx["job_try"],
                    created_at=datetime.fromisoformat(created_at),
                    owner=owner,
                )
        except Exception:
            # The runner turns whatever the job raises into its record, so what arrives here
            # is a failure to record the outcome. arq would end the job and take it off the
            # queue while its record still said queued or running: it runs again instead,
            # and the runner ends it failed once the deliveries run out.
            logger.exception(
                "job %s (%s): attempt %d ended without its outcome recorded; it will run again",
                job_id, job_type.name, ctx["job_try"],
            )  # fmt: skip
            raise Retry(defer=UNRECORDED_RETRY_DELAY) from None
        if isinstance(outcome, RetryLater):
            raise Retry(defer=outcome.delay)

    return func(
        run,
        name=job_type.name,
        timeout=ARQ_BACKSTOP_TIMEOUT,
        # One delivery more than the runner accepts, so that the runner, not arq, ends a job
        # whose workers kept dying: its record then says failed instead of staying running.
        max_tries=job_type.max_attempts + REDELIVERIES + 1,
        keep_result=0,
    )


def create_cpu_pool(size: int) -> ProcessPoolExecutor:
    # spawn, not fork: forking a process that runs an event loop and Redis connections copies
    # their state into the child.
    return ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn"))


def keep_tasks_referenced(loop: asyncio.AbstractEventLoop) -> None:
    """Hold a reference to every task until it is done.

    arq starts its SIGTERM grace period as a task it keeps no reference to; the event loop
    holds tasks only weakly, so a garbage collection could drop it mid-wait (the asyncio docs
    warn of exactly this), and the worker would then never cut the grace short. This task
    factory keeps every task alive until it finishes.
    """
    running: set[asyncio.Future[Any]] = set()

    def create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
    ) -> asyncio.Future[Any]:
        task = asyncio.Task(coro, loop=loop, **options)
        running.add(task)
        task.add_done_callback(running.discard)
        return task

    loop.set_task_factory(create_task)  # type: ignore[arg-type]


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    keep_tasks_referenced(asyncio.get_running_loop())
    pool: WorkerPool = ctx["redis"]
    await pool.listen_for_wakeups(wakeup_channel(settings.queue_name))
    leases = Leases(pool, settings.worker_lease)
    leases.start()
    ctx["leases"] = leases
    cache = create_cache(settings)
    events_client = cache_redis_client(settings)
    # A worker waits out a Redis restart: every write of a record is retried until it lands.
    ride_out_outages(cache.client.connection_pool)
    ride_out_outages(events_client.connection_pool)
    cpu_pool = create_cpu_pool(settings.cpu_workers)
    ctx["cache"] = cache
    ctx["events_client"] = events_client
    ctx["cpu_pool"] = cpu_pool
    events = RedisJobEvents(events_client, job_events_channel(settings.cache_namespace))
    quotas = RedisQuotaLedger(events_client, settings.cache_namespace)
    records = RedisRecordStore(cache, settings.cache_ttl, events, quotas)
    activity = WorkerActivity(
        Metrics(), worker_id=ctx["worker_id"], concurrency=settings.worker_concurrency
    )
    runner = JobRunner(records, IMPLEMENTATIONS, cpu_pool, activity)
    ctx["runner"] = runner

    def cancel(job_id: bytes) -> None:
        runner.cancel(job_id.decode())

    cancellations = Subscription(pool, cancel_channel(settings.queue_name), cancel)
    await cancellations.start()
    ctx["cancellations"] = cancellations
    ctx["monitoring"] = await start_monitoring(settings, pool, activity)
    logger.info(
        "worker ready: queue %s, %d job types, %d at once",
        settings.queue_name, len(JOB_TYPES), settings.worker_concurrency,
    )  # fmt: skip


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["redis"].stop_listening()
    for name in ("monitoring", "cancellations", "leases"):
        if name in ctx:
            await ctx[name].close()
    if "cache" in ctx:
        await ctx["cache"].close()
    if "events_client" in ctx:
        await ctx["events_client"].aclose()
    if "cpu_pool" in ctx:
        ctx["cpu_pool"].shutdown(wait=False, cancel_futures=True)
    logger.info("worker stopped")


def worker_options(settings: Settings) -> dict[str, Any]:
    """Everything the worker is built from, derived from one settings object."""
    return {
        "functions": [arq_function(job_type) for job_type in JOB_TYPES.values()],
        "redis_pool": WorkerPool(
            queue_name=settings.queue_name,
            fallback_poll=settings.worker_fallback_poll,
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            default_queue_name=settings.queue_name,
            **address_options(settings.queue_redis, settings),
        ),
        "queue_name": settings.queue_name,
        # Not a poll of Redis: with the queue empty, the pool's read waits for a wake-up. It is
        # the pause after a read that found work, and how often the loop of a worker busy with
        # max_jobs jobs turns (without a Redis command) to look for a free slot.
        "poll_delay": 0.001,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "max_jobs": settings.worker_concurrency,
        # On SIGTERM: take no new job, give running ones this long, then put them back.
        "job_completion_wait": settings.worker_shutdown_grace,
        "keep_result": 0,
        "log_results": False,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "worker_id": new_worker_id(),
        "lease_seconds": settings.worker_lease,
    }


def settings_for_worker() -> Settings:
    """The settings of a worker process, or SystemExit with the reason it cannot run."""
    try:
        settings = load_settings()
        if settings.cache_backend != "redis":
            raise ConfigurationError(
                f"CACHE_BACKEND={settings.cache_backend}: a worker needs CACHE_BACKEND=redis. "
                "In the local mode the api runs jobs itself and keeps results in its own "
                "memory, where a separate worker's results could never reach it."
            )
        check_redis(settings)
    except (ConfigurationError, StartupError) as error:
        raise SystemExit(f"jobcache worker cannot start: {error}") from None
    return settings


def main() -> None:
    """Read the settings, build the worker on uvloop's event loop and run it until SIGTERM or
    SIGINT, as `arq <settings>` would, with the worker of worker/claims.py.

    uvloop, as uvicorn gives the api: a worker spends most of its time in Redis round trips,
    where uvloop's socket and callback handling are cheaper: through one worker, the
    benchmark's in-process enqueue path (bench/workloads.py) ran about 30% more jobs per
    second than on asyncio's own loop. arq's Worker takes the current event loop when it is
    built.
    """
    settings = settings_for_worker()
    # Before arq logs its first line, so that every line has the chosen format.
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    asyncio.set_event_loop(uvloop.new_event_loop())
    ClaimingWorker(**worker_options(settings)).run()
