"""The job record a client polls: its status, progress, result or error, times, and the state
of its callback."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Not started before its deadline (`?expires_in=`), and so never run."""

    @property
    def finished(self) -> bool:
        return self is not JobStatus.QUEUED and self is not JobStatus.RUNNING

    @property
    def kept_failure(self) -> bool:
        """An end that keeps the job, its record and its parameters, for FAILED_JOB_TTL so
        that it can be run again (shared/failures/)."""
        return self in KEPT_FAILURES


KEPT_FAILURES = frozenset((JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED))

CANCELLED_MESSAGE = "cancelled by the client"
EXPIRED_MESSAGE = "not started before its deadline (expires_in)"
PREVIOUS_ERRORS_KEPT = 5
"""The earlier runs' errors a record keeps after it was run again (`previous_errors`)."""

# arq drops a job that has not started within a day of being queued (its expires_extra_ms);
# until then the job may still run, so its record must stay.
UNFINISHED_RECORD_TTL = 24 * 60 * 60


SENT_IN_FULL = ConfigDict(json_schema_serialization_defaults_required=True)
"""A record is always sent with every field (null where unset): its OpenAPI says so, so that
a generated client's fields are not all optional."""


class Progress(BaseModel):
    """How far a running job has come, as the job itself reports it."""

    model_config = SENT_IN_FULL

    current: float
    total: float
    message: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class CallbackState(StrEnum):
    PENDING = "pending"
    """Not delivered yet: its first attempt is to come, or a retry is."""
    DELIVERED = "delivered"
    """The receiver answered an attempt with a 2xx."""
    FAILED = "failed"
    """Given up: no attempt got a 2xx within WEBHOOK_RETRY_FOR of the first, or the receiver's
    address was refused (`last_error` says why)."""


class Callback(BaseModel):
    """Where jobcache POSTs the record once the job has finished, and how that went so far."""

    model_config = ConfigDict(use_attribute_docstrings=True, **SENT_IN_FULL)

    url: str
    """The `callback_url` the job was submitted with."""
    state: CallbackState = CallbackState.PENDING
    """`pending` (an attempt is still to come), `delivered` or `failed` (given up)."""
    attempts: int = 0
    """Deliveries attempted so far."""
    last_attempt_at: datetime | None = None
    """When the latest attempt was made."""
    last_status: int | None = None
    """The HTTP status the receiver answered the latest attempt with; null when it did not
    answer (a refused address, a connection error, a timeout)."""
    last_error: str | None = None
    """Why the latest attempt failed; null after a delivered one."""
    delivered_at: datetime | None = None
    """When the receiver accepted it (state `delivered`)."""


class JobView(BaseModel):
    """Everything a client may learn about one job: the record as the api shows it."""

    model_config = ConfigDict(use_attribute_docstrings=True, **SENT_IN_FULL)

    id: str
    name: str
    status: JobStatus = JobStatus.QUEUED
    result: Any = None
    """The job's result once it has succeeded, else null: an object of its job type's result
    model, which the job type's submit routes document (`EchoJob` for `echo`)."""
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    progress: Progress | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    scheduled_for: datetime | None = None
    """The due time this run was for, when a schedule submitted it (`@job(schedule=...)`)."""
    expires_at: datetime | None = None
    """The deadline it was submitted with (`?expires_in=`): not started by then, it ends
    `expired` instead of running late; null without one."""
    previous_errors: list[str] = Field(default_factory=list)
    """The errors of its earlier runs, oldest first (at most 5), when it was run again
    (`POST /jobs/{id}/retry`); empty otherwise."""
    callback: Callback | None = None
    """The callback the job was submitted with (`callback_url`), and how its delivery goes;
    null without one."""

    @property
    def callback_pending(self) -> bool:
        """Whether the job has a callback that is still to be delivered."""
        return self.callback is not None and self.callback.state is CallbackState.PENDING


class JobRecord(JobView):
    """The stored record: what the client sees, and whose job it is."""

    owner: str | None = None
    """A digest of the API key that submitted the job (never the key); None when open."""
    trace_context: dict[str, str] | None = None
    """W3C trace headers of the span that last acted on the job (its submission, the attempt
    that ended it, a cancel), whose child its callback's span is; None when tracing is off."""

    def public_json(self) -> str:
        # What the stored record holds that no client is shown.
        return self.model_dump_json(exclude={"owner", "trace_context"})
