"""The worker process: `python -m worker` runs `main()`, an arq worker over the job types of the
modules JOBCACHE_JOBS names.

The settings are read when the worker is built (not when this module is imported), and a
worker that cannot work (local mode, Redis refusing it) exits at once with a message.
"""

import asyncio
import logging.config
import os
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

import uvloop
from arq import Retry
from arq.worker import Function, func

from shared.activity import WorkerActivity, new_worker_id
from shared.backend import Role, open_backend
from shared.catalog import Catalog, JobType, load_catalog
from shared.connections import check_redis, client_options
from shared.errors import ConfigurationError, StartupError
from shared.logs import log_config
from shared.metrics import Metrics
from shared.queue import QueuedJob
from shared.queue.redis import job_deserializer, job_serializer
from shared.records import UNFINISHED_RECORD_TTL
from shared.settings import Settings, load_settings
from shared.tracing import WORKER_SERVICE, open_tracing, tracing_config
from worker.arq_internals import ClaimingWorker, QueueWaitingRedis
from worker.deliveries import CLOSE_GRACE as DELIVERIES_CLOSE_GRACE
from worker.deliveries import CallbackDeliverer
from worker.monitoring import WITHDRAW_TIMEOUT, start_monitoring
from worker.runner import REDELIVERIES, JobRunner, RetryLater, running_jobs
from worker.scheduler import CLOSE_GRACE as SCHEDULER_CLOSE_GRACE
from worker.scheduler import Scheduler
from worker.stopping import StopDeadline

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

    async def run(ctx: dict[str, Any], message: QueuedJob | dict[str, Any]) -> None:
        """`message` is the queued job: typed by the queue's deserializer (shared/queue/redis.py),
        or its JSON data from a pool without it (validated here either way)."""
        job = QueuedJob.model_validate(message)
        runner: JobRunner = ctx["runner"]
        try:
            outcome = await runner.run(job_type, job, attempt=ctx["job_try"])
        except Exception:
            # The runner turns whatever the job raises into its record, so what arrives here
            # is a failure to record the outcome. arq would end the job and take it off the
            # queue while its record still said queued or running: it runs again instead,
            # and the runner ends it failed once the deliveries run out.
            logger.exception(
                "job %s (%s): attempt %d ended without its outcome recorded; it will run again",
                job.id, job_type.name, ctx["job_try"],
            )  # fmt: skip
            raise Retry(defer=UNRECORDED_RETRY_DELAY) from None
        if isinstance(outcome, RetryLater):
            raise Retry(defer=outcome.delay)
        if job.callback_url is not None:
            ctx["callback_ready"] = True  # once arq has let go of the job (job_ended)

    return func(
        run,
        name=job_type.name,
        timeout=ARQ_BACKSTOP_TIMEOUT,
        # One delivery more than the runner accepts, so that the runner, not arq, ends a job
        # whose workers kept dying: its record then says failed instead of staying running.
        max_tries=job_type.max_attempts + REDELIVERIES + 1,
        keep_result=0,
    )


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


async def job_ended(ctx: dict[str, Any]) -> None:
    """arq's hook after it let go of a job (its in-progress key is deleted): a callback the
    job ended with may go now, and this worker's deliverer takes it at once."""
    if ctx.get("callback_ready"):
        ctx["callbacks"].release(ctx["job_id"])


