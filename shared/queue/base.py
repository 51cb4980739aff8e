"""The queue port: where the api puts a job it accepted, and the one message that carries the
job to whoever runs it. Redis (arq) and memory (the local mode) are its two backends, in
shared/queue/redis.py and shared/queue/memory.py."""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from shared.catalog import DEFAULT_QUEUE
from shared.records.model import JobRecord

PAUSED_MESSAGE = b"!paused"
RESUMED_MESSAGE = b"!resumed"
"""What a queue's wake-up channel carries when it is paused or resumed (a job id otherwise)."""


class QueuedJob(BaseModel):
    """A queued job as the worker receives it: what the Redis queue serialises (as JSON, the
    single argument of arq's job) and what the memory queue carries."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    """The job type's name."""
    parameters: dict[str, Any]
    """The parameters as JSON data, validated against the job type when it was submitted."""
    created_at: datetime
    owner: str | None = None
    """The submitting API key's digest (never the key), or None when the api is open or the
    job is a scheduled run."""
    queue: str = DEFAULT_QUEUE
    """The queue it waits on: its job type's."""
    scheduled_for: datetime | None = None
    """The due time, for a run of a scheduled job type (worker/scheduler.py)."""
    callback_url: str | None = None
    """Where the record is POSTed when the job has finished (its record's `callback`)."""
    trace_context: dict[str, str] | None = None
    """The submitting request's span as W3C trace headers (traceparent, tracestate), whose
    child each attempt's span is (shared/tracing.py); None when tracing is off."""
    expires_at: datetime | None = None
    """Its deadline (`?expires_in=`): not started by then, it ends `expired` (worker/runner.py)."""
    previous_errors: list[str] = []
    """The errors of its earlier runs, when it was run again (POST /jobs/{id}/retry)."""

    @classmethod
    def of(cls, record: JobRecord, parameters: dict[str, Any], queue: str) -> "QueuedJob":
        return cls(
            id=record.id,
            name=record.name,
            parameters=parameters,
            created_at=record.created_at,
            owner=record.owner,
            queue=queue,
            scheduled_for=record.scheduled_for,
            callback_url=record.callback.url if record.callback is not None else None,
            trace_context=record.trace_context,
            expires_at=record.expires_at,
            previous_errors=record.previous_errors,
        )

    def __repr__(self) -> str:
        # arq formats each job's arguments for its log, whether it logs them or not: this is
        # cheap, and no payload ever reaches the logs.
        return (
            f"QueuedJob({self.name} {self.id} on {self.queue}, {len(self.parameters)} parameters)"
        )


class JobQueue(Protocol):
    async def enqueue(self, job: QueuedJob) -> None:
        """Hand the job to whoever runs it; return once it is safely queued."""
        ...

    async def enqueue_many(self, jobs: Sequence[QueuedJob]) -> None:
        """Hand the jobs to whoever runs them, all or none (a failure takes back those queued
        already), in a fixed number of round trips however many they are."""
        ...

    async def cancel(self, job_id: str, queue: str) -> None:
        """Take the job off its queue, or stop it where it runs."""
        ...

    async def pause(self, queue: str) -> None:
        """Start no new job of the queue (it still takes jobs, and its running ones end), in
        every worker, until `resume`; it stays paused across restarts."""
        ...

    async def resume(self, queue: str) -> None:
        """Start the queue's jobs again."""
        ...

    async def paused(self) -> set[str]:
        """The names of the paused queues."""
        ...

    async def listen_for_cancels(self, stop: Callable[[str], object]) -> None:
        """For whoever runs jobs: call `stop(job_id)` when a client cancels a job that is no
        longer waiting on the queue (it may be running here)."""
        ...

    async def close(self) -> None: ...
