"""The Redis backend of the job queue: arq, with JSON instead of pickle on the wire."""

import json
from typing import Any

import redis
from arq.connections import ArqRedis, create_pool
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from shared.catalog import JobType
from shared.keys import cancel_channel, wakeup_channel
from shared.records import JobRecord
from shared.redis_connection import arq_redis_settings, explain_redis_error
from shared.settings import Settings


class Parameters(dict[str, Any]):
    """A job's parameters as the worker receives them; its repr hides the values, because arq
    logs each job's arguments and a payload must never reach the logs."""

    def __repr__(self) -> str:
        return f"<{len(self)} parameters>"


def job_serializer(job: dict[str, Any]) -> bytes:
    """arq's job envelope as JSON, so the queue holds no pickle and RedisInsight can read it."""
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode()


def job_deserializer(data: bytes) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(data)
    arguments = job.get("a")
    if isinstance(arguments, list):
        job["a"] = [Parameters(a) if isinstance(a, dict) else a for a in arguments]
    return job


async def open_arq_pool(settings: Settings) -> ArqRedis:
    """The arq pool of the queue's Redis; arq pings it once before returning it."""
    try:
        return await create_pool(
            arq_redis_settings(settings),
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            default_queue_name=settings.queue_name,
        )
    except (redis.RedisError, OSError, TimeoutError) as error:
        raise explain_redis_error(error, settings) from None


class RedisQueue:
    """Enqueues onto arq and wakes an idle worker, whose arq function of the same name runs the
    job. A lost wake-up only delays the job until the worker's fallback poll.

    The job is written as arq's own `enqueue_job` writes it (arq's serialize_job, job key and
    queue score), in one pipeline with the wake-up: one round trip instead of arq's four.
    arq's WATCH on the job key is left out because our ids are random and never reused.
    """

    def __init__(self, pool: ArqRedis, queue_name: str) -> None:
        self._pool = pool
        self._queue_name = queue_name
        self._wakeup_channel = wakeup_channel(queue_name)
        self._cancel_channel = cancel_channel(queue_name)

    async def enqueue(
        self, job_type: JobType, record: JobRecord, parameters: dict[str, Any]
    ) -> None:
        enqueue_time_ms = timestamp_ms()
        job = serialize_job(
            job_type.name,
            (record.id, parameters, record.created_at.isoformat(), record.owner),
            {},
            None,
            enqueue_time_ms,
            serializer=job_serializer,
        )
        # Not a MULTI: Redis runs a pipeline's commands in order, so the job exists before
        # its queue entry, and a failure on the way raises here and the api answers 503.
        async with self._pool.pipeline(transaction=False) as pipe:
            pipe.psetex(job_key_prefix + record.id, self._pool.expires_extra_ms, job)
            pipe.zadd(self._queue_name, {record.id: enqueue_time_ms})
            pipe.publish(self._wakeup_channel, record.id)
            await pipe.execute()

    async def cancel(self, job_id: str) -> None:
        """Off the queue if it waits there; the worker that runs it, if any, stops it."""
        async with self._pool.pipeline(transaction=True) as pipe:
            pipe.zrem(self._queue_name, job_id)
            pipe.delete(job_key_prefix + job_id)
            pipe.publish(self._cancel_channel, job_id)
            await pipe.execute()
