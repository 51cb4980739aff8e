"""The one way a process opens its backend: `open_backend` builds the object graph of its mode
(records, job events, queue, quotas, overview, the dashboard's history, schedules, job lists,
Idempotency-Keys, the outbox of callbacks, the kept failures, and the shared store of cached
responses), on Redis or in memory, and closes it in reverse.

This is the only place that chooses between the backends; everything else talks to the ports.
The api's lifespan and the worker's startup both open it, each in its role: the api fails fast
on a Redis that does not answer (a request gets 503), and listens for job events; a worker's
clients wait out a Redis restart instead (shared/outages.py).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

import redis.asyncio
from arq.connections import ArqRedis

from shared.cache import memory_cache, redis_cache
from shared.callbacks.base import CallbackOutbox
from shared.callbacks.memory import MemoryCallbackOutbox
from shared.callbacks.redis import RedisCallbackOutbox
from shared.catalog import Catalog
from shared.connections import REDIS_FAILURES, cache_redis_client, explain_redis_error
from shared.errors import BackendUnavailableError, ConfigurationError
from shared.events.base import JobEvents
from shared.events.memory import MemoryJobEvents
from shared.events.redis import RedisJobEvents
from shared.failures.base import KeptFailures
from shared.failures.memory import MemoryKeptFailures
from shared.failures.redis import RedisKeptFailures
from shared.history.base import History
from shared.history.memory import MemoryHistory
from shared.history.redis import RedisHistory
from shared.idempotency.base import IdempotencyBook
from shared.idempotency.memory import MemoryIdempotencyBook
from shared.idempotency.redis import RedisIdempotencyBook
from shared.keys import ResponseKeys
from shared.listing.base import JobListing, longest_record_life
from shared.listing.memory import MemoryJobListing
from shared.listing.redis import RedisJobListing
from shared.outages import ride_out_outages
from shared.overview.base import Overview
from shared.overview.memory import MemoryOverview
from shared.overview.redis import RedisOverview
from shared.queue.base import JobQueue
from shared.queue.memory import MemoryQueue
from shared.queue.redis import RedisQueue, open_arq_pool
from shared.quotas.base import QuotaLedger
from shared.quotas.memory import MemoryQuotaLedger
from shared.quotas.redis import RedisQuotaLedger
from shared.records.redis import RedisRecordStore
from shared.records.store import RecordStore
from shared.replication import ReplicaAcks
from shared.responses.base import ResponseStore
from shared.responses.memory import MemoryResponseStore
from shared.responses.redis import RedisResponseStore
from shared.schedules.base import ScheduleBook
from shared.schedules.memory import MemoryScheduleBook
from shared.schedules.redis import RedisScheduleBook
from shared.sentinel import FailoverWatch
from shared.settings import Settings


class Role(StrEnum):
    API = "api"
    WORKER = "worker"


@dataclass(frozen=True)
class Backend:
    """The stores of one process, open for its lifetime."""

    records: RecordStore
    events: JobEvents
    queue: JobQueue
    quotas: QuotaLedger
    overview: Overview
    history: History
    """The last hour of job figures per interval (the dashboard's charts); workers add to it."""
    responses: ResponseStore
    """Where the api's response cache keeps responses (api/response_cache opens it)."""
    schedules: ScheduleBook
    """The claimed due times and last runs of the scheduled job types (worker/scheduler.py)."""
    listing: JobListing
    """Each owner's list of its jobs (GET /jobs); the records store writes it."""
    idempotency: IdempotencyBook
    """The Idempotency-Keys of the last 24 hours and the jobs each made."""
    callbacks: CallbackOutbox
    """The callbacks of finished jobs until they are delivered (worker/deliveries.py)."""
    failures: KeptFailures
    """The jobs that ended failed, cancelled or expired, kept FAILED_JOB_TTL to be run again."""
    queue_client: redis.asyncio.Redis | None
    """A client of the queue's Redis (the arq pool), for health checks; None without Redis."""

    async def redis_answers(self) -> bool | None:
        """Whether the queue's and the cache's Redis both answer a ping; None without Redis."""
        if self.queue_client is None:
            return None
        try:
            await self.queue_client.ping()
            await self.records.ping()
        except (BackendUnavailableError, *REDIS_FAILURES):
            return False
        return True


InProcessWorker = Callable[
    [Backend, MemoryQueue, MemoryOverview], AbstractAsyncContextManager[None]
]
"""Runs the local mode's jobs in this process (the api hosts worker/embedded.py): given the
backend, the memory queue it takes jobs from and the overview that shows it."""


@asynccontextmanager
async def open_backend(
    settings: Settings,
    role: Role,
    *,
    queue_client: ArqRedis | None = None,
    in_process_worker: InProcessWorker | None = None,
    catalog: Catalog | None = None,
) -> AsyncIterator[Backend]:
    """Open the backend `settings.cache_backend` names, for an api or a worker process.

    `queue_client`: the arq pool a worker already made (arq's Worker needs its pool before it
    starts); the api's is opened here. `in_process_worker`: what runs jobs in the local mode.
    `catalog`: the job types, whose longest record life bounds the job lists (CACHE_TTL's
    alone without it).
    A Redis that does not answer or refuses the credentials is a StartupError naming the
    setting to check.
    """
    backend = settings.cache_backend
    keep_listed = longest_record_life(settings.cache_ttl, catalog.values() if catalog else ())
    async with AsyncExitStack() as stack:
        if backend == "redis":
            yield await _open_redis(settings, role, stack, queue_client, keep_listed)
        elif backend == "local":
            if role is not Role.API or in_process_worker is None:
                raise ConfigurationError(
                    "CACHE_BACKEND=local: jobs run inside the api process, which must host "
                    "them; a separate worker needs CACHE_BACKEND=redis"
                )
            yield await _open_memory(settings, stack, in_process_worker, keep_listed)
        else:
            assert_never(backend)


async def _open_memory(
    settings: Settings,
    stack: AsyncExitStack,
    in_process_worker: InProcessWorker,
    keep_listed: int,
) -> Backend:
    cache = memory_cache(settings)
    stack.push_async_callback(cache.close)
    events = MemoryJobEvents()
    queue = MemoryQueue()
    stack.push_async_callback(queue.close)
    overview = MemoryOverview(queue.backlog, queue.oldest_due_at)
    stack.push_async_callback(overview.close)
    history = MemoryHistory()
    stack.push_async_callback(history.close)
    schedules = MemoryScheduleBook()
    stack.push_async_callback(schedules.close)
    listing = MemoryJobListing(keep_listed)
    built = Backend(
        records=RecordStore(cache, settings.cache_ttl, events, listing),
        events=events,
        queue=queue,
        quotas=MemoryQuotaLedger(),
        overview=overview,
        history=history,
        responses=MemoryResponseStore(),
        schedules=schedules,
        listing=listing,
        idempotency=MemoryIdempotencyBook(),
        callbacks=MemoryCallbackOutbox(),
        failures=MemoryKeptFailures(settings.failed_job_ttl),
        queue_client=None,
    )
    await stack.enter_async_context(in_process_worker(built, queue, overview))
    return built


async def _open_redis(
    settings: Settings,
    role: Role,
    stack: AsyncExitStack,
    queue_client: ArqRedis | None,
    keep_listed: int,
) -> Backend:
    keys = settings.keys
    if queue_client is None:
        queue_client = await open_arq_pool(settings)
        stack.push_async_callback(queue_client.aclose)
    cache = redis_cache(settings)
    stack.push_async_callback(cache.close)
    # One client of the cache's Redis for job events, quotas and cached responses.
    cache_client = cache_redis_client(settings)
    stack.push_async_callback(cache_client.aclose)
    if settings.sentinels:
        watch = FailoverWatch(
            settings,
            [
                queue_client.connection_pool,
                cache.client.connection_pool,
                cache_client.connection_pool,
            ],
        )
        await watch.start()
        stack.push_async_callback(watch.close)
    if role is Role.WORKER:
        # A worker waits out a Redis restart: every write of a record is retried until it lands.
        ride_out_outages(cache.client.connection_pool)
        ride_out_outages(cache_client.connection_pool)
    events = RedisJobEvents(cache_client, keys.job_events_channel)
    replica_acks = ReplicaAcks.of(settings)
    listing = RedisJobListing(cache_client, keys, keep_listed)
    records = RedisRecordStore(
        cache,
        settings.cache_ttl,
        events,
        replica_acks,
        wait_for_replicas=role is Role.WORKER,
        listing=listing,
    )
    if role is Role.API:
        await _answered(settings, records.ping(), cache=True)
        await _answered(settings, events.start_listening(), cache=True)
        stack.push_async_callback(events.close)
    queue = RedisQueue(queue_client, keys, replica_acks)
    stack.push_async_callback(queue.close)
    overview = RedisOverview(queue_client, keys)
    stack.push_async_callback(overview.close)
    history = RedisHistory(queue_client, keys)
    stack.push_async_callback(history.close)
    schedules = RedisScheduleBook(queue_client, keys)
    stack.push_async_callback(schedules.close)
    # On the queue's Redis, which never evicts: a callback must outlive its worker.
    callbacks = RedisCallbackOutbox(
        queue_client, keys, replica_acks, keep_trying=role is Role.WORKER
    )
    stack.push_async_callback(callbacks.close)
    return Backend(
        records=records,
        events=events,
        queue=queue,
        quotas=RedisQuotaLedger(cache_client, keys),
        overview=overview,
        history=history,
        responses=RedisResponseStore(cache_client, ResponseKeys(keys.namespace).channel),
        schedules=schedules,
        listing=listing,
        idempotency=RedisIdempotencyBook(cache_client, keys),
        callbacks=callbacks,
        failures=RedisKeptFailures(queue_client, keys, settings.failed_job_ttl),
        queue_client=queue_client,
    )


async def _answered(settings: Settings, call: Awaitable[None], *, cache: bool) -> None:
    """Await a first call to Redis, or raise a StartupError that names what to check."""
    try:
        await call
    except (BackendUnavailableError, *REDIS_FAILURES) as error:
        raise explain_redis_error(error, settings, cache=cache) from None
