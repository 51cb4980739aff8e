"""Running kept failures again (POST /jobs/{id}/retry, POST /jobs/retry): a job that ended
failed, cancelled or expired is taken out of the kept failures (shared/failures/) and queued
again under the same id, its attempts starting over and its earlier errors kept in its record.

Nothing accepted is lost on the way: the job is taken out first (one caller wins, so that two
retries at once queue it once), then recorded as queued and enqueued; a failure between puts
it back as it was kept, with its record.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.backend import Backend
from shared.catalog import JobType
from shared.errors import JobNotRetryableError
from shared.logs import job_event
from shared.queue import QueuedJob
from shared.records import PREVIOUS_ERRORS_KEPT, Callback, JobRecord, utcnow

logger = logging.getLogger(__name__)


async def run_again(backend: Backend, job_type: JobType | None, record: JobRecord) -> JobRecord:
    """Queue the job of `record` again: its record, queued anew. `job_type`: the one its name
    declares now (None: no longer declared). JobNotRetryableError when it is not a kept
    failure."""
    if not record.status.kept_failure:
        raise JobNotRetryableError(
            record.id,
            f"it is {record.status.value}; only a job that ended failed, cancelled or expired "
            "can be run again",
        )
    if job_type is None:
        raise JobNotRetryableError(record.id, f"its job type {record.name!r} is not declared")
    job = await backend.failures.take(record.id, job_type.queue, job_type.name)
    if job is None:
        raise JobNotRetryableError(
            record.id,
            "what it ran with is not kept: it was cancelled before it started, it was run "
            "again already, or it ended longer ago than FAILED_JOB_TTL",
        )
    return await requeue(backend, job_type, job, record)


@dataclass(frozen=True)
class RerunFilter:
    """Which kept failures a bulk retry runs again: those of one queue, of one job type of it
    (`name`), that ended at or after `since`."""

    queue: str
    name: str | None = None
    since: datetime | None = None


async def run_all_again(
    backend: Backend, job_types: Mapping[str, JobType], only: RerunFilter
) -> int:
    """Queue again every kept failure `only` matches, newest first; how many were queued.
    One whose job type is no longer declared stays kept."""
    failures = backend.failures
    seen: set[str] = set()
    queued = 0
    while True:
        ids = [
            job_id
            for job_id in await failures.newest(only.queue, name=only.name, since=only.since)
            if job_id not in seen
        ]
        if not ids:
            return queued
        seen.update(ids)
        kept = {job.id: job for job in await failures.get_many(only.queue, ids)}
        records = {record.id: record for record in await backend.records.get_many(ids)}
        for job_id in ids:
            job = kept.get(job_id)
            job_type = job_types.get(job.name) if job is not None else None
            if job_type is None:
                continue
            taken = await failures.take(job_id, only.queue, job_type.name)
            if taken is not None:
                await requeue(backend, job_type, taken, records.get(job_id))
                queued += 1


async def requeue(
    backend: Backend, job_type: JobType, job: QueuedJob, record: JobRecord | None
) -> JobRecord:
    """Record the taken job as queued and enqueue it; a failure keeps it again as it was."""
    earlier = list(record.previous_errors) if record is not None else list(job.previous_errors)
    if record is not None:
        earlier.append(record.error or record.status.value)
    previous = earlier[-PREVIOUS_ERRORS_KEPT:]
    again = JobRecord(
        id=job.id,
        name=job.name,
        max_attempts=job_type.max_attempts,
        owner=job.owner,
        created_at=job.created_at,
        scheduled_for=job.scheduled_for,
        callback=Callback(url=job.callback_url) if job.callback_url is not None else None,
        trace_context=job.trace_context,
        previous_errors=previous,
    )
    # Its deadline was for its first run: run again by hand, it runs whenever its turn comes.
    queued = job.model_copy(update={"expires_at": None, "previous_errors": previous})
    store = backend.records
    try:
        await store.put(again, store.ttl_for(job_type.result_ttl))
        await backend.queue.enqueue(queued)
    except BaseException:
        await put_back(backend, job_type, job, record)
        raise
    backend.events.remember(again)
    logger.info(
        "job %s (%s) queued again", job.id, job.name,
        extra=job_event("job.rerun", job.id, job.name),
    )  # fmt: skip
    return again


async def put_back(
    backend: Backend, job_type: JobType, job: QueuedJob, record: JobRecord | None
) -> None:
    """After a failed requeue: the job kept again, with its record as it was."""
    failures = backend.failures
    ended_at = record.finished_at if record is not None and record.finished_at else utcnow()
    await failures.keep(job, ended_at)
    if record is not None:
        store = backend.records
        await store.put(record, max(store.ttl_for(job_type.result_ttl), failures.ttl))
