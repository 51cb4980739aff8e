"""Submitting a job: the one path by which a job comes to exist, for a client's POST (the api)
and for a scheduled run (worker/scheduler.py)."""

import logging
from datetime import datetime
from typing import Any

from shared.backend import Backend
from shared.catalog import JobType
from shared.keys import new_job_id
from shared.logs import job_event
from shared.queue import QueuedJob
from shared.records import JobRecord

logger = logging.getLogger(__name__)


async def submit_job(
    backend: Backend,
    job_type: JobType,
    parameters: dict[str, Any],
    *,
    owner: str | None = None,
    job_id: str | None = None,
    scheduled_for: datetime | None = None,
) -> JobRecord:
    """Record the job as queued, then enqueue it on its job type's queue; a failed enqueue
    leaves no record behind. `parameters` are JSON data, already valid for the job type;
    `scheduled_for` is the due time of a scheduled run."""
    records = backend.records
    record = JobRecord(
        id=job_id or new_job_id(),
        name=job_type.name,
        max_attempts=job_type.max_attempts,
        owner=owner,
        scheduled_for=scheduled_for,
    )
    await records.put(record, records.ttl_for(job_type.result_ttl), announce=False)
    backend.events.remember(record)
    try:
        await backend.queue.enqueue(QueuedJob.of(record, parameters, job_type.queue))
    except BaseException:
        await records.delete(record.id)
        raise
    logger.info(
        "job %s (%s) submitted", record.id, job_type.name,
        extra=job_event("job.submitted", record.id, job_type.name),
    )  # fmt: skip
    return record