async def startup(ctx: dict[str, Any]) -> None:
    """Open what the worker needs, all on one exit stack that shutdown closes in reverse."""
    settings: Settings = ctx["settings"]
    catalog: Catalog = ctx["catalog"]
    keep_tasks_referenced(asyncio.get_running_loop())
    resources = AsyncExitStack()
    ctx["resources"] = resources  # before anything opens: shutdown closes what did
    pool: QueueWaitingRedis = ctx["redis"]
    queues: list[str] = ctx["queues"]
    keys = settings.keys
    await pool.listen_for_wakeups(
        {keys.queue(name): keys.wakeup_channel(name) for name in queues},
        keys.paused_queues,
        {keys.queue(name): name for name in queues},
    )
    resources.push_async_callback(pool.stop_listening)
    # Before the runner and the deliverer, which ask whether spans are exported.
    await resources.enter_async_context(open_tracing(WORKER_SERVICE))
    backend = await resources.enter_async_context(
        open_backend(settings, Role.WORKER, queue_client=pool, catalog=catalog)
    )
    activity = WorkerActivity(
        Metrics(catalog, worker=True),
        worker_id=ctx["worker_id"],
        concurrency=settings.worker_concurrency,
        queues=queues,
    )
    # Past its deadline, a stopping worker gives up what Redis does not answer (stopping.py).
    stop: StopDeadline = ctx["stop"]
    ctx["runner"] = await resources.enter_async_context(
        running_jobs(settings, backend, activity, stop)
    )
    ctx["callbacks"] = backend.callbacks
    # Its own task and connections, apart from the job slots: a slow receiver holds up no job.
    deliverer = CallbackDeliverer(settings, backend, catalog, activity.metrics)
    await deliverer.start()
    resources.push_async_callback(lambda: deliverer.close(stop.cap(DELIVERIES_CLOSE_GRACE)))
    monitoring = await start_monitoring(
        settings, backend.overview, activity, backend.history, catalog.queues
    )
    resources.push_async_callback(lambda: monitoring.close(stop.cap(WITHDRAW_TIMEOUT)))
    # Every worker runs the scheduler; its claims make each due time run once.
    scheduler = Scheduler(catalog, backend, ctx["worker_id"], activity.metrics)
    scheduler.start()
    resources.push_async_callback(lambda: scheduler.close(stop.cap(SCHEDULER_CLOSE_GRACE)))
    logger.info(
        "worker ready: queues %s, %d job types, %d at once",
        ", ".join(queues), len(catalog), settings.worker_concurrency,
    )  # fmt: skip


async def shutdown(ctx: dict[str, Any]) -> None:
    if "resources" in ctx:
        await ctx["resources"].aclose()
    logger.info("worker stopped")


def served_queues(settings: Settings, catalog: Catalog) -> list[str]:
    """The queues this worker serves: those WORKER_QUEUES names, or every queue a job type is
    on; a name no job type uses is a ConfigurationError (a typo would leave its jobs queued)."""
    declared = catalog.queues
    chosen = settings.served_queues or declared
    unknown = [name for name in chosen if name not in declared]
    if unknown:
        raise ConfigurationError(
            f"WORKER_QUEUES names {', '.join(unknown)}, on which no job type is; the job types "
            f"of JOBCACHE_JOBS are on: {', '.join(declared)}"
        )
    return chosen


def worker_options(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """Everything the worker is built from, derived from the settings and the job types."""
    queues = served_queues(settings, catalog)
    queue_keys = [settings.keys.queue(name) for name in queues]
    return {
        "functions": [arq_function(job_type) for job_type in catalog.values()],
        "redis_pool": QueueWaitingRedis(
            queues=queue_keys,
            fallback_poll=settings.worker_fallback_poll,
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            default_queue_name=queue_keys[0],
            **client_options(settings.queue_redis, settings),
        ),
        "queue_name": queue_keys[0],
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
        "after_job_end": job_ended,
        "ctx": {"settings": settings, "catalog": catalog, "queues": queues},
        "worker_id": new_worker_id(),
        "lease_seconds": settings.worker_lease,
    }


def settings_for_worker() -> tuple[Settings, Catalog]:
    """The settings and job types of a worker process, or SystemExit with the reason it cannot
    run."""
    try:
        settings = load_settings()
        catalog = load_catalog(settings.job_modules)
        served_queues(settings, catalog)
        tracing_config(os.environ, WORKER_SERVICE)
        if settings.cache_backend != "redis":
            raise ConfigurationError(
                f"CACHE_BACKEND={settings.cache_backend}: a worker needs CACHE_BACKEND=redis. "
                "In the local mode the api runs jobs itself and keeps results in its own "
                "memory, where a separate worker's results could never reach it."
            )
        check_redis(settings)
    except (ConfigurationError, StartupError) as error:
        raise SystemExit(f"jobcache worker cannot start: {error}") from None
    return settings, catalog


def main() -> None:
    """Read the settings, build the worker on uvloop's event loop and run it until SIGTERM or
    SIGINT, as `arq <settings>` would, with the worker of worker/arq_internals.py.

    uvloop, as uvicorn gives the api: a worker spends most of its time in Redis round trips,
    where uvloop's socket and callback handling are cheaper: through one worker, the
    benchmark's in-process enqueue path (bench/workloads.py) ran about 30% more jobs per
    second than on asyncio's own loop. arq's Worker takes the current event loop when it is
    built.
    """
    settings, catalog = settings_for_worker()
    # Before arq logs its first line, so that every line has the chosen format.
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    asyncio.set_event_loop(uvloop.new_event_loop())
    ClaimingWorker(**worker_options(settings, catalog)).run()
