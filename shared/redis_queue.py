"""The Redis backend of the job queue: arq, with JSON instead of pickle on the wire."""

import json
from typing import Any

import redis
from arq.connections import ArqRedis, create_pool

from shared.catalog import JobType
from shared.keys import wakeup_channel
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
    """Enqueues onto arq, then wakes an idle worker, whose arq function of the same name runs
    the job. A lost wake-up only delays the job until the worker's fallback poll."""

    def __init__(self, pool: ArqRedis, queue_name: str) -> None:
        self._pool = pool
        self._queue_name = queue_name
        self._wakeup_channel = wakeup_channel(queue_name)

    async def enqueue(
        self, job_type: JobType, record: JobRecord, parameters: dict[str, Any]
    ) -> None:
        await self._pool.enqueue_job(
            job_type.name,
            record.id,
            parameters,
            record.created_at.isoformat(),
            _job_id=record.id,
            _queue_name=self._queue_name,
        )
        await self._pool.publish(self._wakeup_channel, b"")
