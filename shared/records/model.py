"""The job record a client polls: its status, progress, result or error, and times."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


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

# arq drops a job that has not started within a day of being queued (its expires_extra_ms);
# until then the job may still run, so its record must stay.
UNFINISHED_RECORD_TTL = 24 * 60 * 60


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
    scheduled_for: datetime | None = None
    """The due time this run was for, when a schedule submitted it (`@job(schedule=...)`)."""


class JobRecord(JobView):
    """The stored record: what the client sees, and whose job it is."""

    owner: str | None = None
    """A digest of the API key that submitted the job (never the key); None when open."""

    def public_json(self) -> str:
        return self.model_dump_json(exclude={"owner"})
