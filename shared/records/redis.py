"""The record store on Redis: a record and its announcement reach Redis in one round trip, and
a Redis failure is raised as BackendUnavailableError."""

from collections.abc import Sequence

from aiocache import RedisCache

from shared.connections import calls_redis
from shared.events.redis import RedisJobEvents
from shared.keys import job_record_key
from shared.records.model import JobRecord
from shared.records.store import RecordStore


class RedisRecordStore(RecordStore):
    """Writes each announced record with the cache's own Redis client, in one pipeline with its
    announcement on the job events, where aiocache's `set` and then a PUBLISH are two round
    trips. The key and the JSON are the ones aiocache's `set` writes, and reads go through the
    cache as before. Redis runs a pipeline's commands in order, so the record is stored before
    it is announced."""

    _cache: RedisCache
    _events: RedisJobEvents

    def __init__(self, cache: RedisCache, default_ttl: int, events: RedisJobEvents) -> None:
        super().__init__(cache, default_ttl, events)

    @calls_redis("write a job record")
    async def _store(self, record: JobRecord, text: str, ttl: int, *, announce: bool) -> None:
        if not announce:
            await super()._store(record, text, ttl, announce=False)
            return
        key = self._cache.build_key(job_record_key(record.id), namespace=self._cache.namespace)
        async with self._cache.client.pipeline(transaction=False) as pipeline:
            pipeline.set(key, text, ex=ttl)
            self._events.publish_in(pipeline, record, text)
            await pipeline.execute()

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
