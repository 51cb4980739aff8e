"""The record store on Redis: a record and its announcement reach Redis in one round trip."""

from aiocache import RedisCache

from shared.keys import job_record_key
from shared.records import JobRecord, QuotaRelease, RecordStore
from shared.redis_events import RedisJobEvents


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
        quotas: QuotaRelease | None = None,
    ) -> None:
        super().__init__(cache, default_ttl, events, quotas)

    async def _store(self, record: JobRecord, text: str, ttl: int, *, announce: bool) -> None:
        if not announce:
            await super()._store(record, text, ttl, announce=False)
            return
        key = self._cache.build_key(job_record_key(record.id), namespace=self._cache.namespace)
        async with self._cache.client.pipeline(transaction=False) as pipeline:
            pipeline.set(key, text, ex=ttl)
            self._events.publish_in(pipeline, record, text)
            await pipeline.execute()
