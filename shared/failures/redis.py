"""The Redis backend of the kept failures, on the queue's Redis (it never evicts): per queue a
sorted set of job ids by end time, one more per job type of it, and each job as it was queued,
all under the queue's hash tag (shared/keys.py), so that keeping a failure and taking it back
are each one MULTI to one node of a Redis Cluster."""

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

import redis.asyncio

from shared.connections import calls_redis
from shared.errors import JobNotRetryableError
from shared.failures.base import TAKE_PAGE
from shared.keys import Keys, in_progress_key, retry_key
from shared.queue.base import QueuedJob

LETTING_GO_WAIT = 5.0
"""Longest a retry waits for the worker that ended the job to let go of it (its lease key
gone): that worker's last write takes arq's keys of the job off the queue, and would take the
job's new run with them."""
LETTING_GO_PAUSE = 0.02


class RedisKeptFailures:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys, ttl: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl

    @property
    def ttl(self) -> int:
        return self._ttl

    @calls_redis("keep a failed job")
    async def keep(self, job: QueuedJob, ended_at: datetime) -> None:
        keys = self._keys
        ended_ms = round(ended_at.timestamp() * 1000)
        horizon_ms = round((time.time() - self._ttl) * 1000)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(keys.failed_job(job.queue, job.id), job.model_dump_json(), ex=self._ttl)
            for index in (
                keys.failed_jobs(job.queue),
                keys.failed_jobs_of_type(job.queue, job.name),
            ):
                pipe.zadd(index, {job.id: ended_ms})
                pipe.zremrangebyscore(index, "-inf", f"({horizon_ms}")
                pipe.expire(index, self._ttl)
            await pipe.execute()

    async def take(self, job_id: str, queue: str, name: str) -> QueuedJob | None:
        await self._until_let_go(job_id)
        return await self._take(job_id, queue, name)

    @calls_redis("take a failed job back")
    async def _take(self, job_id: str, queue: str, name: str) -> QueuedJob | None:
        keys = self._keys
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(keys.failed_job(queue, job_id))
            pipe.delete(keys.failed_job(queue, job_id))
            pipe.zrem(keys.failed_jobs(queue), job_id)
            pipe.zrem(keys.failed_jobs_of_type(queue, name), job_id)
            text, deleted, *_ = await pipe.execute()
        if text is None or not deleted:
            return None
        # arq's count of the job's deliveries, left behind when its worker died before letting
        # go of it (its lease ran out): the new run's attempts start over from 1.
        await self._client.delete(retry_key(job_id))
        return QueuedJob.model_validate_json(text)

    @calls_redis("see whether a job's worker let go of it")
    async def _until_let_go(self, job_id: str) -> None:
        deadline = time.monotonic() + LETTING_GO_WAIT
        while await self._client.exists(in_progress_key(job_id)):
            if time.monotonic() >= deadline:
                raise JobNotRetryableError(
                    job_id, "the worker that ran it has not let go of it yet; try again shortly"
                )
            await asyncio.sleep(LETTING_GO_PAUSE)

    @calls_redis("read the failed jobs")
    async def newest(
        self,
        queue: str,
        *,
        name: str | None = None,
        since: datetime | None = None,
        count: int = TAKE_PAGE,
    ) -> list[str]:
        keys = self._keys
        index = keys.failed_jobs(queue) if name is None else keys.failed_jobs_of_type(queue, name)
        earliest = "-inf" if since is None else round(since.timestamp() * 1000)
        horizon_ms = round((time.time() - self._ttl) * 1000)
        bottom = horizon_ms if since is None else max(horizon_ms, int(earliest))
        ids = await self._client.zrevrangebyscore(index, "+inf", bottom, start=0, num=count)
        return [job_id.decode() for job_id in ids]

    @calls_redis("read the failed jobs")
    async def get_many(self, queue: str, job_ids: Sequence[str]) -> list[QueuedJob]:
        if not job_ids:
            return []
        texts = await self._client.mget(
            [self._keys.failed_job(queue, job_id) for job_id in job_ids]
        )
        return [QueuedJob.model_validate_json(text) for text in texts if text is not None]

    @calls_redis("count the failed jobs")
    async def count(self, queue: str) -> int:
        horizon_ms = round((time.time() - self._ttl) * 1000)
        return int(await self._client.zcount(self._keys.failed_jobs(queue), horizon_ms, "+inf"))

    async def close(self) -> None:
        pass
