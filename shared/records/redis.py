"""The record store on Redis: a record and its announcement reach Redis in one round trip, and
a Redis failure is raised as BackendUnavailableError."""

import asyncio
import logging
from collections.abc import Sequence

from aiocache import RedisCache

from shared.connections import calls_redis
from shared.events.redis import RedisJobEvents
from shared.keys import job_record_key
from shared.records.model import JobRecord, JobStatus
from shared.records.store import RecordStore
from shared.replication import ReplicaAcks, ReplicasBehindError

logger = logging.getLogger(__name__)

REPLICA_RETRY_FIRST = 0.1
REPLICA_RETRY_CAP = 2.0
"""A worker writes an outcome the replicas did not acknowledge again after these seconds,
doubling."""

KEPT_THROUGH_FAILOVER = frozenset(
    (JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
)
"""Records written only after REDIS_MIN_REPLICAS_ACK replicas have them: a job accepted and a
job's outcome (a running job's records are not worth a wait: a lost one is rewritten)."""


class RedisRecordStore(RecordStore):
    """Writes each announced record with the cache's own Redis client, in one pipeline with its
    announcement on the job events, where aiocache's `set` and then a PUBLISH are two round
    trips. The key and the JSON are the ones aiocache's `set` writes, and reads go through the
    cache as before. Redis runs a pipeline's commands in order, so the record is stored before
    it is announced."""

    _cache: RedisCache
    _events: RedisJobEvents

    def __init__(
        self,
        cache: RedisCache,
        default_ttl: int,
        events: RedisJobEvents,
        replica_acks: ReplicaAcks | None = None,
        *,
        wait_for_replicas: bool = False,
    ) -> None:
        """`wait_for_replicas`: a worker's store writes a record again until the replicas have
        it (a job's outcome must not be lost, nor the job run again for want of a replica);
        the api's fails at once, and the client is answered 503."""
        super().__init__(cache, default_ttl, events)
        self._replica_acks = replica_acks
        self._wait_for_replicas = wait_for_replicas

    async def _store(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool = False
    ) -> None:
        delay = REPLICA_RETRY_FIRST
        while True:
            try:
                await self._store_once(
                    record, text, ttl, announce=announce, replace_only=replace_only
                )
                return
            except ReplicasBehindError as error:
                if not self._wait_for_replicas:
                    raise
                logger.warning("job %s: %s; writing it again in %.1fs", record.id, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REPLICA_RETRY_CAP)

    @calls_redis("write a job record")
    async def _store_once(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool
    ) -> None:
        # The writes a client or the queue relies on: a job accepted, a job's outcome.
        acks = self._replica_acks if record.status in KEPT_THROUGH_FAILOVER else None
        if not announce and acks is None and not replace_only:
            await super()._store(record, text, ttl, announce=False)
            return
        key = self._cache.build_key(job_record_key(record.id), namespace=self._cache.namespace)
        async with self._cache.client.pipeline(transaction=False) as pipeline:
            # XX: only over a record that exists. The announcement goes out either way (a
            # deleted job has no watchers left, and no process follows it any more).
            pipeline.set(key, text, ex=ttl, xx=replace_only)
            if announce:
                self._events.publish_in(pipeline, record, text)
            if acks is not None:
                acks.wait_in(pipeline)
            replies = await pipeline.execute()
        if acks is not None:
            acks.check(replies[-1], f"the record of job {record.id}")

    @calls_redis("read a job record")
    async def get(self, job_id: str) -> JobRecord | None:
        return await super().get(job_id)

    @calls_redis("read job records")
    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord]:
        return await super().get_many(job_ids)

    @calls_redis("delete a job record")
    async def delete(self, job_id: str) -> None:
        await super().delete(job_id)

    @calls_redis("answer a ping")
    async def ping(self) -> None:
        await self._cache.raw("ping")
