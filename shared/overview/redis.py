"""The Redis backend of the operator's view, on the queue's Redis (which never evicts).

Workers announce themselves with a heartbeat every HEARTBEAT_SECONDS (2 commands in one round
trip, 3 every PRUNE_EVERY beats): their status as JSON under their worker key (expiring after
WORKER_STALE_SECONDS) and their id in the workers sorted set, scored by the time of the beat.
Reading the live workers is one range of that set and one MGET; nothing is ever scanned. The
keys are named in shared/keys.py.
"""

import time
from collections.abc import Collection, Sequence

import redis.asyncio
from arq.utils import timestamp_ms

from shared.activity import WorkerStatus
from shared.connections import calls_redis
from shared.keys import Keys
from shared.overview.base import WORKER_STALE_SECONDS, QueueDepth

PRUNE_EVERY = 5
"""A worker drops the stale workers from the workers set on one heartbeat in this many."""


class RedisOverview:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._workers_key = keys.workers
        self._beats = 0

    @calls_redis("read the queues' depths")
    async def queue_depths(
        self, queues: Sequence[str], running: Collection[str] = ()
    ) -> dict[str, QueueDepth]:
        # arq scores each queued job with the time (ms) it is due, and a claimed one with the
        # end of its worker's lease (worker/claims.py); it stays on its queue until it ends.
        # The running jobs' scores (those the workers name) say which of the later scores are
        # running jobs, not deferred ones.
        now = timestamp_ms()
        running_ids = list(running)
        reads = 4 if running_ids else 3
        async with self._client.pipeline(transaction=False) as pipe:
            for queue in queues:
                key = self._keys.queue(queue)
                pipe.zcount(key, "-inf", now)
                pipe.zcount(key, f"({now}", "+inf")
                pipe.zrangebyscore(
                    key, "-inf", now, start=0, num=len(running_ids) + 1, withscores=True
                )
                if running_ids:
                    pipe.zmscore(key, running_ids)
            found = await pipe.execute()
        depths = {}
        for index, queue in enumerate(queues):
            due, later, first = found[index * reads : index * reads + 3]
            leased = 0
            if running_ids:
                leased = sum(
                    score is not None and score > now for score in found[index * reads + 3]
                )
            depths[queue] = QueueDepth(
                due=int(due) + leased,
                deferred=max(0, int(later) - leased),
                oldest_due_at=oldest(first, running),
            )
        return depths

    @calls_redis("read the live workers")
    async def workers(self) -> list[WorkerStatus]:
        fresh_since = time.time() - WORKER_STALE_SECONDS
        ids = await self._client.zrangebyscore(self._workers_key, fresh_since, "+inf")
        if not ids:
            return []
        keys = [self._keys.worker(raw.decode()) for raw in ids]
        found = [
            WorkerStatus.model_validate_json(raw)
            for raw in await self._client.mget(keys)
            if raw is not None  # expired between the two reads
        ]
        return sorted(found, key=lambda status: status.started_at)

    async def close(self) -> None:
        """Nothing to do: every write is made when it is asked for."""

    @calls_redis("announce a worker")
    async def announce(self, status: WorkerStatus) -> None:
        """A worker's heartbeat: its status, fresh for WORKER_STALE_SECONDS."""
        now = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(
                self._keys.worker(status.id),
                status.model_dump_json(),
                px=int(WORKER_STALE_SECONDS * 1000),
            )
            pipe.zadd(self._workers_key, {status.id: now})
            # Whoever beats also forgets, now and then, the workers that stopped beating: the
            # reads take the fresh ones only, so the set must only stay small.
            if self._beats % PRUNE_EVERY == 0:
                pipe.zremrangebyscore(self._workers_key, "-inf", now - WORKER_STALE_SECONDS)
            self._beats += 1
            await pipe.execute()

    @calls_redis("withdraw a worker")
    async def withdraw(self, worker_id: str) -> None:
        """A worker that stops takes itself off the list at once."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._workers_key, worker_id)
            pipe.delete(self._keys.worker(worker_id))
            await pipe.execute()


def oldest(first: list[tuple[bytes, float]], running: Collection[str]) -> float | None:
    """When the first of a queue's due jobs (id and score, oldest first) that is not running
    became due, in seconds since the epoch."""
    for job_id, score in first:
        if job_id.decode() not in running:
            return score / 1000
    return None
