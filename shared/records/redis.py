"""The record store on Redis: a record and its announcement reach Redis in one round trip (and
so do a submission's records and their owner's list entries, however many), and a Redis
failure is raised as BackendUnavailableError."""

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiocache import RedisCache
from redis.asyncio.client import Pipeline

from shared.connections import calls_redis
from shared.events.redis import RedisJobEvents
from shared.grouped_pipeline import GroupedPipeline
from shared.keys import job_record_key
from shared.listing.redis import RedisJobListing
from shared.records.model import UNFINISHED_RECORD_TTL, JobRecord, JobStatus
from shared.records.store import RecordStore
from shared.replication import ReplicaAcks, until_replicated

logger = logging.getLogger(__name__)

KEPT_THROUGH_FAILOVER = frozenset(
    (
        JobStatus.QUEUED,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.EXPIRED,
    )
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
    _listing: RedisJobListing | None

    def __init__(
        self,
        cache: RedisCache,
        default_ttl: int,
        events: RedisJobEvents,
        replica_acks: ReplicaAcks | None = None,
        *,
        wait_for_replicas: bool = False,
        listing: RedisJobListing | None = None,
    ) -> None:
        """`wait_for_replicas`: a worker's store writes a record again until the replicas have
        it (a job's outcome must not be lost, nor the job run again for want of a replica);
        the api's fails at once, and the client is answered 503. `listing`: the owners' job
        lists, on the same Redis, which `add` writes in the records' pipeline."""
        super().__init__(cache, default_ttl, events, listing)
        self._replica_acks = replica_acks
        self._wait_for_replicas = wait_for_replicas
        # Writes made in the same loop turn (a worker ending many jobs at once) share a round
        # trip, and their announcements one message.
        self._grouped: GroupedPipeline[str] = GroupedPipeline(cache.client, events.publish_all_in)

    async def _store(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool = False
    ) -> None:
        await self._until_replicated(
            lambda: self._store_once(
                record, text, ttl, announce=announce, replace_only=replace_only
            ),
            f"job {record.id}",
        )

    async def _until_replicated(self, write: Callable[[], Awaitable[None]], what: str) -> None:
        if self._wait_for_replicas:
            await until_replicated(write, what)
        else:
            await write()

    async def add(self, records: Sequence[JobRecord], result_ttl: int) -> None:
        """The records, their owners' list entries and, with REDIS_MIN_REPLICAS_ACK, the WAIT
        for the replicas: one pipeline however many records."""
        ttl = max(result_ttl, UNFINISHED_RECORD_TTL)
        texts = [record.model_dump_json() for record in records]
        what = f"job {records[0].id}" if len(records) == 1 else f"{len(records)} jobs"
        await self._until_replicated(lambda: self._add_once(records, texts, ttl, what), what)

    @calls_redis("write job records")
    async def _add_once(
        self, records: Sequence[JobRecord], texts: list[str], ttl: int, what: str
    ) -> None:
        cache = self._cache
        acks = self._replica_acks
        async with cache.client.pipeline(transaction=False) as pipeline:
            for record, text in zip(records, texts, strict=True):
                key = cache.build_key(job_record_key(record.id), namespace=cache.namespace)
                pipeline.set(key, text, ex=ttl)
            if self._listing is not None:
                self._listing.add_in(pipeline, records)
            if acks is not None:
                acks.wait_in(pipeline)
            replies = await pipeline.execute()
        if acks is not None:
            acks.check(replies[-1], f"the records of {what}")

    @calls_redis("write a job record")
    async def _store_once(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool
    ) -> None:
        # The writes a client or the queue relies on: a job accepted, a job's outcome.
        acks = self._replica_acks if record.status in KEPT_THROUGH_FAILOVER else None
        key = self._cache.build_key(job_record_key(record.id), namespace=self._cache.namespace)
        # XX: only over a record that exists. The announcement goes out either way (a deleted
        # job has no watchers left, and no process follows it any more).
        if acks is None:

            def add(pipeline: Pipeline) -> int:
                pipeline.set(key, text, ex=ttl, xx=replace_only)
                return 1

            message = self._events.message(record, text) if announce else None
            await self._grouped.send(add, message)
            return
        async with self._cache.client.pipeline(transaction=False) as pipeline:
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

    @calls_redis("delete job records")
    async def delete_many(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            cache = self._cache
            keys = [job_record_key(job_id) for job_id in job_ids]
            await cache.client.delete(*(cache.build_key(key, cache.namespace) for key in keys))

    @calls_redis("answer a ping")
    async def ping(self) -> None:
        await self._cache.raw("ping")
