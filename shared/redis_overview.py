"""The Redis backend of the operator's view, on the queue's Redis (which never evicts).

Workers announce themselves with a heartbeat every HEARTBEAT_SECONDS: their status as JSON under
`<namespace>:worker:<id>` (expiring after WORKER_STALE_SECONDS) and their id in the sorted set
`<namespace>:workers`, scored by the time of the beat. Reading the live workers is one range of
that set and one MGET; nothing is ever scanned. The last RECENT_JOBS submitted jobs are the
sorted set `<namespace>:recent-jobs`, trimmed on each write.
"""

import time

import redis.asyncio
from arq.utils import timestamp_ms

from shared.overview import RECENT_JOBS, QueueDepth
from shared.records import JobRecord
from shared.workers import WorkerStatus

HEARTBEAT_SECONDS = 2.0
"""How often a worker announces itself: 3 commands in one round trip per beat."""
WORKER_STALE_SECONDS = 3 * HEARTBEAT_SECONDS
"""A worker not heard from for this long is gone (stopped, crashed or cut off from Redis)."""

TRIM_EVERY = 16


def workers_key(namespace: str) -> str:
    return f"{namespace}:workers"


def worker_key(namespace: str, worker_id: str) -> str:
    return f"{namespace}:worker:{worker_id}"


def recent_jobs_key(namespace: str) -> str:
    return f"{namespace}:recent-jobs"


class RedisOverview:
    def __init__(self, client: redis.asyncio.Redis, namespace: str, queue_name: str) -> None:
        self._client = client
        self._namespace = namespace
        self._queue_name = queue_name
        self._workers_key = workers_key(namespace)
        self._recent_key = recent_jobs_key(namespace)
        self._notes = 0

    async def queue_depth(self) -> QueueDepth:
        # arq scores each queued job with the time (ms) it is due.
        now = timestamp_ms()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zcount(self._queue_name, "-inf", now)
            pipe.zcount(self._queue_name, f"({now}", "+inf")
            due, deferred = await pipe.execute()
        return QueueDepth(due=int(due), deferred=int(deferred))

    async def workers(self) -> list[WorkerStatus]:
        fresh_since = time.time() - WORKER_STALE_SECONDS
        ids = await self._client.zrangebyscore(self._workers_key, fresh_since, "+inf")
        if not ids:
            return []
        keys = [worker_key(self._namespace, raw.decode()) for raw in ids]
        found = [
            WorkerStatus.model_validate_json(raw)
            for raw in await self._client.mget(keys)
            if raw is not None  # expired between the two reads
        ]
        return sorted(found, key=lambda status: status.started_at)

    async def recent_job_ids(self, limit: int) -> list[str]:
        if limit <= 0:
            return []
        ids = await self._client.zrevrange(self._recent_key, 0, min(limit, RECENT_JOBS) - 1)
        return [raw.decode() for raw in ids]

    async def note_submitted(self, record: JobRecord) -> None:
        # Trimmed on every TRIM_EVERY-th note only: the set holds at most that many extra ids
        # per api process, and a submission costs one command instead of two.
        self._notes = (self._notes + 1) % TRIM_EVERY
        if self._notes:
            await self._client.zadd(self._recent_key, {record.id: record.created_at.timestamp()})
            return
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zadd(self._recent_key, {record.id: record.created_at.timestamp()})
            pipe.zremrangebyrank(self._recent_key, 0, -(RECENT_JOBS + 1))
            await pipe.execute()

    async def announce(self, status: WorkerStatus) -> None:
        """A worker's heartbeat: its status, fresh for WORKER_STALE_SECONDS."""
        now = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(
                worker_key(self._namespace, status.id),
                status.model_dump_json(),
                px=int(WORKER_STALE_SECONDS * 1000),
            )
            pipe.zadd(self._workers_key, {status.id: now})
            # Whoever beats also forgets the workers that stopped beating.
            pipe.zremrangebyscore(self._workers_key, "-inf", now - WORKER_STALE_SECONDS)
            await pipe.execute()

    async def withdraw(self, worker_id: str) -> None:
        """A worker that stops takes itself off the list at once."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._workers_key, worker_id)
            pipe.delete(worker_key(self._namespace, worker_id))
            await pipe.execute()
