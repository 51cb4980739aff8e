"""What the api answers with, as typed values: a job's record (`Job`) and a page of them
(`JobPage`). Fields the client does not know yet stay reachable through `.raw`."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from jobcache_client.errors import UnexpectedResponse


class JobStatus(StrEnum):
    """Where a job is: `queued` and `running` change on; the others are its end (`expired`:
    not started before its deadline, `expires_in`)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINISHED = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
KEPT_FAILURES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})
"""The ends after which the api keeps a job (FAILED_JOB_TTL) and can run it again (`retry`)."""


@dataclass(frozen=True)
class Progress:
    """How far a running job has come, as the job itself reports it."""

    current: float
    total: float
    message: str | None = None


@dataclass(frozen=True)
class Callback:
    """Where the api posts the finished record (the `callback_url` the job was submitted with)
    and how delivering it went: `state` is `pending`, `delivered` or `failed`; `last_status`
    and `last_error` tell of the latest attempt. Any newer field is in `raw`."""

    url: str
    state: str
    attempts: int
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Job:
    """A job's record as the api showed it when it answered. `raw` is that record's JSON as
    received, with any field this client does not know of."""

    id: str
    name: str
    status: JobStatus
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    progress: Progress | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_for: datetime | None
    callback: Callback | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    expires_at: datetime | None = None
    """The deadline it was submitted with (`expires_in`), if any."""
    previous_errors: tuple[str, ...] = ()
    """The errors of its earlier runs, oldest first, once it was run again (`retry`)."""

    @property
    def finished(self) -> bool:
        """Succeeded, failed, cancelled or expired: the record changes no more (until it is
        run again with `retry`)."""
        return self.status in FINISHED

    @classmethod
    def from_json(cls, record: Any) -> "Job":
        """The job of a record the api sent; UnexpectedResponse if it is not one."""
        try:
            progress = record.get("progress")
            callback = record.get("callback")
            return cls(
                id=str(record["id"]),
                name=str(record["name"]),
                status=JobStatus(record["status"]),
                result=record.get("result"),
                error=record.get("error"),
                attempts=int(record.get("attempts", 0)),
                max_attempts=int(record.get("max_attempts", 1)),
                progress=None if progress is None else progress_from_json(progress),
                created_at=datetime.fromisoformat(record["created_at"]),
                started_at=optional_time(record.get("started_at")),
                finished_at=optional_time(record.get("finished_at")),
                scheduled_for=optional_time(record.get("scheduled_for")),
                callback=None if callback is None else callback_from_json(callback),
                raw=record,
                expires_at=optional_time(record.get("expires_at")),
                previous_errors=tuple(str(error) for error in record.get("previous_errors", ())),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise UnexpectedResponse(f"not a job record ({error!r}): {record!r:.300}") from None


def optional_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def progress_from_json(progress: Mapping[str, Any]) -> Progress:
    return Progress(float(progress["current"]), float(progress["total"]), progress.get("message"))


def callback_from_json(callback: Mapping[str, Any]) -> Callback:
    last_status = callback.get("last_status")
    return Callback(
        url=str(callback["url"]),
        state=str(callback.get("state", "")),
        attempts=int(callback.get("attempts", 0)),
        last_attempt_at=optional_time(callback.get("last_attempt_at")),
        last_status=None if last_status is None else int(last_status),
        last_error=callback.get("last_error"),
        delivered_at=optional_time(callback.get("delivered_at")),
        raw=callback,
    )


@dataclass(frozen=True)
class JobPage:
    """One page of `GET /jobs`, newest first. `next` is the cursor of the following page, None
    at the end; a page may hold fewer jobs than asked for and still not be the last."""

    jobs: list[Job]
    next: str | None

    @classmethod
    def from_json(cls, page: Any) -> "JobPage":
        try:
            jobs, cursor = page["jobs"], page.get("next")
        except (AttributeError, KeyError, TypeError):
            raise UnexpectedResponse(f"not a page of jobs: {page!r:.300}") from None
        if not isinstance(jobs, list) or not isinstance(cursor, str | None):
            raise UnexpectedResponse(f"not a page of jobs: {page!r:.300}")
        return cls([Job.from_json(record) for record in jobs], cursor)


@dataclass(frozen=True)
class RetriedJobs:
    """What `retry_failed` (POST /jobs/retry) queued again: how many kept failures of `queue`
    (of job type `name`, if given, that ended since `since`, if given)."""

    retried: int
    queue: str
    name: str | None
    since: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> "RetriedJobs":
        try:
            return cls(
                retried=int(body["retried"]),
                queue=str(body["queue"]),
                name=body.get("name"),
                since=optional_time(body.get("since")),
                raw=body,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise UnexpectedResponse(f"not a retry's answer ({error!r}): {body!r:.300}") from None
