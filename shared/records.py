"""The job record a client polls, and the store that keeps it in the cache with a TTL."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from aiocache.base import BaseCache
from pydantic import BaseModel, Field

from shared.keys import job_record_key


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


CANCELLED_MESSAGE = "cancelled by the client"


class Progress(BaseModel):
    """How far a running job has come, as the job itself reports it."""

    current: float
    total: float
    message: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobView(BaseModel):
    """Everything a client may learn about one job: the record as the api shows it."""

    id: str
    name: str
    status: JobStatus = JobStatus.QUEUED
    result: Any = None
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    progress: Progress | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobRecord(JobView):
    """The stored record: what the client sees, and whose job it is."""

    owner: str | None = None
    """A digest of the API key that submitted the job (never the key); None when open."""

    def public_json(self) -> str:
        return self.model_dump_json(exclude={"owner"})


# arq drops a job that has not started within a day of being queued (its expires_extra_ms);
# until then the job may still run, so its record must stay.
UNFINISHED_RECORD_TTL = 24 * 60 * 60


def as_is(value: Any) -> Any:
    """A serializer step that leaves the value alone: records arrive as JSON text already."""
    return value


class RecordPublisher(Protocol):
    async def publish(self, record: "JobRecord", text: str) -> None: ...


class QuotaRelease(Protocol):
    async def release(self, owner: str, job_id: str) -> None: ...


class RecordStore:
    """Reads and writes job records in the cache (JSON under `<namespace>:job:<id>`), and
    announces each write to the job events so that waiting clients see it at once."""

    def __init__(
        self,
        cache: BaseCache,
        default_ttl: int,
        events: RecordPublisher,
        quotas: QuotaRelease | None = None,
    ) -> None:
        self._cache = cache
        self._default_ttl = default_ttl
        self._events = events
        self._quotas = quotas

    def ttl_for(self, result_ttl: int | None) -> int:
        return self._default_ttl if result_ttl is None else result_ttl

    async def put(self, record: JobRecord, result_ttl: int, *, announce: bool = True) -> None:
        """Write the record; `announce=False` for a job nobody can be watching yet.

        A finished job's record is kept `result_ttl` seconds; an unfinished one as long as the
        job may still run, so that a long queue or a long job never loses its record.
        """
        ttl = result_ttl if record.status.finished else max(result_ttl, UNFINISHED_RECORD_TTL)
        # Serialized once, by pydantic, for both the store and the announcement; what is
        # stored is the same JSON the cache's JsonSerializer reads back.
        await self._store(record, record.model_dump_json(), ttl, announce=announce)
        if record.status.finished and record.owner is not None and self._quotas is not None:
            await self._quotas.release(record.owner, record.id)

    async def _store(self, record: JobRecord, text: str, ttl: int, *, announce: bool) -> None:
        await self._cache.set(job_record_key(record.id), text, ttl=ttl, dumps_fn=as_is)
        # Announced only once stored: a client that starts watching after the announcement
        # reads the record from the store and must find this version there.
        if announce:
            await self._events.publish(record, text)

    async def get(self, job_id: str) -> JobRecord | None:
        stored = await self._cache.get(job_record_key(job_id), loads_fn=as_is)
        return None if stored is None else JobRecord.model_validate_json(stored)

    async def delete(self, job_id: str) -> None:
        await self._cache.delete(job_record_key(job_id))
