"""The record store: every read and write of job records goes through it, into the cache
(aiocache) as JSON under `<namespace>:job:<id>` with a TTL.

This class is the store of both backends: over aiocache's memory cache it is the local mode's,
and shared/records/redis.py narrows it for Redis (one round trip per announced write, and
Redis failures raised as BackendUnavailableError).
"""

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from aiocache.base import BaseCache

from shared.keys import job_record_key
from shared.records.model import UNFINISHED_RECORD_TTL, JobRecord


def as_is(value: Any) -> Any:
    """A serializer step that leaves the value alone: records arrive as JSON text already."""
    return value


class RecordPublisher(Protocol):
    async def publish(self, record: JobRecord, text: str) -> None: ...


class RecordListing(Protocol):
    """The owners' lists of their jobs (shared/listing/), which the store writes as it adds
    records."""

    async def add(self, records: Sequence[JobRecord]) -> None: ...


class RecordStore:
    """Reads and writes job records in the cache, and announces each write to the job events
    so that waiting clients see it at once."""

    def __init__(
        self,
        cache: BaseCache,
        default_ttl: int,
        events: RecordPublisher,
        listing: RecordListing | None = None,
    ) -> None:
        """`listing`: where `add` lists new jobs for their owners (None: nowhere)."""
        self._cache = cache
        self._default_ttl = default_ttl
        self._events = events
        self._listing = listing
        self._writing = asyncio.Lock()

    def ttl_for(self, result_ttl: int | None) -> int:
        return self._default_ttl if result_ttl is None else result_ttl

    async def put(
        self,
        record: JobRecord,
        result_ttl: int,
        *,
        announce: bool = True,
        replace_only: bool = False,
    ) -> None:
        """Write the record; `announce=False` for a job nobody can be watching yet.
        `replace_only=True` writes it only over a record that exists: every write after the
        one that submits the job, so that a deleted job's record never comes back.

        A finished job's record is kept `result_ttl` seconds; an unfinished one as long as the
        job may still run, so that a long queue or a long job never loses its record; one whose
        callback is still pending as long too, since the callback's body is the record
        (WEBHOOK_RETRY_FOR is at most as long).
        """
        settled = record.status.finished and not record.callback_pending
        ttl = result_ttl if settled else max(result_ttl, UNFINISHED_RECORD_TTL)
        # Serialized once, by pydantic, for both the store and the announcement; what is
        # stored is the same JSON the cache's JsonSerializer reads back.
        text = record.model_dump_json()
        await self._store(record, text, ttl, announce=announce, replace_only=replace_only)

    async def _store(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool = False
    ) -> None:
        key = job_record_key(record.id)
        if replace_only:
            # The lock keeps a delete from landing between the look and the write.
            async with self._writing:
                if not await self._cache.exists(key):
                    return
                await self._cache.set(key, text, ttl=ttl, dumps_fn=as_is)
        else:
            await self._cache.set(key, text, ttl=ttl, dumps_fn=as_is)
        # Announced only once stored: a client that starts watching after the announcement
        # reads the record from the store and must find this version there.
        if announce:
            await self._events.publish(record, text)

    async def add(self, records: Sequence[JobRecord], result_ttl: int) -> None:
        """Write the records of jobs just submitted (queued: nobody can be watching them yet),
        then list them for their owners; on Redis, all in one round trip."""
        ttl = max(result_ttl, UNFINISHED_RECORD_TTL)
        await self._cache.multi_set(
            [(job_record_key(record.id), record.model_dump_json()) for record in records],
            ttl=ttl,
            dumps_fn=as_is,
        )
        if self._listing is not None:
            await self._listing.add(records)

    async def get(self, job_id: str) -> JobRecord | None:
        stored = await self._cache.get(job_record_key(job_id), loads_fn=as_is)
        return None if stored is None else JobRecord.model_validate_json(stored)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The records of these jobs that still exist, in their order, in one read."""
        if not job_ids:
            return []
        stored = await self._cache.multi_get(
            [job_record_key(job_id) for job_id in job_ids], loads_fn=as_is
        )
        return [JobRecord.model_validate_json(text) for text in stored if text is not None]

    async def delete(self, job_id: str) -> None:
        async with self._writing:
            await self._cache.delete(job_record_key(job_id))

    async def delete_many(self, job_ids: Sequence[str]) -> None:
        """Delete these records (of jobs that were not queued after all)."""
        for job_id in job_ids:
            await self.delete(job_id)

    async def ping(self) -> None:
        """Raise if the store does not answer; memory always does."""
