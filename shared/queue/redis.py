"""The Redis backend of the job queue: arq, with JSON instead of pickle on the wire, and the
queued job's message as the single argument of arq's job."""

import json
from collections.abc import Callable, Sequence
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio.client import Pipeline

from shared.catalog import DEFAULT_QUEUE
from shared.connections import REDIS_FAILURES, calls_redis, client_options, explain_redis_error
from shared.grouped_pipeline import GroupedPipeline
from shared.keys import Keys, arq_job_key
from shared.queue.base import PAUSED_MESSAGE, RESUMED_MESSAGE, QueuedJob
from shared.replication import ReplicaAcks, ReplicasBehindError
from shared.settings import Settings
from shared.subscriptions import Subscription


def job_serializer(job: dict[str, Any]) -> bytes:
    """arq's job envelope as JSON, so the queue holds no pickle and RedisInsight can read it."""
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode()


def job_deserializer(data: bytes) -> dict[str, Any]:
    """arq's envelope back, with the queued job as a QueuedJob: the worker's arq function
    receives the typed message, and arq's log lines show it without its parameters."""
    job: dict[str, Any] = json.loads(data)
    arguments = job.get("a")
    if isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], dict):
        job["a"] = [QueuedJob.model_validate(arguments[0])]
    return job


async def open_arq_pool(settings: Settings) -> ArqRedis:
    """The api's arq pool of the queue's Redis (through Sentinel, if set), pinged once."""
    pool = ArqRedis(
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        default_queue_name=settings.keys.queue(DEFAULT_QUEUE),
        **client_options(settings.queue_redis, settings),
    )
    try:
        await pool.ping()
    except REDIS_FAILURES as error:
        await pool.aclose()
        raise explain_redis_error(error, settings) from None
    return pool


class RedisQueue:
    """Enqueues onto arq and wakes an idle worker, whose arq function of the job type's name
    runs the job. A lost wake-up only delays the job until the worker's fallback poll.

    Each job is written as arq's own `enqueue_job` writes it (arq's serialize_job, job key and
    queue score), in one pipeline with the wake-up: one round trip instead of arq's four, and
    still one for a batch. arq's WATCH on the job key is left out because our ids are random
    and never reused.
    """

    def __init__(self, pool: ArqRedis, keys: Keys, replica_acks: ReplicaAcks | None = None) -> None:
        self._pool = pool
        self._keys = keys
        self._replica_acks = replica_acks
        self._cancels: Subscription | None = None
        # Submissions of the same loop turn (a busy api) share a round trip, and each queue's
        # wake-up.
        self._grouped: GroupedPipeline[dict[str, dict[str, int]]] = GroupedPipeline(
            pool, self._wake_all_in
        )

    async def enqueue(self, job: QueuedJob) -> None:
        await self.enqueue_many((job,))

    @calls_redis("queue jobs")
    async def enqueue_many(self, jobs: Sequence[QueuedJob]) -> None:
        """One round trip however many jobs (two with REDIS_MIN_REPLICAS_ACK), shared with the
        submissions of the same loop turn: each job's envelope, one ZADD per queue and one
        wake-up per queue, naming the job when it is the only one (a wake-up that names none
        has the idle workers read the queue)."""
        enqueue_time_ms = timestamp_ms()
        by_queue: dict[str, dict[str, int]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, {})[job.id] = enqueue_time_ms

        # Not a MULTI: Redis runs a pipeline's commands in order, so the jobs exist before
        # their queue entries, and a failure on the way raises here and the api answers 503.
        def add(pipe: Pipeline) -> int:
            for job in jobs:
                envelope = serialize_job(
                    job.name,
                    (job.model_dump(mode="json", exclude_defaults=True),),
                    {},
                    None,
                    enqueue_time_ms,
                    serializer=job_serializer,
                )
                pipe.psetex(arq_job_key(job.id), self._pool.expires_extra_ms, envelope)
            for queue, entries in by_queue.items():
                pipe.zadd(self._keys.queue(queue), entries)
            return len(jobs) + len(by_queue)

        acks = self._replica_acks
        if acks is None:
            await self._grouped.send(add, by_queue)
            return
        async with self._pool.pipeline(transaction=False) as pipe:
            add(pipe)
            acks.wait_in(pipe)
            replies = await pipe.execute()
        try:
            acks.check(replies[-1], f"job {jobs[0].id}" if len(jobs) == 1 else "the jobs")
        except ReplicasBehindError:
            # Not accepted: taken off the queue again, so that they do not run after the
            # client was told it failed (they may still, if the master dies meanwhile).
            await self._take_back(by_queue)
            raise
        # Only jobs the replicas have wake a worker (one round trip more).
        async with self._pool.pipeline(transaction=False) as pipe:
            self._wake_in(pipe, by_queue)
            await pipe.execute()

    def _wake_all_in(self, pipe: Pipeline, submissions: list[dict[str, dict[str, int]]]) -> None:
        """One wake-up per queue for every submission of a group."""
        by_queue: dict[str, dict[str, int]] = {}
        for submission in submissions:
            for queue, entries in submission.items():
                by_queue.setdefault(queue, {}).update(entries)
        self._wake_in(pipe, by_queue)

    def _wake_in(self, pipe: Pipeline, by_queue: dict[str, dict[str, int]]) -> None:
        for queue, entries in by_queue.items():
            named = next(iter(entries)) if len(entries) == 1 else ""
            pipe.publish(self._keys.wakeup_channel(queue), named)

    async def _take_back(self, by_queue: dict[str, dict[str, int]]) -> None:
        async with self._pool.pipeline(transaction=True) as pipe:
            for queue, entries in by_queue.items():
                pipe.zrem(self._keys.queue(queue), *entries)
                pipe.delete(*(arq_job_key(job_id) for job_id in entries))
            await pipe.execute()

    @calls_redis("cancel a job")
    async def cancel(self, job_id: str, queue: str) -> None:
        """Off its queue if it waits there; the worker that runs it, if any, stops it."""
        async with self._pool.pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys.queue(queue), job_id)
            pipe.delete(arq_job_key(job_id))
            pipe.publish(self._keys.cancel_channel, job_id)
            await pipe.execute()

    @calls_redis("pause a queue")
    async def pause(self, queue: str) -> None:
        async with self._pool.pipeline(transaction=False) as pipe:
            pipe.sadd(self._keys.paused_queues, queue)
            pipe.publish(self._keys.wakeup_channel(queue), PAUSED_MESSAGE)
            await pipe.execute()

    @calls_redis("resume a queue")
    async def resume(self, queue: str) -> None:
        async with self._pool.pipeline(transaction=False) as pipe:
            pipe.srem(self._keys.paused_queues, queue)
            pipe.publish(self._keys.wakeup_channel(queue), RESUMED_MESSAGE)
            await pipe.execute()

    @calls_redis("read the paused queues")
    async def paused(self) -> set[str]:
        names = await self._pool.smembers(self._keys.paused_queues)  # type: ignore[misc]
        return {name.decode() for name in names}

    @calls_redis("subscribe to cancels")
    async def listen_for_cancels(self, stop: Callable[[str], object]) -> None:
        def cancelled(job_id: bytes) -> None:
            stop(job_id.decode())

        self._cancels = Subscription(self._pool, self._keys.cancel_channel, cancelled)
        await self._cancels.start()

    async def close(self) -> None:
        if self._cancels is not None:
            await self._cancels.close()
